"""What a sweep was asked to run, read from the multirun.yaml Hydra saves at its root."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

SEED_KEYS = frozenset({"seed", "seed_init", "seed_data"})


@dataclass
class SweepPlan:
    """The sweep's jobs as Hydra's basic sweeper expands them, and the keys it sweeps."""

    jobs: list[tuple[str, ...]] | None = None  # None: no multirun.yaml, or not expandable
    swept_keys: list[str] = field(default_factory=list)  # seed keys included
    note: str = ""  # why `jobs` is None, when it is

    @property
    def expected_cells(self) -> int | None:
        """How many cells the sweep should produce, when known."""
        return None if self.jobs is None else len(self.jobs)


def override_key(override: str) -> str:
    """`+norm=batch` -> `norm`: the key an override string sets."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(override: str) -> str:
    """`norm=batch` -> `batch`."""
    return override.split("=", 1)[1] if "=" in override else ""


def read_plan(sweep_dir: Path) -> SweepPlan:
    """Expand multirun.yaml's task overrides (plus `hydra.sweeper.params`) into the job list."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return SweepPlan(note="no multirun.yaml: the expected cell count is unknown")
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        params = hydra_cfg.sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += list(hydra_cfg.overrides.task)
        return _expand(arguments, str(hydra_cfg.sweeper.get("_target_", "")))
    except Exception as exc:  # a damaged multirun.yaml must not stop the report
        return SweepPlan(note=f"multirun.yaml unreadable ({type(exc).__name__}: {exc})")


def _expand(arguments: list[str], sweeper: str) -> SweepPlan:
    """The cartesian product the basic sweeper launches, in its job order."""
    choices: dict[str, list[str]] = {}
    swept: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            swept.append(override_key(key))
            if not override.is_discrete_sweep():
                return SweepPlan(swept_keys=swept, note=f"{key} is not a discrete sweep")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    if sweeper and not sweeper.endswith("BasicSweeper"):
        return SweepPlan(swept_keys=swept, note=f"sweeper {sweeper} chooses its own jobs")
    return SweepPlan(jobs=list(itertools.product(*choices.values())), swept_keys=swept)
