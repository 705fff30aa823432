"""`python -m normlab.report`: seed aggregation, left-out cells, figures, a real multirun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from normlab.analysis.collect import collect
from normlab.analysis.plan import read_plan
from normlab.analysis.progress import sweep_progress
from normlab.analysis.report import build_report
from normlab.analysis.tables import steps_to_target, value_at_marks
from normlab.report import main

VAL_STEPS = [100, 200, 300, 400]  # steps done; metrics.csv holds the 0-based index (step - 1)
BATCH_ACC = {0: 0.90, 1: 0.92, 2: 0.97}
BATCH_CURVES = {0: [0.5, 0.7, 0.85, 0.9], 1: [0.4, 0.6, 0.8, 0.92], 2: [0.6, 0.82, 0.9, 0.95]}
NONE_ACC = {0: 0.80, 1: 0.84}
NONE_CURVE = [0.3, 0.5, 0.6, 0.75]


def metrics_csv(val_acc: list[float], instruments: bool = True) -> str:
    """A sparse Lightning CSV: train rows, val rows and (optionally) instrument rows."""
    rows = []
    for step, acc in zip(VAL_STEPS, val_acc, strict=False):  # a killed run logs fewer
        rows.append({"epoch": 0, "step": step - 1, "train/loss": 1.0 - acc})
        rows.append({"epoch": 0, "step": step - 1, "val/acc": acc, "val/loss": 1.0 - acc})
        if instruments:
            rows.append(
                {
                    "epoch": 0,
                    "step": step - 1,
                    "act/layer3/unit/p15": -2.0 + acc,
                    "act/layer3/unit/p50": acc,
                    "act/layer3/unit/p85": 2.0 + acc,
                    "act/layer2/p50": acc,
                    "grad/layer1/norm": 0.1 * acc,
                    "grad/layer2/norm": 0.2 * acc,
                    "grad/head/norm": 0.3 * acc,
                }
            )
    return pd.DataFrame(rows).to_csv(index=False)


def write_cell(
    sweep: Path,
    number: int,
    seed: int,
    norm: str,
    result: dict | None,
    val_acc: list[float] | None,
    instruments: bool = True,
) -> Path:
    """One cell folder as a normlab run writes it."""
    cell = sweep / str(number)
    (cell / ".hydra").mkdir(parents=True)
    overrides = [f"seed={seed}", f"norm={norm}"]
    (cell / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {
        "name": "ablation",
        "seed": seed,
        "norm": {"name": norm, "momentum": 0.1},
        "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1},
        "data": {"name": "synthetic"},
    }
    (cell / "config.yaml").write_text(yaml.safe_dump(config))
    if result is not None:
        (cell / "result.json").write_text(json.dumps({"seed": seed, **result}))
    if val_acc is not None:
        (cell / "metrics.csv").write_text(metrics_csv(val_acc, instruments))
    return cell


def write_multirun(sweep: Path, task: list[str]) -> None:
    """The part of Hydra's multirun.yaml the report reads."""
    sweeper = {
        "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "max_batch_size": None,
        "params": None,
    }
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"sweeper": sweeper, "overrides": {"hydra": [], "task": task}}})
    )


def completed(acc: float) -> dict:
    return {
        "status": "completed",
        "test/acc": acc,
        "test/loss": 1 - acc,
        "steps": 400,
        "wall_time_s": 10.0,
    }


@pytest.fixture
def sweep(tmp_path) -> Path:
    """seed=0,1,2,3 x norm=batch,none: 5 completed, 1 failed, 1 diverged, 1 without result."""
    root = tmp_path / "multirun" / "ablation" / "sweep-1"
    root.mkdir(parents=True)
    write_multirun(root, ["seed=0,1,2,3", "norm=batch,none"])
    for seed in range(3):
        write_cell(root, 2 * seed, seed, "batch", completed(BATCH_ACC[seed]), BATCH_CURVES[seed])
    for seed in range(2):
        write_cell(root, 2 * seed + 1, seed, "none", completed(NONE_ACC[seed]), NONE_CURVE)
    write_cell(
        root, 5, 2, "none", {"status": "failed", "error": "config: norm.eps must be > 0"}, None
    )
    write_cell(root, 6, 3, "batch", None, BATCH_CURVES[0][:2])  # killed mid-run
    write_cell(
        root,
        7,
        3,
        "none",
        {"status": "diverged", "test/acc": 0.1, "steps": 150, "error": "loss is nan at step 150"},
        NONE_CURVE,
    )
    return root


def section(markdown: str, heading: str) -> str:
    """The text of one `## heading` section of report.md."""
    return markdown.split(f"## {heading}")[1].split("\n## ")[0]


def test_summary_matches_numpy_on_completed_seeds_only(sweep):
    summary = build_report(sweep).summary.set_index("configuration")
    assert list(summary.index) == ["batch", "none"]
    for label, accuracies in (("batch", BATCH_ACC), ("none", NONE_ACC)):
        values = np.array(list(accuracies.values()))
        row = summary.loc[label]
        assert row["n_seeds"] == len(values)
        assert row["test_acc_mean"] == pytest.approx(values.mean())
        assert row["test_acc_std"] == pytest.approx(values.std(ddof=1))
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        assert row["test_acc_ci95_high"] - row["test_acc_mean"] == pytest.approx(half)
    assert summary.loc["batch", "not_in_means"] == 1  # the killed cell
    assert summary.loc["none", "not_in_means"] == 2  # failed and diverged
    assert (sweep / "report" / "summary.csv").stat().st_size > 0


