"""The published shape of the headline ablation, at small scale (slow: `make test-all`).

Thresholds come from real runs (README "Results": sigmoid BN 0.841 vs none 0.568, relu BN
0.863 vs none 0.846 at 3,000 steps, 3 seeds) with room for seed noise; the preset is not tuned
to the test.
"""

import json
from pathlib import Path

import pytest

from conftest import cli_environment
from helpers import normlab

pytestmark = pytest.mark.slow


def mean_test_acc(sweep: Path, activation: str, norm: str) -> float:
    values = []
    for result in sweep.glob("*/result.json"):
        # a cell's folder names its overrides (logger=csv among them), comma-separated
        if {f"activation={activation}", f"norm={norm}"} <= set(result.parent.name.split(",")):
            values.append(json.loads(result.read_text())["test/acc"])
    assert len(values) == 3
    return sum(values) / len(values)


def test_bn_matters_for_sigmoid_not_for_relu(tmp_path):
    done = normlab(
        "normlab.train",
        "-m",
        "experiment=bn_sigmoid_vs_relu",
        "logger=csv",  # the science, not W&B (tests/test_wandb.py)
        env=cli_environment(tmp_path),
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [sweep] = (tmp_path / "outputs" / "multirun" / "bn_sigmoid_vs_relu").iterdir()
    sigmoid_gap = mean_test_acc(sweep, "sigmoid", "batch") - mean_test_acc(sweep, "sigmoid", "none")
    relu_gap = mean_test_acc(sweep, "relu", "batch") - mean_test_acc(sweep, "relu", "none")
    assert sigmoid_gap >= 0.10, sigmoid_gap
    assert abs(relu_gap) <= 0.05, relu_gap
    assert (sweep / "report" / "report.md").is_file()
    assert (sweep / "report" / "val_acc.png").stat().st_size > 10_000
