"""The report of an Optuna search: a real 6-trial search with pruning, then its trials table
(completed by objective, then pruned), Optuna's figures, the terminal summary and the trials
table on the W&B report run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from normlab.analysis.report import build_report
from normlab.analysis.search import OBJECTIVE, PRUNED_VALUE

SEARCH = (
    "hparams_search=sgd_tpe",
    "hydra.sweeper.n_trials=6",
    "hydra.sweeper.pruner.n_startup_trials=2",  # after 2 trials, the median pruner stops some
    "data=synthetic",
    "trainer=debug",
    "trainer.max_steps=40",  # 4 validations a trial
)
FIGURES = ("optimization_history", "intermediate_values", "param_importances")


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> tuple[Path, str]:
    """(the sweep folder, the terminal's output) of one real 6-trial search."""
    from conftest import cli_environment

    root = tmp_path_factory.mktemp("search")
    done = subprocess.run(
        [sys.executable, "-m", "normlab.train", "-m", *SEARCH],
        capture_output=True,
        text=True,
        env=cli_environment(root),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [sweep] = (root / "outputs" / "multirun" / "default").iterdir()
    return sweep, done.stdout


def study_of(sweep: Path) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    return optuna.load_study(study_name="default", storage=optuna.storages.JournalStorage(backend))


def test_trials_table_lists_completed_trials_by_objective_then_pruned_ones(search):
    sweep, _ = search
    trials = pd.read_csv(sweep / "report" / "trials.csv")
    study = study_of(sweep)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(trials) == 6 and complete and pruned
    by_value = sorted(complete, key=lambda trial: -trial.value)
    by_last = sorted(pruned, key=lambda trial: -trial.intermediate_values[trial.last_step])
    assert list(trials["trial"]) == [trial.number for trial in by_value + by_last]
    assert list(trials["rank"]) == [1, 2, 3, 4, 5, 6]
    assert list(trials["state"]) == ["complete"] * len(complete) + ["pruned"] * len(pruned)
    for trial, row in zip(by_value + by_last, trials.to_dict("records"), strict=True):
        assert row["optimizer.lr"] == trial.params["optimizer.lr"]  # every digit
        if trial.state == TrialState.PRUNED:
            assert pd.isna(row[OBJECTIVE]) and row["pruned at step"] == trial.last_step
            assert row[PRUNED_VALUE] == pytest.approx(trial.intermediate_values[trial.last_step])
            cell = json.loads((sweep / row["cell"] / "result.json").read_text())
            assert cell["status"] == "pruned"
        else:
            assert row[OBJECTIVE] == pytest.approx(trial.value)
            assert pd.isna(row["pruned at step"])
            assert row["test/acc"] == pytest.approx(
                json.loads((sweep / row["cell"] / "result.json").read_text())["test/acc"]
            )


def test_search_report_has_optunas_figures_as_png_and_pdf(search):
    sweep, _ = search
    report = sweep / "report"
    markdown = (report / "report.md").read_text()
    for name in FIGURES:
        assert (report / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        assert (report / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert f"]({name}.png)" in markdown
    importances = pd.read_csv(report / "importances.csv")
    assert set(importances["parameter"]) == {
        "optimizer.lr",
        "search.one_minus_momentum",
        "regularizer.weight_decay.value",
    }
    assert importances["importance"].sum() == pytest.approx(1.0)


def test_search_report_reads_as_a_search_not_an_ablation(search):
    sweep, stdout = search
    markdown = (sweep / "report" / "report.md").read_text()
    assert markdown.startswith("# Search report:")
    assert "## Trials by objective" in markdown and "## Parameter importances" in markdown
    for ablation in ("Learning-rate range", "## Final", "nan"):
        assert ablation not in markdown
    assert "nan ± nan" not in stdout and "(n=0)" not in stdout
    assert "search default: 6 trials (" in stdout
    best = pd.read_csv(sweep / "report" / "trials.csv").iloc[0]
    assert f"#1 trial {best['trial']} {OBJECTIVE} {best[OBJECTIVE]:.4f}" in stdout


def test_the_trials_table_is_logged_to_the_search_report_run(search, tmp_path, monkeypatch):
    from normlab.analysis.wandb_log import log_report_to_wandb

    sweep, _ = search
    monkeypatch.setenv("WANDB_MODE", "offline")
    report = build_report(sweep, out_dir=tmp_path / "report")
    run_dir = Path(log_report_to_wandb(report))
    [table] = run_dir.rglob("trials_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"][:4] == ["rank", "trial", "state", OBJECTIVE]
    assert [row[1] for row in logged["data"]] == list(report.trials["trial"])
    assert list(run_dir.rglob("importances_*.table.json"))


def test_a_trial_whose_cell_failed_scores_zero_with_the_cells_error_noted(train_cli, tmp_path):
    # a batch larger than the synthetic training set: every cell fails before training; the
    # search runs through main() in-process (the fixture's search is a real process)
    done = train_cli(
        "-m", *SEARCH[:1], *SEARCH[3:], "hydra.sweeper.n_trials=2", "data.batch_size=5000"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [sweep] = (tmp_path / "outputs" / "multirun" / "default").iterdir()
    trials = pd.read_csv(sweep / "report" / "trials.csv")
    assert list(trials["state"]) == ["complete", "complete"]
    assert list(trials[OBJECTIVE]) == [0.0, 0.0]
    assert all(note.startswith("cell failed: DataError") for note in trials["note"])
    markdown = (sweep / "report" / "report.md").read_text()
    assert "## Cells that did not complete" in markdown and "DataError" in markdown
    assert "No importances: the 2 completed trials' `val/acc_best` does not vary" in markdown
    assert "Not drawn: they need completed trials whose scores vary." in markdown
