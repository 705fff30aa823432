"""Bring your own network: any nn.Module written to the convention (norm_layer, act_layer,
num_classes, input_shape) trains through `model._target_`, with the instruments, gradcheck,
sync batch norm and the stacked launcher (solo); mistakes fail in one line naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import TINY
from helpers import normlab
from normlab.config.errors import ConfigError
from normlab.config.precheck import compose_checked
from normlab.paths import CONFIG_DIR

HERE = Path(__file__).resolve().parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
DIGITS = ["data=digits", "trainer=debug"]
INSTRUMENTS = ["callbacks=instruments", "callbacks.instruments.every_n_steps=5"]


class TinyConvNet(nn.Module):
    """conv3x3 -> 2-D norm -> act -> mean over the map -> linear -> 1-D norm -> act -> head:
    both norm forms from one factory, written like a torchvision network."""

    def __init__(self, *, norm_layer, act_layer, num_classes, input_shape, channels=8, hidden=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False),
            norm_layer(channels),  # image data: the 2-D form
            act_layer(),
        )
        self.hidden = nn.Sequential(
            nn.Linear(channels, hidden), norm_layer(hidden, spatial=False), act_layer()
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.features(x).mean(dim=(2, 3))))


class NoConvention(nn.Module):
    """An nn.Module that does not take normlab's factories."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.linear = nn.Linear(width, width)


class WrongOutputs(TinyConvNet):
    """Takes the convention but gives one logit too many."""

    def __init__(self, *, norm_layer, act_layer, num_classes, input_shape):
        super().__init__(
            norm_layer=norm_layer,
            act_layer=act_layer,
            num_classes=num_classes + 1,
            input_shape=input_shape,
        )


TARGET = f"model._target_={__name__}.TinyConvNet"
CUSTOM = ["model=custom", TARGET]


def columns(run_dir: Path) -> set[str]:
    return set(pd.read_csv(run_dir / "metrics.csv").columns)


@pytest.mark.parametrize("norm", ["batch", "group norm.num_groups=2"])
def test_network_from_a_test_file_trains_and_the_instruments_log_its_layers(norm, run_training):
    norm, *settings = norm.split()
    result, run_dir = run_training(
        *DIGITS,
        *CUSTOM,
        "+model.channels=6",
        f"norm={norm}",
        *settings,
        "activation=relu",
        *INSTRUMENTS,
    )
    assert result["status"] == "completed" and 0.0 <= result["test/acc"] <= 1.0
    logged = columns(run_dir)
    for layer in ("features", "hidden"):  # a Sequential's only activation: named after it
        assert {f"act/{layer}/p50", f"dead/{layer}", f"sym/{layer}"} <= logged
    for layer in ("features", "hidden", "head"):
        assert {f"grad/{layer}/norm", f"grad/{layer}/update_ratio"} <= logged
    batch_norms = {f"bn/{layer}/mean_gap" for layer in ("features", "hidden")}
    assert (batch_norms <= logged) == (norm == "batch")
    assert not {c for c in logged if c.startswith("bn/")} or norm == "batch"
    assert "channels: 6" in (run_dir / "config.yaml").read_text()


def test_custom_network_gets_the_configured_layers(compose_cfg):
    from normlab.models.build import build_model

    cfg = compose_cfg(*DIGITS, *CUSTOM, "norm=layer", "activation=tanh")
    network = build_model(cfg, (1, 8, 8), 10)
    # layer norm on feature maps is group norm with one group; on features, LayerNorm
    assert isinstance(network.features[1], nn.GroupNorm) and network.features[1].num_groups == 1
    assert isinstance(network.hidden[1], nn.LayerNorm)
    assert isinstance(network.features[2], nn.Tanh) and isinstance(network.hidden[2], nn.Tanh)


@pytest.mark.skipif(not FASHION_MNIST.is_file(), reason="Fashion-MNIST files not installed")
def test_resnet_small_trains_on_fashion_mnist(run_training):
    result, run_dir = run_training(
        "model=resnet_small",
        "trainer=debug",
        "data.train_size=600",
        "data.test_size=200",
        "data.eval_batch_size=200",
        *INSTRUMENTS,
        "callbacks.instruments.probe_size=100",
    )
    assert result["status"] == "completed" and result["steps"] == 20
    assert 0.0 <= result["test/acc"] <= 1.0 and result["data"] == "fashion_mnist"
    logged = columns(run_dir)
    # a block with two activations and two norms: each is logged under its own path
    acts = {"act/stage1.block1.act1/p50", "act/stage3.block1.act2/p50", "act/final_act/p50"}
    assert acts <= logged
    assert {"bn/stage2.block1.norm1/mean_gap", "grad/stem/norm", "grad/head/norm"} <= logged


