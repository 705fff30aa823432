"""Santurkar et al. 2018's instruments (callbacks=landscape) and norm=noisy_batch.

Unit tests pin each measure on a tiny float64 network against a hand computation with plain
autograd on a copy of the network; training tests show the probes change nothing; slow tests
check the paper's claims at small scale through the presets.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import cli_environment
from helpers import normlab
from normlab.analysis.landscape_figures import largest_good_lr, lr_range
from normlab.callbacks.landscape import ics_layers, ics_metrics, landscape_metrics, probe_mode
from normlab.config.errors import ConfigError
from normlab.gradcheck import run_gradcheck
from normlab.models.blocks import HiddenBlock
from normlab.models.noisy_batchnorm import NoisyBatchNorm1d, seeded_noise
from normlab.stack.plan import solo_reason

TOLERANCE = 1e-10  # float64: the two computations differ only in rounding order
NOISE = {"scale_mean": 0.5, "scale_std": 0.5, "shift_mean": 0.5, "shift_std": 0.5}


def tiny_network(norm=lambda width: nn.BatchNorm1d(width)) -> nn.Sequential:
    """flatten -> 3 hidden blocks (linear, norm, sigmoid) of 5 units -> head, float64."""
    torch.manual_seed(0)
    blocks = {"flatten": nn.Flatten()}
    width_in = 4
    for index in range(1, 4):
        blocks[f"layer{index}"] = HiddenBlock(
            nn.Linear(width_in, 5), norm(5), nn.Sigmoid(), norm_before_act=True
        )
        width_in = 5
    blocks["head"] = nn.Linear(5, 3)
    return nn.Sequential(OrderedDict(blocks)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=generator, dtype=torch.float64), torch.arange(16) % 3


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def hand_loss_and_grad(model: nn.Module, weights: dict[str, torch.Tensor], x, y):
    """Plain autograd on a training-mode copy of `model` holding `weights`."""
    twin = copy.deepcopy(model).train()
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(weights[name])
    loss = F.cross_entropy(twin(x), y)
    grads = torch.autograd.grad(loss, list(twin.parameters()))
    names = [name for name, _ in twin.named_parameters()]
    return loss.detach(), dict(zip(names, grads, strict=True))


def norm_of(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors.values()]).norm()


def test_landscape_metrics_equal_a_hand_computation_along_the_gradient():
    model, (x, y) = tiny_network(), batch()
    weights, etas = weights_of(model), [0.05, 0.1, 0.4]
    with probe_mode(model):
        metrics, gradient = landscape_metrics(model, weights, x, y, etas)
    loss, g = hand_loss_and_grad(model, weights, x, y)
    losses, differences, betas = [], [], []
    for eta in etas:
        moved = {name: weights[name] - eta * g[name] for name in weights}
        moved_loss, moved_g = hand_loss_and_grad(model, moved, x, y)
        losses.append(float(moved_loss))
        difference = float(norm_of({n: g[n] - moved_g[n] for n in g}))
        differences.append(difference)
        betas.append(difference / (eta * float(norm_of(g))))
    expected = {
        "landscape/loss": float(loss),
        "landscape/grad_norm": float(norm_of(g)),
        "landscape/loss_min": min(losses),
        "landscape/loss_max": max(losses),
        "landscape/loss_spread": max(losses) - min(losses),
        "landscape/grad_diff_min": min(differences),
        "landscape/grad_diff_max": max(differences),
        "landscape/beta": max(betas),
    }
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert float(metrics[name]) == pytest.approx(value, abs=TOLERANCE, rel=TOLERANCE), name
    assert max(betas) > 0 and max(losses) > min(losses)  # a real landscape, not a flat one
    for name in g:
        torch.testing.assert_close(gradient[name], g[name], rtol=TOLERANCE, atol=TOLERANCE)


def test_ics_uses_only_the_preceding_layers_updated_weights():
    model, (x, y) = tiny_network(), batch()
    before = weights_of(model)
    generator = torch.Generator().manual_seed(2)
    after = {
        n: w + 0.3 * torch.randn(w.shape, generator=generator, dtype=w.dtype)
        for n, w in before.items()
    }
    _, gradient = hand_loss_and_grad(model, before, x, y)
    with probe_mode(model):
        metrics = ics_metrics(model, before, gradient, after, x, y)
    assert set(ics_layers(model)) == {"layer2", "layer3", "head"}  # layer1 has none before it
    order = ["layer1", "layer2", "layer3", "head"]
    for depth, layer in enumerate(order[1:], start=1):
        earlier = order[:depth]
        mixed = {n: after[n] if n.split(".")[0] in earlier else before[n] for n in before}
        weight = f"{layer}.transform.weight" if layer != "head" else "head.weight"
        _, shifted = hand_loss_and_grad(model, mixed, x, y)
        G, G2 = gradient[weight], shifted[weight]
        assert float(metrics[f"ics/{layer}/l2"]) == pytest.approx(
            float((G - G2).norm()), rel=TOLERANCE
        )
        cosine = float((G * G2).sum() / (G.norm() * G2.norm()))
        assert float(metrics[f"ics/{layer}/cos"]) == pytest.approx(cosine, rel=TOLERANCE)
        assert float((G - G2).norm()) > 1e-3  # the preceding layers' move is seen


def test_ics_is_zero_when_only_the_layer_itself_and_later_ones_moved():
    model, (x, y) = tiny_network(), batch()
    before = weights_of(model)
    # layer3, the head and layer2's own weights move; layer1 (before layer2) does not
    after = {n: w + (0.0 if n.startswith("layer1") else 0.5) for n, w in before.items()}
    _, gradient = hand_loss_and_grad(model, before, x, y)
    with probe_mode(model):
        metrics = ics_metrics(model, before, gradient, after, x, y)
    assert float(metrics["ics/layer2/l2"]) == 0.0
    assert float(metrics["ics/layer2/cos"]) == pytest.approx(1.0, abs=1e-12)
    assert float(metrics["ics/layer3/l2"]) > 0


def test_probes_leave_parameters_gradients_buffers_modes_and_random_stream_alone():
    model, (x, y) = tiny_network(norm=lambda w: NoisyBatchNorm1d(w, **NOISE)), batch()
    model[1].dropout = nn.Dropout(0.5)
    model.train()
    state = copy.deepcopy(model.state_dict())
    random_state = torch.get_rng_state()
    with probe_mode(model):
        assert model[1].norm.training and not model[1].dropout.training
        with seeded_noise(model, 7):
            landscape_metrics(model, weights_of(model), x, y, [0.1, 0.2])
    assert torch.equal(torch.get_rng_state(), random_state)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert all(module.training for module in model.modules())


def test_noisy_batch_norm_redraws_noise_each_step_is_seeded_and_plain_in_eval():
    x = torch.randn(32, 6, dtype=torch.float64)
    layer = NoisyBatchNorm1d(6, **NOISE).double()
    plain = nn.BatchNorm1d(6).double()
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)  # seeded: the run's stream gives the same noise
    assert not torch.allclose(first, second)  # a new step, new noise
    normalized = plain(x)  # batch statistics: what the noise multiplies and shifts
    assert (first - normalized).abs().min() > 0  # every activation of every example moved
    plain.load_state_dict(layer.state_dict())
    layer.eval(), plain.eval()
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)
    with seeded_noise(layer, 5):
        layer.train()
        assert torch.equal(layer(x), layer(x))  # frozen: the same noise at every forward


def test_gradcheck_passes_on_noisy_batch_with_the_noise_frozen(compose_cfg):
    checks = run_gradcheck(compose_cfg("norm=noisy_batch", "data=synthetic"))
    assert checks and max(check.worst for check in checks) < 1e-4


def test_noisy_batch_cells_train_solo_under_the_stacked_launcher(compose_cfg, tmp_path):
    reason = solo_reason(compose_cfg("norm=noisy_batch"), tmp_path / "cell")
    assert reason is not None and "noisy_batch" in reason
    assert solo_reason(compose_cfg("norm=batch"), tmp_path / "cell") is None


def test_lr_multipliers_must_be_positive(run_training):
    with pytest.raises(ConfigError, match=r"callbacks\.landscape\.lr_multipliers"):
        run_training(
            "data=synthetic",
            "trainer=debug",
            "callbacks=landscape",
            "callbacks.landscape.lr_multipliers=[1.0,-2.0]",
        )


def _comparable(run_dir: Path) -> pd.DataFrame:
    """metrics.csv's text without the landscape's columns and the rows that held only those."""
    frame = pd.read_csv(run_dir / "metrics.csv", dtype=str)
    ours = [c for c in frame.columns if c.startswith(("landscape/", "ics/"))]
    rest = frame.drop(columns=ours)
    metrics = [c for c in rest.columns if c not in ("step", "epoch")]
    return rest.dropna(how="all", subset=metrics).reset_index(drop=True)


@pytest.mark.parametrize(
    "overrides",
    [["norm=noisy_batch", "regularizer=[dropout]"], ["norm=batch"]],
    ids=["noisy_batch+dropout", "batch"],
)
def test_landscape_probes_change_no_training_number(run_training, tmp_path, overrides):
    common = ["data=synthetic", "trainer=debug", "logger=csv", *overrides]
    result_without, without = run_training(*common, run_dir=tmp_path / "without")
    result_with, with_probes = run_training(
        *common,
        "callbacks=landscape",
        "callbacks.landscape.every_n_steps=3",
        run_dir=tmp_path / "with",
    )
    recorded = pd.read_csv(with_probes / "metrics.csv")
    assert recorded["landscape/beta"].notna().sum() == 7  # steps 0, 3, ..., 18
    assert recorded["ics/layer2/l2"].notna().sum() == 7
    pd.testing.assert_frame_equal(_comparable(without), _comparable(with_probes), check_exact=True)
    assert result_with["test/acc"] == result_without["test/acc"]


def test_lr_range_table_marks_diverged_and_finds_the_largest_good_lr():
    rows = []
    for lr, accs in [
        (0.01, [0.80, 0.80]),
        (0.1, [0.86, 0.86]),
        (1.0, [0.85, 0.84]),
        (3.0, [0.83, None]),
    ]:
        for seed, acc in enumerate(accs):
            rows.append(
                {
                    "overrides": ("norm=none", f"optimizer.lr={lr}", f"seed={seed}"),
                    "optimizer.lr": lr,
                    "seed": seed,
                    "status": "completed" if acc else "diverged",
                    "test/acc": acc,
                }
            )
    table = lr_range(pd.DataFrame(rows), ["norm", "optimizer.lr"])
    assert table["diverged"].tolist() == [0, 0, 0, 1]
    verdict = largest_good_lr(table).iloc[0]
    assert verdict["configuration"] == "none"
    assert verdict["best lr"] == 0.1 and verdict["largest good lr"] == 1.0  # 0.845 >= 0.84
    assert verdict["smallest diverged lr"] == 3.0


# --- the paper's claims at small scale (slow) ---------------------------------------------


def _sweep(tmp_path: Path, experiment: str, *overrides: str) -> Path:
    done = normlab(
        "normlab.train",
        "-m",
        f"experiment={experiment}",
        *overrides,
        env=cli_environment(tmp_path),
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [sweep] = (tmp_path / "outputs" / "multirun" / experiment).iterdir()
    return sweep


def _cells(sweep: Path, pattern: str) -> list[Path]:
    return sorted(sweep.glob(pattern))


def _mean_metric(cells: list[Path], metric: str) -> float:
    values = []
    for cell in cells:
        frame = pd.read_csv(cell / "metrics.csv")
        values.append(frame[metric].dropna().mean())
    return sum(values) / len(values)


def _mean_result(cells: list[Path], key: str = "test/acc") -> float:
    values = [json.loads((cell / "result.json").read_text())[key] for cell in cells]
    return sum(values) / len(values)


@pytest.mark.slow
def test_batch_norm_loss_spread_along_the_gradient_is_smaller(tmp_path):
    sweep = _sweep(tmp_path, "bn_landscape")
    batch, none = _cells(sweep, "norm=batch,seed=*"), _cells(sweep, "norm=none,seed=*")
    assert len(batch) == len(none) == 3
    spread_batch = _mean_metric(batch, "landscape/loss_spread")
    spread_none = _mean_metric(none, "landscape/loss_spread")
    print(f"loss spread over training: batch {spread_batch:.4f}, none {spread_none:.4f}")
    assert spread_batch < spread_none
    assert (sweep / "report" / "landscape.png").stat().st_size > 10_000


@pytest.mark.slow
def test_noisy_batch_norm_has_more_ics_and_about_the_accuracy_of_batch_norm(tmp_path):
    sweep = _sweep(tmp_path, "bn_ics", "activation=relu")
    batch = _cells(sweep, "*norm=batch,seed=*")
    noisy = _cells(sweep, "*norm=noisy_batch,seed=*")
    assert len(batch) == len(noisy) == 3
    ics_batch = _mean_metric(batch, "ics/layer3/l2")
    ics_noisy = _mean_metric(noisy, "ics/layer3/l2")
    acc_batch, acc_noisy = _mean_result(batch), _mean_result(noisy)
    print(
        f"ics/layer3/l2: batch {ics_batch:.4f}, noisy {ics_noisy:.4f}; "
        f"test acc: batch {acc_batch:.4f}, noisy {acc_noisy:.4f}"
    )
    assert ics_noisy > ics_batch
    assert acc_noisy >= acc_batch - 0.05
    assert (sweep / "report" / "ics_l2.png").stat().st_size > 10_000


@pytest.mark.slow
def test_batch_norm_trains_at_a_learning_rate_at_least_3x_larger(tmp_path):
    from normlab.analysis.report import build_report

    sweep = _sweep(tmp_path, "bn_lr_range")
    report = build_report(sweep)
    verdict = largest_good_lr(lr_range(report.runs, report.swept_keys)).set_index("configuration")
    print(verdict.to_string())
    assert verdict.loc["batch", "largest good lr"] >= 3 * verdict.loc["none", "largest good lr"]
    assert "## Learning-rate range" in (sweep / "report" / "report.md").read_text()
