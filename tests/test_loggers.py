"""Loggers and callbacks from config: logger.extra / callbacks.extra entries by `_target_`,
logger=tensorboard, callbacks=progress, their one-line errors, and stacked members."""

import csv
import importlib.util
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import Callback, RichProgressBar

from conftest import TINY
from normlab.config.errors import ConfigError
from normlab.config.extras import check_extras
from normlab.config.precheck import compose_checked
from normlab.paths import CONFIG_DIR
from normlab.pipeline import train, train_members

LR_MONITOR = "+callbacks.extra.lr_monitor._target_=pytorch_lightning.callbacks.LearningRateMonitor"


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def csv_scalars(run_dir: Path, name: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[name])) for row in csv_rows(run_dir) if row.get(name)]


def assert_same_scalars(logged: list, expected: list) -> None:
    """Same steps, values equal to 1e-6 relative (TensorBoard stores float32)."""
    assert expected, "no rows to compare"
    assert [step for step, _ in logged] == [step for step, _ in expected]
    assert [value for _, value in logged] == pytest.approx(
        [value for _, value in expected], rel=1e-6
    )


def test_tensorboard_writes_event_files_that_read_back_as_metrics_csv(run_training):
    result, run_dir = run_training(*TINY, "logger=tensorboard")
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("train/loss", "val/acc"):
        assert_same_scalars(tensorboard_scalars(run_dir, name), csv_scalars(run_dir, name))
    assert tensorboard_scalars(run_dir, "test/acc")[-1][1] == pytest.approx(result["test/acc"])


def test_an_extra_callback_joins_by_override_and_null_drops_it(run_training, tmp_path):
    _, with_monitor = run_training(*TINY, LR_MONITOR, run_dir=tmp_path / "with")
    lrs = [float(row["lr-SGD"]) for row in csv_rows(with_monitor) if row.get("lr-SGD")]
    assert lrs and set(lrs) == {0.1}  # optimizer=sgd's lr
    _, dropped = run_training(
        *TINY, LR_MONITOR, "callbacks.extra.lr_monitor=null", run_dir=tmp_path / "without"
    )
    assert "lr-SGD" not in csv_rows(dropped)[0]


class ProgressBarSeen(Callback):
    """Records the Trainer's progress bar at fit start."""

    def on_fit_start(self, trainer, pl_module) -> None:
        self.bar = trainer.progress_bar_callback


def test_progress_preset_trains_with_a_rich_progress_bar(compose_cfg, tmp_path):
    seen = ProgressBarSeen()
    result = train(compose_cfg(*TINY, "callbacks=progress"), tmp_path / "run", [seen])
    assert result["status"] == "completed"
    assert isinstance(seen.bar, RichProgressBar)


def test_a_logger_without_save_dir_keeps_its_own_and_one_with_it_gets_the_run_folder(
    run_training, tmp_path
):
    own = tmp_path / "elsewhere"
    _, run_dir = run_training(
        *TINY, "logger=tensorboard", f"+logger.extra.tensorboard.save_dir={own}"
    )
    assert list((own / "tensorboard").glob("events.out.tfevents.*"))
    assert not (run_dir / "tensorboard").exists()


BAD_EXTRAS = [
    (
        "+callbacks.extra.mine._target_=nowhere.Callback",
        "callbacks.extra.mine._target_=nowhere.Callback: cannot import it",
    ),
    (
        "+callbacks.extra.mine._target_=torch.nn.Linear",
        "callbacks.extra.mine._target_=torch.nn.Linear: not a pytorch_lightning Callback",
    ),
    (
        "+logger.extra.mine._target_=pytorch_lightning.callbacks.LearningRateMonitor",
        "not a pytorch_lightning Logger",
    ),
    ("+callbacks.extra.mine=3", "callbacks.extra.mine: not a {_target_: class, arguments}"),
]


@pytest.mark.parametrize(("override", "message"), BAD_EXTRAS)
def test_a_bad_extra_entry_fails_the_precheck_in_one_line(override, message):
    with pytest.raises(ConfigError) as caught:
        compose_checked(str(CONFIG_DIR), "train", [*TINY, override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_extra_entry_is_one_line_and_exit_2_before_training(train_cli, tmp_path):
    override, message = BAD_EXTRAS[0]  # the CLI turns the precheck's error into one line
    done = train_cli(*TINY, override, f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_an_argument_the_class_does_not_take_names_the_key_and_the_arguments(compose_cfg):
    cfg = compose_cfg(*TINY, LR_MONITOR, "+callbacks.extra.lr_monitor.interval=step")
    with pytest.raises(ConfigError, match=r"callbacks\.extra\.lr_monitor: .*'interval'.*takes: "):
        check_extras(cfg)


def test_a_missing_optional_package_names_normlab_extra(compose_cfg, monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "rich") else found(name),
    )
    with pytest.raises(ConfigError, match=r"pip install 'normlab\[tensorboard\]'"):
        check_extras(compose_cfg(*TINY, "logger=tensorboard"))
    with pytest.raises(ConfigError, match=r"pip install 'normlab\[progress\]'"):
        check_extras(compose_cfg(*TINY, "callbacks=progress"))


def test_each_stack_member_gets_its_own_extra_logger_and_the_callbacks_metrics(
    compose_cfg, tmp_path
):
    cfgs = [compose_cfg(*TINY, "logger=tensorboard", LR_MONITOR, f"seed={s}") for s in (0, 1)]
    dirs = [tmp_path / "m0", tmp_path / "m1"]
    train_members(cfgs, dirs, tmp_path / "stack")
    losses = [csv_scalars(run_dir, "train/loss") for run_dir in dirs]
    assert losses[0] != losses[1]  # two seeds, two runs
    for run_dir in dirs:
        assert_same_scalars(
            tensorboard_scalars(run_dir, "train/loss"), csv_scalars(run_dir, "train/loss")
        )
        assert csv_scalars(run_dir, "lr-SGD")  # the stack's LR monitor reached every member
