"""Group cells into configurations: the values of the swept keys, seeds left out."""

from __future__ import annotations

from typing import Any

import pandas as pd

from normlab.analysis.plan import SEED_KEYS, SweepPlan, override_key, override_value
from normlab.sweep import is_result_neutral

IGNORED_PREFIXES = ("hydra.",)  # Hydra's own settings; result-neutral keys: normlab.sweep
NOT_CONFIG = frozenset(
    {"cell", "status", "error", "overrides", "steps", "wall_time_s", "run_dir", "name", "tags"}
)


def _is_configuration_key(key: str) -> bool:
    """Seeds, folders and bookkeeping never define a configuration."""
    return (
        key not in SEED_KEYS
        and key not in NOT_CONFIG
        and not key.startswith(IGNORED_PREFIXES)
        and not is_result_neutral(key)
    )


def _cell_overrides(runs: pd.DataFrame) -> list[dict[str, str]]:
    """Each cell's overrides as {key: value}."""
    return [{override_key(o): override_value(o) for o in cell} for cell in runs["overrides"]]


def swept_keys(runs: pd.DataFrame, plan: SweepPlan) -> list[str]:
    """multirun.yaml's swept keys, plus override keys (else config keys) that differ by cell."""
    keys = list(plan.swept_keys)
    overrides = _cell_overrides(runs)
    if any(overrides):
        for key in dict.fromkeys(key for cell in overrides for key in cell):
            if len({cell.get(key) for cell in overrides}) > 1:
                keys.append(key)
    else:
        present = runs[runs["status"] != "missing"]
        for key in present.columns:
            if "/" not in key and present[key].dropna().astype(str).nunique() > 1:
                keys.append(key)
    return [key for key in dict.fromkeys(keys) if _is_configuration_key(key)]


def _value(row: pd.Series, overrides: dict[str, str], key: str) -> Any:
    """The cell's value of `key`: its override, else its config (a group by its `name`)."""
    if key in overrides:
        return overrides[key]
    for column in (key, f"{key}.name"):
        if column in row.index and not pd.isna(row[column]):
            return row[column]
    return "?"


def label_configurations(runs: pd.DataFrame, plan: SweepPlan) -> tuple[pd.DataFrame, list[str]]:
    """`runs` with a `configuration` column ("norm=batch, activation=relu"), and the keys."""
    keys = swept_keys(runs, plan)
    labels = [
        ", ".join(f"{key}={_value(row, overrides, key)}" for key in keys) or "all cells"
        for (_, row), overrides in zip(runs.iterrows(), _cell_overrides(runs), strict=True)
    ]
    return runs.assign(configuration=labels), keys
