"""W&B: offline runs hold the metrics and the resolved config; each job finishes its own run; a
run folder keeps one W&B run for life; a sweep's runs share a group, its report run links them."""

import csv
import json
from pathlib import Path

import pytest

from conftest import TINY
from helpers import normlab, options, start_training, wait_for_step
from normlab.utils.wandb_run import RUN_ID_FILE
from wandb_reader import wandb_config, wandb_history, wandb_records

# a synthetic-data run long enough to be killed mid-way, checkpoints every 250 steps
LONG = [
    "data=synthetic",
    "data.num_samples=6000",
    "trainer.max_steps=3000",
    "trainer.val_check_interval=250",
    "trainer.log_every_n_steps=50",
    "threads=1",
]


def test_offline_run_holds_metrics_and_resolved_config(run_training):
    result, run_dir = run_training(*TINY, "logger=wandb", "name=bn_check", "tags=[a,b]")
    # logger=wandb trains and tests (test_options.py leaves this option to this test)
    assert result["status"] == "completed" and result["steps"] == 20
    assert 0.0 <= result["test/acc"] <= 1.0
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


def test_wandb_mode_comes_from_the_config_then_the_environment_then_offline(monkeypatch):
    from normlab.config.errors import ConfigError
    from normlab.config.schema import WandbMode
    from normlab.utils.wandb_run import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode(None) == "online"
    assert wandb_mode(WandbMode.offline) == "offline"  # logger.wandb.mode wins
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # what older W&B versions called offline
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "sideways")
    with pytest.raises(ConfigError, match="WANDB_MODE=sideways"):
        wandb_mode(None)


def test_presets_log_to_wandb_and_logger_csv_still_turns_it_off(compose_cfg):
    for preset in options("experiment"):
        assert compose_cfg(f"experiment={preset}").logger.wandb is not None, preset
    assert compose_cfg("experiment=bn_sigmoid_vs_relu", "logger=csv").logger.wandb is None


def run_record(run_dir: Path) -> dict:
    return next(r["run"] for r in wandb_records(run_dir) if r["type"] == "run")


@pytest.mark.slow  # ~36 s here: a run killed mid-way and re-run
def test_a_killed_and_rerun_cell_has_one_wandb_run_with_every_step_once(cli_env, tmp_path):
    run_dir = tmp_path / "cell"
    args = [*LONG, "logger=wandb", f"hydra.run.dir={run_dir}"]
    # each run in a W&B service of its own, as from a shell: a service inherited from this test
    # process (WANDB_SERVICE) would still hold the killed run's stream ("run ID ... is in use")
    cli_env = {key: value for key, value in cli_env.items() if key != "WANDB_SERVICE"}
    process = start_training(cli_env, *args)
    wait_for_step(run_dir, 1000, process)
    process.kill()  # SIGKILL: the offline run is left unfinished
    process.wait()
    run_id = (run_dir / "wandb" / RUN_ID_FILE).read_text().strip()
    assert [p.name[-len(run_id) :] for p in (run_dir / "wandb").glob("offline-run-*")] == [run_id]
    done = normlab("normlab.train", *args, env=cli_env)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] >= 1000
    [offline] = (run_dir / "wandb").glob("offline-run-*")  # exactly one W&B run in the folder
    assert offline.name.endswith(run_id) and run_record(run_dir)["run_id"] == run_id
    history = wandb_history(run_dir)
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("train/loss", "val/acc"):
        logged = [(r["trainer/global_step"], r[name]) for r in history if name in r]
        expected = [(int(r["step"]), float(r[name])) for r in rows if r[name]]
        assert [step for step, _ in logged] == [step for step, _ in expected], name  # once each
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert any(r["type"] == "exit" for r in wandb_records(run_dir))


@pytest.mark.slow  # ~25 s here: a two-cell sweep and its report through the CLI
def test_a_sweep_groups_its_wandb_runs_and_its_report_run_links_them(cli_env, tmp_path):
    done = normlab(
        "normlab.train", "-m", *TINY, "logger=wandb", "name=grouped", "seed=0,1", env=cli_env
    )
    assert done.returncode == 0, done.stderr
    [sweep] = (tmp_path / "outputs" / "multirun" / "grouped").iterdir()
    cells = sorted(p.parent for p in sweep.glob("*/result.json"))
    assert len(cells) == 2
    ids = []
    for cell in cells:
        run = run_record(cell)
        assert run["run_group"] == "grouped" and run["job_type"] == "train"
        assert sweep.name in run["tags"]  # the sweep key
        metric = next(
            r["metric"]
            for r in wandb_records(cell)
            if r["type"] == "metric" and r["metric"].get("name") == "val/acc_best"
        )
        assert metric["summary"] == {"max": True}
        ids.append(run["run_id"])
    assert len(list((sweep / "report" / "wandb").glob("offline-run-*"))) == 1
    records = wandb_records(sweep / "report")
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["job_type"] == "report" and run["run_group"] == "grouped"
    assert sorted(run["config"]["update"]["cell_runs"]) == sorted(ids)
    [artifact] = [  # beside the run_table artifacts W&B makes of the logged tables
        r["artifact"]
        for r in records
        if r["type"] == "artifact" and r["artifact"]["type"] == "sweep-report"
    ]
    assert {"report.md", "summary.csv", "summary.table.json"} <= {
        entry["path"] for entry in artifact["manifest"]["contents"]
    }
