"""W&B: offline runs hold the metrics and the resolved config; each job finishes its own run."""

from conftest import TINY
from wandb_reader import wandb_config, wandb_history, wandb_records


def test_offline_run_holds_metrics_and_resolved_config(run_training):
    result, run_dir = run_training(*TINY, "logger=wandb", "name=bn_check", "tags=[a,b]")
    history = wandb_history(run_dir)
    assert any("train/loss" in row for row in history)
    assert any("val/acc" in row for row in history)
    tested = [row for row in history if "test/acc" in row]
    assert abs(tested[-1]["test/acc"] - result["test/acc"]) < 1e-6
    config = wandb_config(run_dir)
    assert config["norm"]["name"] == "batch" and config["optimizer"]["lr"] == 0.1
    assert config["data"]["name"] == "synthetic"
    run = next(r["run"] for r in wandb_records(run_dir) if r["type"] == "run")
    assert run["run_group"] == "bn_check" and set(run["tags"]) >= {"a", "b"}
    assert any(r["type"] == "exit" for r in wandb_records(run_dir))  # finished


def test_two_runs_in_one_process_get_two_wandb_runs(run_training, tmp_path):
    run_training(*TINY, "logger=wandb", run_dir=tmp_path / "one")
    run_training(*TINY, "logger=wandb", "seed=1", run_dir=tmp_path / "two")
    ids = [
        next(r["run"]["run_id"] for r in wandb_records(tmp_path / d) if r["type"] == "run")
        for d in ("one", "two")
    ]
    assert ids[0] != ids[1]
