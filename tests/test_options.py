"""Every option of every config group trains for a few steps and tests."""

from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_train
from helpers import options
from normlab.pipeline import train_members
from normlab.stack.plan import solo_reason, stack_key

GPUS = {"gpu": 1, "ddp": 2}  # trainer options that need GPUs
DATA_ELSEWHERE = ("mnist", "fashion_mnist", "cifar10", "cifar100", "custom")
# options whose runs other tests make anyway, asserting what test_option_trains does: W&B's
# offline run (test_wandb.py), two CPU ranks (test_ddp.py's parity runs)
ELSEWHERE = {("logger", "wandb"), ("trainer", "ddp_cpu")}

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
    + [("logger", o) for o in options("logger") if ("logger", o) not in ELSEWHERE]
    + [
        ("trainer", o)
        for o in options("trainer")
        if torch.cuda.device_count() >= GPUS.get(o, 0) and ("trainer", o) not in ELSEWHERE
    ]
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


def overrides(group: str, option: str) -> list[str]:
    """A case's command line: TINY with the option, 12 steps, validated at step 10 and 12."""
    data = ["data=digits"] if (group, option) in IMAGE_ONLY else []
    override = f"regularizer=[{option}]" if group == "regularizer" else f"{group}={option}"
    narrower = NARROWER.get((group, option), [])
    # trainer=cpu|auto|... replaces trainer=debug: its cadence is kept so the run validates
    return [
        *TINY,
        *data,
        override,
        *narrower,
        "trainer.max_steps=12",
        "trainer.val_check_interval=10",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> dict[tuple[str, str], dict | Exception]:
    """Every case trained for 12 steps and tested: its result.json, or what its run raised.

    Cases that the stacked launcher would train together (normlab.stack.plan: the same stack
    key, no reason to train alone) train as the members of one stack, as in a stacked sweep:
    each member builds, trains and tests its own option through the very code of its solo run
    (a solo run is a stack of one; tests/test_stacked.py pins member == solo). The rest (other
    data, models, optimizers, loggers, trainers; noisy batch norm) train alone."""
    root = tmp_path_factory.mktemp("options")
    stacks: dict[str, list[tuple[tuple[str, str], object, Path]]] = {}
    for index, case in enumerate(CASES):
        cfg = compose_train(root, data_dir, *overrides(*case))
        run_dir = root / f"{index}-{case[0]}-{case[1]}"
        key = stack_key(cfg) if solo_reason(cfg, run_dir) is None else f"solo {index}"
        stacks.setdefault(key, []).append((case, cfg, run_dir))
    results: dict[tuple[str, str], dict | Exception] = {}
    for name, members in stacks.items():
        cases, cfgs, run_dirs = zip(*members, strict=True)
        try:
            outcomes = train_members(cfgs, run_dirs, root / f"stack {name}")
        except Exception as exc:
            outcomes = [exc] * len(cases)
        results.update(zip(cases, outcomes, strict=True))
    return results


def test_every_case_trained(trained):
    assert len(trained) == len(CASES) >= 50
    assert all(option in options(group) for group, option in ELSEWHERE)  # still options


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_trains(group, option, trained):
    result = trained[group, option]
    if isinstance(result, Exception):
        raise result
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
