"""Instruments: known values of the probe statistics, their cadence and names, gradient and
batch-norm diagnostics, and the BatchNorm paper's Figure 1(b, c) effect on Fashion-MNIST."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import TINY
from normlab.callbacks.activation_stats import percentiles, unit_symmetry
from normlab.callbacks.bn_diagnostics import batch_statistics
from normlab.callbacks.probe import capture_probe, probe_metrics
from normlab.config.errors import ConfigError
from normlab.models.blocks import HiddenBlock
from wandb_reader import wandb_history

INSTRUMENTS = ["callbacks=instruments", "callbacks.instruments.every_n_steps=5"]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def one_layer_net(activation: nn.Module, bias: float = 0.0, in_features: int = 5) -> nn.Module:
    """layer1 (linear -> act, no norm) -> head, with every bias of layer1 set to `bias`."""
    linear = nn.Linear(in_features, 8)
    nn.init.constant_(linear.bias, bias)
    block = HiddenBlock(linear, nn.Identity(), activation, norm_before_act=True)
    return nn.Sequential(OrderedDict(layer1=block, head=nn.Linear(8, 2)))


def recorded(run_dir: Path, column: str) -> pd.DataFrame:
    """The metrics.csv rows that hold `column` (at least one: a check over no rows checks
    nothing)."""
    rows = pd.read_csv(run_dir / "metrics.csv").dropna(subset=[column])
    assert len(rows) > 0, f"no metrics.csv row holds {column}"
    return rows


@pytest.mark.parametrize("shape", [(1000, 100), (7, 13), (3,), (1,)])
def test_percentiles_equal_numpys(shape):
    values = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = np.percentile(values.numpy().astype(np.float64), [15, 50, 85])
    np.testing.assert_allclose(percentiles(values).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_percentiles_equal_numpys_with_ties():
    values = torch.tensor([2.0, 1.0, 1.0, 1.0, 5.0, 2.0, 2.0, 0.0, 5.0])
    expected = np.percentile(values.numpy(), [15, 50, 85])
    np.testing.assert_allclose(percentiles(values).numpy(), expected, rtol=1e-6)


def test_unit_symmetry_is_one_for_copies_and_near_one_over_width_for_independent_units():
    column = torch.randn(500, 1, generator=torch.Generator().manual_seed(0))
    assert float(unit_symmetry(column.repeat(1, 50))) == pytest.approx(1.0, abs=1e-6)
    independent = torch.randn(500, 50, generator=torch.Generator().manual_seed(1))
    assert float(unit_symmetry(independent)) == pytest.approx(1 / 50, abs=0.01)


def test_relu_layer_with_a_large_negative_bias_is_fully_dead():
    probe = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    metrics, _ = probe_metrics(
        one_layer_net(nn.ReLU(), bias=-100.0), probe, activation="relu", typical_unit=0, margin=0.05
    )
    assert float(metrics["dead/layer1"]) == 1.0
    metrics, _ = probe_metrics(
        one_layer_net(nn.ReLU(), bias=100.0), probe, activation="relu", typical_unit=0, margin=0.05
    )
    assert float(metrics["dead/layer1"]) == 0.0


def test_sigmoid_layer_fed_large_inputs_is_fully_saturated():
    probe = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    net = one_layer_net(nn.Sigmoid())
    nn.init.constant_(net.layer1.transform.weight, 1.0)
    large, _ = probe_metrics(net, 1000 * probe, activation="sigmoid", typical_unit=0, margin=0.05)
    small, _ = probe_metrics(net, probe / 1000, activation="sigmoid", typical_unit=0, margin=0.05)
    assert float(large["sat/layer1"]) == 1.0
    assert float(small["sat/layer1"]) == 0.0


def test_probe_pass_leaves_no_hooks_and_restores_training_mode():
    net = one_layer_net(nn.Sigmoid())
    net.layer1.norm = nn.BatchNorm1d(8)
    net.train()
    captured = capture_probe(net, torch.randn(16, 5))
    assert set(captured) == {"layer1", "norm:layer1"}
    assert all(module.training for module in net.modules())
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in net.modules())


def test_batch_statistics_normalize_per_batch_and_leave_running_statistics_alone():
    norm = nn.BatchNorm1d(4).eval()
    x = 3 + 2 * torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), batch_statistics(norm):
        y = norm(x)
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    assert torch.equal(norm.running_mean, torch.zeros(4)) and int(norm.num_batches_tracked) == 0
    assert not norm.training and norm.track_running_stats


def test_instruments_record_every_n_steps_under_documented_names(run_training):
    result, run_dir = run_training(*TINY, *INSTRUMENTS)
    assert result["status"] == "completed"
    rows = recorded(run_dir, "act/layer3/unit/p15")
    assert rows["step"].tolist() == [0, 5, 10, 15]
    for layer in ("layer1", "layer2", "layer3"):
        for stat in ("mean", "std", "p15", "p50", "p85"):
            assert rows[f"act/{layer}/{stat}"].notna().all()
            assert rows[f"act/{layer}/unit/{stat}"].notna().all()
        for name in (f"sat/{layer}", f"sym/{layer}", f"bn/{layer}/mean_gap", f"bn/{layer}/std_gap"):
            assert rows[name].between(0, np.inf).all(), name
    for layer in ("layer1", "layer2", "layer3", "head"):
        for stat in ("norm", "weight_norm", "update_ratio"):
            assert rows[f"grad/{layer}/{stat}"].notna().all()
    assert not any(column.endswith("/hist") for column in rows.columns)  # W&B only


def test_update_ratio_is_lr_times_gradient_norm_over_weight_norm_for_plain_sgd(run_training):
    _, run_dir = run_training(*TINY, *INSTRUMENTS, "optimizer=sgd", "optimizer.lr=0.1")
    rows = recorded(run_dir, "grad/layer1/update_ratio")
    for layer in ("layer1", "layer2", "layer3", "head"):
        expected = 0.1 * rows[f"grad/{layer}/norm"] / rows[f"grad/{layer}/weight_norm"]
        np.testing.assert_allclose(rows[f"grad/{layer}/update_ratio"], expected, rtol=1e-3)


def test_zero_init_keeps_units_identical(run_training):
    _, run_dir = run_training(*TINY, *INSTRUMENTS, "init=zeros")
    rows = recorded(run_dir, "sym/layer1")
    assert len(rows) == 4
    for layer in ("layer1", "layer2", "layer3"):
        np.testing.assert_allclose(rows[f"sym/{layer}"], 1.0, atol=1e-6)


def test_deep_sigmoid_net_shows_vanishing_gradients(run_training):
    _, run_dir = run_training(
        *TINY, *INSTRUMENTS, "norm=none", "activation=sigmoid", "model.depth=8"
    )
    first = recorded(run_dir, "grad/layer1/norm").iloc[0]
    assert first["grad/layer1/norm"] < 1e-3 * first["grad/layer8/norm"]


def test_batch_statistics_undo_a_brightness_shift(run_training):
    result, _ = run_training(
        *TINY,
        *INSTRUMENTS,
        "callbacks.instruments.shift.kind=brightness",
        "callbacks.instruments.shift.amount=3.0",
    )
    assert result["bn/test_acc_running"] == pytest.approx(result["test/acc"])
    # a constant added to every input moves each first-layer unit by a constant: the batch
    # mean removes it, while the running mean does not
    assert result["shift/test_acc_batchstats"] == pytest.approx(result["bn/test_acc_batchstats"])
    assert result["shift/test_acc"] < result["bn/test_acc_running"]


def test_histograms_go_to_wandb_only(run_training):
    _, run_dir = run_training(*TINY, *INSTRUMENTS, "logger=wandb")
    history = wandb_history(run_dir)
    histograms = [row for row in history if row.get("act/layer2/hist._type") == "histogram"]
    assert [int(row["trainer/global_step"]) for row in histograms] == [0, 5, 10, 15]
    assert "sat/layer2" in histograms[0] and "act/layer2/hist.values" in histograms[0]


def test_typical_unit_beyond_the_narrowest_layer_is_a_config_error(run_training):
    with pytest.raises(ConfigError, match="typical_unit=100"):
        run_training(*TINY, *INSTRUMENTS, "callbacks.instruments.typical_unit=100")


@pytest.mark.skipif(not FASHION_MNIST.is_file(), reason="Fashion-MNIST files not installed")
def test_batch_norm_centres_the_last_hidden_layers_inputs(run_training, tmp_path):
    """Figure 1(b, c) after 400 steps of the paper's MLP (3x100 sigmoid, batch 60, small Gaussian
    init): without BN the last layer's percentiles all sit on the negative side, far from zero;
    with BN they straddle zero with the median near it."""
    common = [
        "data=fashion_mnist",
        "model=mlp",
        "activation=sigmoid",
        "init=normal",
        "optimizer=momentum",
        "trainer.max_steps=401",
        "trainer.val_check_interval=401",
        "data.test_size=1000",
        "callbacks=instruments",
        "threads=1",
    ]
    last = {}
    for norm in ("none", "batch"):
        _, run_dir = run_training(*common, f"norm={norm}", run_dir=tmp_path / norm)
        last[norm] = recorded(run_dir, "act/layer3/p50").iloc[-1]
        assert last[norm]["step"] == 400
    for prefix in ("act/layer3", "act/layer3/unit"):
        assert last["none"][f"{prefix}/p85"] < -1.0, prefix
    assert abs(last["batch"]["act/layer3/p50"]) < 0.25
    assert last["batch"]["act/layer3/p15"] < -0.5 < 0.5 < last["batch"]["act/layer3/p85"]
    assert abs(last["batch"]["act/layer3/unit/p50"]) < 0.5
