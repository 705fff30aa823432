"""The report of an Optuna search (hparams_search=...): its trials by objective, the best one,
what each searched parameter mattered, and Optuna's own figures of the study.

The study is read back from the storage the sweep used (multirun.yaml's `hydra.sweeper`: the
sweep folder's optuna.journal unless `storage` names another); each trial's cell folder (the
trial's `cell` attribute) adds the cell's test/acc and, for a failed cell, why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from normlab.analysis.markdown import cell_text

OBJECTIVE = "val/acc_best"  # what each search job returns (normlab.train.hydra_main)
INTERMEDIATE = "val/acc"  # what a trial reports at each validation (normlab.callbacks.pruning)
PRUNED_VALUE = f"{INTERMEDIATE} when pruned"
SWEEPER = "NormlabOptunaSweeper"
TOP_LINES = 3  # best trials printed when a search ends
STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1}  # then the others (failed, running, waiting)


class NoStudy(ValueError):
    """The sweep ran a search, but its study cannot be read back."""


def _sweeper(sweep_dir: Path):
    """multirun.yaml's `hydra.sweeper` node (None without the file)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(path), "hydra.sweeper")


def is_search(sweep_dir: Path) -> bool:
    """Whether the sweep was run by normlab's Optuna sweeper."""
    try:
        sweeper = _sweeper(sweep_dir)
    except Exception:  # an unreadable multirun.yaml: the ablation report says so
        return False
    return sweeper is not None and str(sweeper.get("_target_", "")).endswith(SWEEPER)


def load_study(sweep_dir: Path):
    """The sweep's optuna.Study, from the storage its sweeper used."""
    import optuna

    from hydra_plugins.normlab_optuna.sweeper import storage_spec
    from normlab.callbacks.pruning import open_storage

    sweeper = _sweeper(sweep_dir)
    name = str(OmegaConf.select(sweeper, "study_name", default="normlab"))
    spec = storage_spec(OmegaConf.select(sweeper, "storage", default=None), Path(sweep_dir))
    try:
        return optuna.load_study(study_name=name, storage=open_storage(spec)), spec
    except Exception as exc:
        raise NoStudy(f"study {name} in {spec}: {type(exc).__name__}: {exc}") from exc


