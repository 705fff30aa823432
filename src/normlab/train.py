"""`python -m normlab.train [overrides]`: compose the config, train, test, fill the run folder.

Config mistakes are reported in one line before anything starts (exit code 2). Heavy imports
(Lightning) happen only once the config is known to be valid.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from normlab.config.errors import ConfigError
from normlab.config.precheck import compose_checked
from normlab.config.resolvers import register_resolvers
from normlab.config.schema import register_schemas
from normlab.paths import CONFIG_DIR
from normlab.sweep import SWEEP_KEY_ENV, cell_status, sweep_key
from normlab.utils.distributed import is_global_zero, slurm_run_overrides

log = logging.getLogger("normlab")

register_schemas()
register_resolvers()

# Hydra's own command-line flags: with these, Hydra does something other than a plain run
_HYDRA_FLAGS_SKIPPING_PRECHECK = {
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--shell-completion",
    "-sc",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


def fail(kind: str, message: str) -> None:
    """Print one line and exit 2 (a usage error, distinct from a crash)."""
    print(f"normlab: {kind} error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job: a single run, or one cell of a sweep."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return cell_score(run_cell(cfg, run_dir), run_dir)
    from normlab.data.errors import DataError
    from normlab.pipeline import record_failure, train

    try:
        result = train(cfg, run_dir)
    except (ConfigError, DataError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "data"
        record_failure(run_dir, f"{kind}: {exc}")
        fail(kind, str(exc))
    if result["status"] != "completed":
        # diverged: exit 3; preempted (SIGTERM, e.g. SLURM): 143 like a terminated process
        print(
            f"normlab: {result['status']}: {result['error']} (run_dir={run_dir})", file=sys.stderr
        )
        sys.exit(3 if result["status"] == "diverged" else 143)
    best = result["val/acc_best"]
    print(
        f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f} "
        f"val/acc_best={'n/a' if best is None else f'{best:.4f}'} steps={result['steps']} "
        f"time={result['wall_time_s']:.1f}s run_dir={run_dir}"
    )
    return best


def cell_score(best: float | None, run_dir: Path) -> float:
    """A sweep cell's objective: val/acc_best, or 0.0 (the worst accuracy) when the cell failed,
    diverged or was skipped, so a search (Optuna) scores the trial instead of stopping."""
    return best if best is not None and cell_status(run_dir) == "completed" else 0.0


def run_cell(cfg: DictConfig, run_dir: Path) -> float | None:
    """A sweep cell: skipped when already completed; any failure is recorded, never raised,
    so one bad cell does not stop the sweep."""
    import traceback

    from normlab.analysis.progress import sweep_progress
    from normlab.pipeline import archive_attempt, record_failure, train
    from normlab.sweep import CellLock
    from normlab.utils.files import read_json

    status = cell_status(run_dir)
    if status in ("completed", "diverged"):  # a divergence is a result, not an error
        log.info("already %s, skipped: %s", status, run_dir)
        return read_json(run_dir / "result.json").get("val/acc_best")
    if not is_global_zero(cfg.trainer):  # another SLURM task of this cell: rank 0 keeps the books
        return train(cfg, run_dir)["val/acc_best"]
    lock = CellLock(run_dir)
    if not lock.acquire():
        log.warning("another process is running this cell, skipped: %s", run_dir)
        return None
    try:
        if status == "failed":
            archive_attempt(run_dir)
        return train(cfg, run_dir)["val/acc_best"]
    except Exception as exc:  # recorded in the cell, reported by `normlab.report`
        (run_dir / "error.log").write_text(traceback.format_exc())
        record_failure(run_dir, f"{type(exc).__name__}: {exc}")
        log.error("cell failed (%s: %s): %s", type(exc).__name__, exc, run_dir)
        return None
    finally:
        lock.release()
        print(sweep_progress(run_dir.parent), flush=True)


def main() -> None:
    """Console entry: precheck the overrides, then hand over to Hydra."""
    args = sys.argv[1:]
    overrides = [arg for arg in args if not arg.startswith("-")]
    if {"-m", "--multirun"}.intersection(args):
        # the same command line finds the same sweep folder again (resume, skip finished cells)
        os.environ.setdefault(SWEEP_KEY_ENV, sweep_key(overrides))
    if not _HYDRA_FLAGS_SKIPPING_PRECHECK.intersection(args):
        try:
            compose_checked(str(CONFIG_DIR), "train", overrides)
        except ConfigError as exc:
            fail("config", str(exc))
    sys.argv += slurm_run_overrides(args)  # the SLURM tasks of one run share its folder
    hydra_main()


if __name__ == "__main__":
    main()
