"""What a run's loggers leave besides metrics: TensorBoard's hyperparameters, train.log (the
run's validations and test, W&B's text, a stack member's pointer to its stack's log), one
terminal line per W&B run, and no warning about Lightning's logging interval."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import yaml

from conftest import TINY
from normlab.pipeline import train_members


def session_hparams(run_dir: Path) -> dict:
    """The hyperparameters TensorBoard's HParams tab reads from a run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    # no experiment record: the tab then lists every scalar the run logged as a metric
    assert list(content) == ["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert {"val/acc", "test/acc"} <= set(events.Tags()["scalars"])
    values = data.session_start_info.hparams
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in values.items()}


def test_tensorboard_gets_the_resolved_config_as_hyperparameters(run_training):
    _, run_dir = run_training(*TINY, "logger=tensorboard", "optimizer.lr=0.05", "norm=layer")
    saved = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.05 and saved["norm"]["name"] == "layer"
    assert saved == yaml.safe_load((run_dir / "config.yaml").read_text())
    hparams = session_hparams(run_dir)
    assert hparams["optimizer.lr"] == 0.05 and hparams["norm.name"] == "layer"
    assert hparams["data.batch_size"] == 32


def test_each_stack_member_logs_its_own_config_to_its_tensorboard(compose_cfg, tmp_path):
    lrs = (0.05, 0.2)
    cfgs = [compose_cfg(*TINY, "logger=tensorboard", f"optimizer.lr={lr}") for lr in lrs]
    dirs = [tmp_path / "m0", tmp_path / "m1"]
    train_members(cfgs, dirs, tmp_path / "stack")
    for run_dir, lr in zip(dirs, lrs, strict=True):
        assert (
            yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())["optimizer"][
                "lr"
            ]
            == lr
        )
        assert session_hparams(run_dir)["optimizer.lr"] == lr


def val_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("val/acc")]


def test_train_log_of_a_run_holds_its_validations_and_test(run_training):
    result, run_dir = run_training(*TINY)
    lines = (run_dir / "train.log").read_text().splitlines()
    validations = [line.split("] ", 1)[1] for line in lines if "] step " in line]
    expected = [
        f"step {int(row['step']) + 1}: val/acc={float(row['val/acc']):.4f} "
        f"val/acc_best={float(row['val/acc_best']):.4f} val/loss={float(row['val/loss']):.4f}"
        for row in val_rows(run_dir)
    ]
    assert validations == expected and len(expected) == 2  # steps 10 and 20
    assert lines[-1].endswith(
        f"test: test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f}"
    )


def test_a_stack_members_train_log_names_the_stacks_log_and_holds_its_own_lines(
    compose_cfg, tmp_path
):
    stack_dir = tmp_path / "stacks" / "stack-1"
    stack_log = stack_dir.with_suffix(".log")  # the stack worker's own output
    stack_log.parent.mkdir(parents=True)
    stack_log.write_text("")
    cfgs = [compose_cfg(*TINY, f"seed={seed}") for seed in (0, 1)]
    dirs = [tmp_path / "m0", tmp_path / "m1"]
    train_members(cfgs, dirs, stack_dir)
    for run_dir in dirs:
        lines = (run_dir / "train.log").read_text().splitlines()
        assert lines[0].endswith(f"the stack's own log (its start, warnings, errors): {stack_log}")
        accuracies = [line.split("val/acc=")[1].split()[0] for line in lines if "] step " in line]
        assert accuracies == [f"{float(row['val/acc']):.4f}" for row in val_rows(run_dir)]
    assert (dirs[0] / "train.log").read_text() != (dirs[1] / "train.log").read_text()


def test_lightning_warns_nothing_about_an_epoch_shorter_than_the_logging_interval(
    run_training,
):
    # 800 training examples in batches of 32: 25 batches an epoch, fewer than 30
    overrides = ("trainer.log_every_n_steps=30", "trainer.max_steps=60")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run_dir = run_training(*TINY, *overrides)
    assert not [w for w in caught if "logging interval" in str(w.message)]
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    # normlab logs every 30 optimizer steps across epochs: the warning did not apply
    assert [(row["epoch"], row["step"]) for row in rows] == [("1", "29"), ("2", "59")]


def test_a_sweep_prints_one_line_per_wandb_run_and_keeps_wandbs_text_in_train_log(
    cli_env, tmp_path
):
    env = {key: value for key, value in cli_env.items() if key != "WANDB_SILENT"}
    done = subprocess.run(
        [sys.executable, "-m", "normlab.train", "-m", *TINY, "logger=wandb", "seed=0,1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    terminal = (done.stdout + done.stderr).splitlines()
    assert not [line for line in terminal if line.startswith("wandb:")], terminal
    announced = [line for line in terminal if "W&B run " in line]
    assert len(announced) == 2 and all("wandb sync " in line for line in announced)
    [sweep] = (tmp_path / "outputs" / "multirun" / "default").iterdir()
    for seed in (0, 1):
        [cell] = [path for path in sweep.iterdir() if f"seed={seed}" in path.name]
        text = (cell / "train.log").read_text()
        assert "wandb: Tracking run with wandb" in text and "wandb: Run summary:" in text
        assert "] step 20: val/acc=" in text
        result = json.loads((cell / "result.json").read_text())
        assert f"test: test/acc={result['test/acc']:.4f}" in text
    assert "wandb: Run data is saved locally" in (sweep / "report" / "wandb.log").read_text()