def _cell_outcomes(runs: pd.DataFrame, sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Each cell's test/acc, status and error, by its absolute folder."""
    return {
        str((sweep_dir / row["cell"]).resolve()): row
        for row in runs.to_dict("records")
        if row.get("status") != "missing"
    }


def trials_table(study, runs: pd.DataFrame, sweep_dir: Path) -> pd.DataFrame:
    """One row per trial, best first: completed trials by objective, then pruned trials by the
    last val/acc they reported, then the others. Parameters keep their full values."""
    maximize = study.direction.name == "MAXIMIZE"
    outcomes = _cell_outcomes(runs, sweep_dir)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        cell = outcomes.get(str(Path(trial.user_attrs.get("cell", "-")).resolve()), {})
        status = cell.get("status", "")
        pruned = trial.state.name == "PRUNED"
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                OBJECTIVE: trial.value if trial.state.name == "COMPLETE" else None,
                "test/acc": cell.get("test/acc"),
                **trial.params,
                "pruned at step": trial.last_step if pruned else None,
                PRUNED_VALUE: trial.intermediate_values.get(trial.last_step) if pruned else None,
                # a failed or diverged cell is a completed trial scoring 0.0: say which
                "note": cell_text(f"cell {status}: {cell.get('error', '')}", 120)
                if status not in ("", "completed", "pruned")
                else "",
                "cell": cell.get("cell", ""),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    value = pd.to_numeric(table[OBJECTIVE], errors="coerce").fillna(
        pd.to_numeric(table[PRUNED_VALUE], errors="coerce")
    )
    table = table.assign(
        _state=table["state"].str.upper().map(STATE_ORDER).fillna(len(STATE_ORDER)),
        _value=-value if maximize else value,
    ).sort_values(["_state", "_value", "trial"], na_position="last", kind="stable")
    table = table.drop(columns=["_state", "_value"]).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def scores_vary(study) -> bool:
    """Whether the completed trials scored differently (else no parameter explains anything)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return len({trial.value for trial in complete}) > 1


def importances(study) -> tuple[pd.DataFrame | None, str]:
    """Optuna's parameter importances (its default evaluator, over completed trials), and a
    note: how they were computed, or why there are none."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not scores_vary(study):
        return None, (
            f"No importances: the {len(complete)} completed trials' `{OBJECTIVE}` does not vary"
        )
    try:
        found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        return None, f"No importances from {len(complete)} completed trials ({exc})"
    table = pd.DataFrame({"parameter": list(found), "importance": list(found.values())})
    note = (
        f"Optuna's `get_param_importances` (its default evaluator) over the {len(complete)} "
        f"completed trials: each parameter's share of what explains `{OBJECTIVE}`, summing to 1"
    )
    if len(complete) < 10:
        note += f"; with {len(complete)} completed trials, a rough guide only"
    return table, note


@dataclass
class SearchReport:
    """What a search's report shows, for report.md, the CLI and the W&B upload."""

    sweep_dir: Path
    out_dir: Path
    runs: pd.DataFrame  # one row per cell (a trial's folder)
    study_name: str
    storage: str
    direction: str
    trials: pd.DataFrame
    importances: pd.DataFrame | None
    importance_note: str
    searched: dict[str, str] = field(default_factory=dict)  # key: its distribution in words
    figures: dict[str, Path | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """`<experiment name>/<sweep folder>`, the way outputs/multirun/ nests them."""
        return f"{self.sweep_dir.parent.name}/{self.sweep_dir.name}"

    @property
    def state_counts(self) -> dict[str, int]:
        """Trials by state, completed first, e.g. {"complete": 2, "pruned": 4}."""
        # the trials table is sorted completed first, then pruned, then the others
        return self.trials["state"].value_counts(sort=False).to_dict() if len(self.trials) else {}

    @property
    def best(self) -> dict[str, Any] | None:
        """The best completed trial's row."""
        complete = self.trials[self.trials["state"] == "complete"] if len(self.trials) else []
        return complete.iloc[0].to_dict() if len(complete) else None

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables a W&B report run logs, by name."""
        tables = {"trials": self.trials, "cells": self.runs.drop(columns=["overrides"])}
        if self.importances is not None:
            tables["importances"] = self.importances
        return tables

    @property
    def captions(self) -> dict[str, str]:
        """Each figure's heading, by key."""
        from normlab.analysis.search_figures import SEARCH_FIGURES

        return {key: SEARCH_FIGURES[key].heading for key in self.figures}

    @property
    def wandb_config(self) -> dict[str, Any]:
        """What the W&B report run records in its config."""
        return {
            "sweep_dir": str(self.sweep_dir),
            "study_name": self.study_name,
            "direction": self.direction,
            "objective": OBJECTIVE,
            "searched": list(self.searched),
        }

    def summary_lines(self) -> list[str]:
        """The terminal's summary: trials by state, then the best few trials."""
        counts = ", ".join(f"{n} {state}" for state, n in self.state_counts.items())
        lines = [f"search {self.study_name}: {len(self.trials)} trials ({counts})"]
        for row in self.trials.head(TOP_LINES).to_dict("records"):
            params = ", ".join(f"{key}={_short(row[key])}" for key in self.searched if key in row)
            if row["state"] == "pruned":
                outcome = f"pruned at step {row['pruned at step']:.0f} ({PRUNED_VALUE} "
                outcome += f"{row[PRUNED_VALUE]:.4f})"
            else:
                outcome = f"{OBJECTIVE} {row[OBJECTIVE]:.4f}"
            lines.append(f"  #{row['rank']} trial {row['trial']} {outcome}: {params}")
        return lines


def describe(distribution) -> str:
    """An Optuna distribution in words: `log-uniform in [0.0001, 1]`, `one of 32, 64`."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(str(choice) for choice in distribution.choices)
    kind = "integers" if isinstance(distribution, IntDistribution) else "uniform"
    scale = "log-" if distribution.log else ""
    return f"{scale}{kind} in [{distribution.low:g}, {distribution.high:g}]"


def searched_space(study) -> dict[str, str]:
    """Each searched parameter, in the order trials were asked them, and its distribution."""
    space: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False):
        for key, distribution in trial.distributions.items():
            space.setdefault(key, describe(distribution))
    return space


def _short(value: Any) -> str:
    """A number to 4 significant digits; anything else as it is."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def build_search_report(sweep_dir: Path, out_dir: Path, runs: pd.DataFrame) -> SearchReport:
    """Read the study, tabulate, draw; write report.md, trials.csv, importances.csv, cells.csv
    and the figures (PNG + PDF) into `out_dir`."""
    from normlab.analysis.search_figures import SEARCH_FIGURES
    from normlab.analysis.search_markdown import render_search_markdown

    study, spec = load_study(sweep_dir)
    found, note = importances(study)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SearchReport(
        sweep_dir=sweep_dir,
        out_dir=out_dir,
        runs=runs,
        study_name=study.study_name,
        storage=spec,
        direction=study.direction.name.lower(),
        trials=trials_table(study, runs, sweep_dir),
        importances=found,
        importance_note=note,
        searched=searched_space(study),
    )
    for key, spec_ in SEARCH_FIGURES.items():
        report.figures[key] = spec_.plot(study, out_dir / spec_.file_name)
    report.trials.to_csv(out_dir / "trials.csv", index=False)
    if found is not None:
        found.to_csv(out_dir / "importances.csv", index=False)
    runs.assign(overrides=runs["overrides"].map(" ".join)).to_csv(
        out_dir / "cells.csv", index=False
    )
    (out_dir / "report.md").write_text(render_search_markdown(report))
    return report