def test_failed_diverged_and_unfinished_cells_are_listed_with_their_error(sweep):
    markdown = (build_report(sweep).out_dir / "report.md").read_text()
    left_out = section(markdown, "Cells left out of the means")
    assert "failed" in left_out and "config: norm.eps must be > 0" in left_out
    assert "diverged" in left_out and "loss is nan at step 150" in left_out
    assert "incomplete" in left_out
    assert "8 found of 8 expected" in markdown
    assert "5 completed, 1 failed, 1 diverged" in markdown


def test_figures_are_written_as_non_empty_png(sweep):
    report = build_report(sweep)
    for name in ("val_acc.png", "activation_percentiles.png", "grad_norms.png"):
        path = report.out_dir / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000, name
        assert f"]({name})" in (report.out_dir / "report.md").read_text()


def test_figures_of_instruments_the_sweep_did_not_turn_on_are_left_out(tmp_path):
    write_cell(tmp_path, 0, 0, "batch", completed(0.9), BATCH_CURVES[0], instruments=False)
    report = build_report(tmp_path)
    markdown = (report.out_dir / "report.md").read_text()
    assert "Skipped" not in markdown and "Not drawn" not in markdown
    assert "activations" not in report.figures and "grad_norms" not in report.figures
    assert (report.out_dir / "val_acc.png").stat().st_size > 0


def test_steps_to_target_is_the_first_logged_step_at_or_above_it(sweep):
    plan = read_plan(sweep)
    _, curves = collect(sweep, plan)
    reached = steps_to_target(curves, 0.8)
    assert reached["0"] == 300 and reached["2"] == 300 and reached["4"] == 200
    assert np.isnan(reached["1"])  # norm=none peaks at 0.75
    summary = build_report(sweep, target_acc=0.8).summary.set_index("configuration")
    assert summary.loc["batch", "steps_to_target_mean"] == pytest.approx(800 / 3)
    assert summary.loc["batch", "target_reached"] == 3
    assert summary.loc["none", "target_reached"] == 0


def test_accuracy_at_a_mark_is_the_last_value_logged_by_then(sweep):
    _, curves = collect(sweep, read_plan(sweep))
    at = value_at_marks(curves, [250, 400, 1000])
    assert at.loc["0", 250] == 0.7 and at.loc["0", 400] == 0.9
    assert np.isnan(at.loc["0", 1000])  # the run ended at step 400
    summary = build_report(sweep, marks=[250]).summary.set_index("configuration")
    assert summary.loc["batch", "val_acc@250"] == pytest.approx(np.mean([0.7, 0.6, 0.82]))


def test_broken_files_and_missing_jobs_are_reported_not_raised(tmp_path):
    write_multirun(tmp_path, ["seed=0,1,2", "norm=batch"])
    write_cell(tmp_path, 0, 0, "batch", completed(0.9), BATCH_CURVES[0])
    empty_metrics = write_cell(tmp_path, 1, 1, "batch", completed(0.9), None)
    (empty_metrics / "metrics.csv").write_text("")
    bad_result = write_cell(tmp_path, 2, 2, "batch", None, BATCH_CURVES[1])
    (bad_result / "result.json").write_text('{"status": "compl')
    runs = build_report(tmp_path).runs.set_index("cell")
    assert runs.loc["1", "status"] == "broken" and "metrics.csv" in runs.loc["1", "error"]
    assert runs.loc["2", "status"] == "broken" and "result.json" in runs.loc["2", "error"]

    shutil.rmtree(tmp_path / "2")  # the job never started
    runs = build_report(tmp_path).runs.set_index("cell")
    assert runs.loc["(2)", "status"] == "missing" and runs.loc["(2)", "seed"] == 2
    assert "(2)" in section((tmp_path / "report" / "report.md").read_text(), "Cells left out")


def test_progress_line_counts_done_failed_and_unfinished_cells(sweep):
    line = sweep_progress(sweep)
    assert line.startswith("sweep sweep-1: 7/8 cells done (5 completed, 1 diverged, 1 failed)")
    assert "1 running or killed" in line and "elapsed 0:00:" in line


def test_cli_logs_the_report_to_an_offline_wandb_run(sweep, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main([str(sweep), "--marks", "100,400", "--wandb"]) == 0
    [run_dir] = (sweep / "report" / "wandb").glob("offline-run-*")
    assert list(run_dir.rglob("*.png")) and list(run_dir.rglob("summary*.table.json"))
    assert "report.md" in capsys.readouterr().out


def test_cli_on_a_folder_without_cells_says_so_and_exits_2(sweep, capsys):
    assert main([str(sweep.parent)]) == 2  # the experiment folder that holds the sweeps
    assert "pass one sweep's folder" in capsys.readouterr().err
    assert not (sweep.parent / "report").exists()


def test_report_of_a_real_tiny_multirun(tiny_sweep, tmp_path):
    shutil.copytree(tiny_sweep, tmp_path, dirs_exist_ok=True)  # the session's sweep, left as is
    [sweep] = (tmp_path / "outputs" / "multirun" / "default").iterdir()
    report = build_report(sweep, target_acc=0.5)
    assert list(report.summary["configuration"]) == ["batch", "none"]
    assert list(report.summary["n_seeds"]) == [2, 2]
    assert set(report.runs["status"]) == {"completed"}
    assert report.marks and (report.out_dir / "val_acc.png").stat().st_size > 0
