"""Group cells into configurations: the values of the swept keys, seeds left out.

A configuration's label is short, the swept keys' values ("relu, batch, lr=0.1"): a config
group shows its option, any other key its last name and value (numbers to 4 significant
digits). Its full overrides ("activation=relu, norm=batch, optimizer.lr=0.1") go beside it in the
report's table of configurations; where two configurations would share a short label, every
label is the full one.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from normlab.analysis.plan import SEED_KEYS, SweepPlan, override_key, override_value
from normlab.sweep import is_result_neutral

IGNORED_PREFIXES = ("hydra.",)  # Hydra's own settings; result-neutral keys: normlab.sweep
NOT_CONFIG = frozenset(
    {"cell", "status", "error", "overrides", "steps", "wall_time_s", "run_dir", "name", "tags"}
)
ALL_CELLS = "all cells"


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


def _number(value: Any) -> float | None:
    """`value` as a number, None when it is not one (a bool is not a number here)."""
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def short_part(key: str, value: Any) -> str:
    """One key's part of a short label: a group's option (`relu`), else `lr=0.0002231`."""
    number = _number(value)
    if "." not in key and number is None:
        return str(value)
    name = key.rsplit(".", 1)[-1]
    return f"{name}={number:.4g}" if number is not None else f"{name}={value}"


def _labels(runs: pd.DataFrame, keys: list[str], short: bool) -> list[str]:
    """Each cell's label over `keys` (short, or the full `key=value` overrides)."""
    labels = []
    for (_, row), overrides in zip(runs.iterrows(), _cell_overrides(runs), strict=True):
        values = [(key, _value(row, overrides, key)) for key in keys]
        parts = [short_part(k, v) if short else f"{k}={v}" for k, v in values]
        labels.append(", ".join(parts) or ALL_CELLS)
    return labels


def configuration_labels(runs: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[str]]:
    """Each cell's (short label, full overrides) over `keys`; the short labels are the full ones
    where shortening would merge two configurations."""
    full = _labels(runs, keys, short=False)
    short = _labels(runs, keys, short=True)
    if len(set(zip(short, full, strict=True))) != len(set(short)):
        return full, full
    return short, full


def label_configurations(runs: pd.DataFrame, plan: SweepPlan) -> tuple[pd.DataFrame, list[str]]:
    """`runs` with a short `configuration` label ("relu, batch") and its full `overrides_label`
    ("activation=relu, norm=batch"), and the swept keys."""
    keys = swept_keys(runs, plan)
    short, full = configuration_labels(runs, keys)
    return runs.assign(configuration=short, overrides_label=full), keys
