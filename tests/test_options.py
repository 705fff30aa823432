"""Every option of every config group trains for a few steps."""

import pytest
import torch

from conftest import TINY
from helpers import options

GPUS = {"gpu": 1, "ddp": 2}  # trainer options that need GPUs
DATA_ELSEWHERE = ("mnist", "fashion_mnist", "cifar10", "cifar100", "custom")

CASES = (
    # real files (test_data.py, test_fashion_mnist_...), a user's function (test_custom_data.py)
    [("data", o) for o in options("data") if o not in DATA_ELSEWHERE]
    + [("model", o) for o in options("model") if o != "custom"]  # custom: test_custom_model
    + [("norm", o) for o in options("norm")]
    + [("activation", o) for o in options("activation")]
    + [("init", o) for o in options("init")]
    + [("optimizer", o) for o in options("optimizer")]
    + [("scheduler", o) for o in options("scheduler")]
    + [("regularizer", o) for o in options("regularizer")]
    + [("logger", o) for o in options("logger")]
    + [("trainer", o) for o in options("trainer") if torch.cuda.device_count() >= GPUS.get(o, 0)]
)

# image-only options need image data: the 8x8 digits are the cheapest real images
IMAGE_ONLY = {
    ("model", "cnn"),
    ("model", "vgg"),
    ("model", "resnet_small"),
    ("regularizer", "augment"),
}
# VGG-16's 64..512 channels cost seconds a step on a CPU; the same layers, narrower
NARROWER = {("model", "vgg"): ["model.width=8"]}


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_trains(group, option, run_training):
    data = ["data=digits"] if (group, option) in IMAGE_ONLY else []
    override = f"regularizer=[{option}]" if group == "regularizer" else f"{group}={option}"
    narrower = NARROWER.get((group, option), [])
    # trainer=cpu|auto|... replaces trainer=debug: its cadence is kept so the run validates
    result, _ = run_training(
        *TINY, *data, override, *narrower, "trainer.max_steps=12", "trainer.val_check_interval=10"
    )
    assert result["status"] == "completed"
    assert result["steps"] == 12 or (group, option) == ("regularizer", "early_stopping")
    assert 0.0 <= result["test/acc"] <= 1.0


def test_fashion_mnist_trains_on_the_real_files(run_training):
    result, _ = run_training("trainer=debug", "data.train_size=600", "data.test_size=500")
    assert result["status"] == "completed" and result["test/acc"] > 0.2


def test_several_regularizers_at_once(run_training):
    result, run_dir = run_training(*TINY, "regularizer=[l2,dropout,weight_decay,grad_clip]")
    text = (run_dir / "config.yaml").read_text()
    assert result["status"] == "completed"
    for key in ("l2:", "dropout:", "weight_decay:", "grad_clip:"):
        assert key in text
