"""trainer.precision: bf16-mixed trains with float32 books; half-precision weights are refused.

On CPU, bf16-mixed is torch.autocast("cpu", torch.bfloat16) around every step (Lightning's
MixedPrecision plugin): matmuls, baddbmm and convolutions run in bfloat16, parameters, the
on-device training sums and the metrics stay float32.

Tolerances: bf16-mixed test accuracy within 0.05 of 32-true on data=digits (bfloat16 keeps 8
bits of mantissa, so the two runs drift apart step by step but learn alike); a stacked member
under bf16 autocast follows its solo run within 2e-2 relative per step (both round to bfloat16,
in other summation orders), and exactly under 32-true (tests/test_stacked.py).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from normlab.config.errors import ConfigError
from normlab.config.validate import validate
from normlab.pipeline import train, train_members

DIGITS = ["data=digits", "trainer=debug", "trainer.max_steps=200", "threads=1"]


def logged_losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]


def saved_state(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def test_bf16_mixed_trains_with_float32_books_close_to_32(run_training, tmp_path):
    full, _ = run_training(*DIGITS, run_dir=tmp_path / "full")
    mixed, mixed_dir = run_training(
        *DIGITS, "trainer.precision=bf16-mixed", run_dir=tmp_path / "mixed"
    )
    assert mixed["status"] == full["status"] == "completed"
    losses = logged_losses(mixed_dir)
    assert len(losses) == 40 and all(math.isfinite(loss) for loss in losses)
    assert losses != logged_losses(tmp_path / "full"), "autocast changed nothing"
    assert abs(mixed["test/acc"] - full["test/acc"]) <= 0.05, (mixed["test/acc"], full["test/acc"])
    assert mixed["test/acc"] > 0.8
    state = saved_state(mixed_dir)
    assert state["train_sums"].dtype == torch.float32
    weights = {key: value.dtype for key, value in state.items() if value.is_floating_point()}
    assert set(weights.values()) == {torch.float32}, weights


@pytest.mark.parametrize(
    ("common", "variants"),
    [
        (
            ["regularizer=[dropout]"],
            [["norm=batch", "seed=0"], ["norm=none", "activation=relu", "seed=1"]],
        ),
        (
            ["data=digits", "model=cnn", "model.width=8"],
            [["norm=batch", "seed=0"], ["norm=group", "norm.num_groups=4", "seed=1"]],
        ),
    ],
    ids=["mlp-baddbmm-batchnorm-dropout", "cnn-grouped-conv-batchnorm"],
)
def test_stacked_members_follow_their_solo_runs_under_bf16_autocast(
    compose_cfg, tmp_path, common, variants
):
    per_step = [
        "data=synthetic",
        "trainer=debug",
        "trainer.max_steps=30",
        "trainer.log_every_n_steps=1",
        "trainer.precision=bf16-mixed",
        "threads=1",
    ]
    cfgs = [compose_cfg(*per_step, *common, *variant) for variant in variants]
    members = [tmp_path / f"member{i}" for i in range(len(cfgs))]
    results = train_members(cfgs, members, tmp_path / "stack")
    assert [r["status"] for r in results] == ["completed"] * len(cfgs)
    for index, cfg in enumerate(cfgs):
        solo = tmp_path / f"solo{index}"
        train(cfg, solo)
        expected, got = logged_losses(solo), logged_losses(members[index])
        assert len(got) == len(expected) == 30
        for step, (a, b) in enumerate(zip(expected, got, strict=True)):
            assert abs(a - b) <= 2e-2 * abs(a), f"member {index} step {step}: {a} vs {b}"
    stack_state = saved_state(tmp_path / "stack")
    assert stack_state["train_sums"].dtype == torch.float32
    running = [v for k, v in stack_state.items() if k.endswith("running_mean")]
    assert running and all(value.dtype == torch.float32 for value in running)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (["trainer.precision=16-true"], "trainer.precision=16-true casts the weights"),
        (["trainer.precision=bf16-true"], "trainer.precision=bf16-true casts the weights"),
        (["trainer.precision=64-true"], "trainer.precision=64-true is not a precision"),
        (["trainer.precision=half"], "trainer.precision=half is not a precision"),
        (["trainer.precision=16-mixed"], "use trainer.precision=bf16-mixed on CPU"),
    ],
)
def test_unsupported_precisions_are_one_line_config_errors(compose_cfg, overrides, text):
    with pytest.raises(ConfigError, match=text.replace(".", r"\.")):
        validate(compose_cfg("data=synthetic", *overrides))


@pytest.mark.parametrize("precision", ["32", "32-true", "bf16-mixed"])
def test_supported_precisions_pass_validation(compose_cfg, precision):
    validate(compose_cfg("data=synthetic", f"trainer.precision={precision}"))
    gpu = compose_cfg("data=synthetic", "trainer=gpu", "trainer.precision=16-mixed")
    validate(gpu, devices_here=False)  # the precision rule, whatever GPUs this machine has


def test_half_weights_on_the_command_line_exit_2_in_one_line(train_cli):
    done = train_cli("data=synthetic", "trainer.precision=bf16-true")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer.precision=bf16-true" in lines[0], done.stderr
    assert "use trainer.precision=32, bf16-mixed" in lines[0]