def test_resnet_small_is_a_preactivation_resnet(compose_cfg):
    from normlab.models.build import build_model

    network = build_model(compose_cfg("model=resnet_small", "norm=batch"), (1, 28, 28), 10)
    block = network.stage2.block1
    assert isinstance(block.norm1, nn.BatchNorm2d) and block.norm1.num_features == 16
    assert block.shortcut is not None and block.shortcut.stride == (2, 2)  # 16 -> 32 channels
    assert network.stage1.block1.shortcut is None  # identity shortcut where the shape is kept
    x = torch.randn(3, 1, 28, 28)
    assert network(x).shape == (3, 10)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([*CUSTOM, "+model.bogus=1"], "model.bogus: "),
        ([*CUSTOM, "+model.norm_layer=1"], "model.norm_layer: normlab passes norm_layer"),
        (["model=custom", f"model._target_={__name__}.NoConvention"], "takes no norm_layer"),
        ([*CUSTOM, "regularizer=[dropconnect]"], "regularizer=dropconnect: model._target_="),
        ([*CUSTOM, "norm.placement=after_activation"], "norm.placement=after_activation"),
        (["model=cnn", "regularizer=[dropconnect]"], "regularizer=dropconnect"),
        (["model=resnet_small", "norm=group", "norm.num_groups=3"], "norm.num_groups=3"),
    ],
)
def test_network_mistakes_fail_in_one_line_before_training(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        compose_checked(str(CONFIG_DIR), "train", overrides)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_network_whose_outputs_do_not_fit_fails_in_one_line_before_training(run_training):
    with pytest.raises(ConfigError, match=r"model\._target_=.*WrongOutputs: gives outputs of "):
        run_training(*DIGITS, "model=custom", f"model._target_={__name__}.WrongOutputs")


def test_cnn_on_vector_data_fails_naming_the_network(run_training):
    expected = r"model\._target_=normlab\.models\.cnn\.CNN: .*use model=mlp"
    with pytest.raises(ConfigError, match=expected):
        run_training(*TINY, "model=cnn")


def test_gradcheck_passes_on_a_custom_network(compose_cfg):
    from normlab.gradcheck import run_gradcheck

    cfg = compose_cfg(*DIGITS, *CUSTOM, "norm=batch", "activation=tanh")
    checks = run_gradcheck(cfg)
    assert {check.name.split(".")[0] for check in checks} == {"features", "hidden", "head"}
    assert max(check.worst for check in checks) <= cfg.gradcheck.tolerance


def test_sync_batch_norm_converts_a_custom_networks_batch_norms(compose_cfg):
    from normlab.models.build import build_model
    from normlab.models.sync_batchnorm import SyncBatchNorm1d, SyncBatchNorm2d, convert_to_sync

    network = convert_to_sync(build_model(compose_cfg(*DIGITS, *CUSTOM), (1, 8, 8), 10))
    assert isinstance(network.features[1], SyncBatchNorm2d)
    assert isinstance(network.hidden[1], SyncBatchNorm1d)


def test_stacked_launcher_gives_the_reason_a_custom_network_trains_solo(compose_cfg, tmp_path):
    from normlab.stack.plan import solo_reason

    assert solo_reason(compose_cfg(*DIGITS), tmp_path) is None  # the mlp stacks
    for overrides, target in ((CUSTOM, f"{__name__}.TinyConvNet"), (["model=resnet_small"], "")):
        reason = solo_reason(compose_cfg(*DIGITS, *overrides), tmp_path)
        assert reason.startswith("model._target_=") and target in reason
        assert "only normlab's mlp and cnn have a batched form" in reason


@pytest.mark.slow
def test_custom_network_in_a_stacked_sweep_trains_solo_saying_why(tmp_path, cli_env):
    env = {**cli_env, "PYTHONPATH": os.pathsep.join([cli_env["PYTHONPATH"], str(HERE)])}
    done = normlab(
        "normlab.train",
        "-m",
        "hydra/launcher=stacked",
        *DIGITS,
        "model=custom",
        "model._target_=test_custom_model.TinyConvNet",
        "seed=0,1",
        "trainer.max_steps=10",
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reason = "solo (model._target_=test_custom_model.TinyConvNet: only normlab's mlp and cnn"
    assert (done.stdout + done.stderr).count(reason) == 2, done.stdout + done.stderr
    assert "stack of 2" not in done.stdout + done.stderr
    results = list((tmp_path / "outputs" / "multirun").rglob("result.json"))
    assert len(results) == 2
