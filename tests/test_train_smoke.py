"""The default pipeline trains end to end and fills the run folder."""

import json

from conftest import TINY


def test_tiny_run_fills_the_run_folder(run_training):
    result, run_dir = run_training(*TINY)
    assert result["status"] == "completed"
    assert result["steps"] == 20
    assert 0.0 <= result["test/acc"] <= 1.0
    for name in (
        "config.yaml",
        "provenance.json",
        "metrics.csv",
        "result.json",
        "checkpoints/last.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "result.json").read_text())["test/acc"] == result["test/acc"]
