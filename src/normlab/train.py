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

from normlab.cell import run_cell
from normlab.config.errors import ConfigError
from normlab.config.precheck import compose_checked
from normlab.config.resolvers import register_resolvers
from normlab.config.schema import register_schemas
from normlab.paths import CONFIG_DIR, CONFIG_SEARCH_PATH
from normlab.reuse import REUSE_ENV
from normlab.sweep import (
    SWEEP_KEY_ENV,
    SWEPT_KEYS_ENV,
    CellLock,
    StoppedBySignal,
    cell_score,
    record_failure,
    sweep_key,
    swept_keys,
)
from normlab.utils.process_exit import freeze_heap_for_exit
from normlab.utils.ranks import is_global_zero, set_nccl_error_handling
from normlab.utils.slurm import slurm_run_overrides

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
    "--experimental-rerun",
}
# a user's own config folder, searched after normlab's (Hydra's flag; the precheck reads it too)
_CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def fail(kind: str, message: str) -> None:
    """Print one line and exit 2 (a usage error, distinct from a crash)."""
    print(f"normlab: {kind} error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_SEARCH_PATH, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job: a single run, or one cell of a sweep."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return cell_score(run_cell(cfg, run_dir), run_dir)
    from normlab.data.errors import DataError
    from normlab.pipeline import train

    # the lease sweep cells use: a second run started in this folder would write the same
    # metrics.csv (Lightning's CSV writer crashes on it) and checkpoint
    lock = CellLock(run_dir) if is_global_zero(cfg.trainer) else None
    if lock is not None and not lock.acquire():
        fail(
            "config",
            f"hydra.run.dir={run_dir}: another normlab run is using this folder "
            f"({lock.holder()}); wait for it to end or pick another hydra.run.dir",
        )
    try:
        result = train(cfg, run_dir)
    except (ConfigError, DataError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "data"
        record_failure(run_dir, f"{kind}: {exc}")
        fail(kind, str(exc))
    finally:
        if lock is not None:
            lock.release()
    if result["status"] != "completed":
        # diverged: exit 3; preempted: the signal's status (143 SIGTERM, 130 SIGINT), like a
        # process that signal ended
        print(
            f"normlab: {result['status']}: {result['error']} (run_dir={run_dir})", file=sys.stderr
        )
        if result["status"] == "diverged":
            sys.exit(3)
        raise StoppedBySignal(result.get("signal", "SIGTERM"))
    best = result["val/acc_best"]
    print(
        f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f} "
        f"val/acc_best={'n/a' if best is None else f'{best:.4f}'} steps={result['steps']} "
        f"time={result['wall_time_s']:.1f}s run_dir={run_dir}"
    )
    return best


def parse_command_line(args: list[str]) -> tuple[str | None, list[str]]:
    """The `--config-dir` folder (None without one) and the overrides of a command line."""
    config_dir, overrides, remaining = None, [], iter(args)
    for arg in remaining:
        flag, has_value, value = arg.partition("=")
        if flag in _CONFIG_DIR_FLAGS:
            config_dir = value if has_value else next(remaining, None)
        elif not arg.startswith("-"):
            overrides.append(arg)
    return config_dir, overrides


def main() -> None:
    """Console entry: precheck the overrides, then hand over to Hydra."""
    if "--no-reuse" in sys.argv:  # normlab's own flag: train every cell of a sweep again
        sys.argv.remove("--no-reuse")
        os.environ[REUSE_ENV] = "0"
    args = sys.argv[1:]
    user_config_dir, overrides = parse_command_line(args)
    multirun = bool({"-m", "--multirun"}.intersection(args))
    set_nccl_error_handling()
    if multirun:
        # the same command line finds the same sweep folder again (resume, skip finished cells)
        os.environ.setdefault(SWEEP_KEY_ENV, sweep_key(overrides))
        os.environ.setdefault(SWEPT_KEYS_ENV, ",".join(swept_keys(overrides)))
    if not _HYDRA_FLAGS_SKIPPING_PRECHECK.intersection(args):
        try:
            compose_checked(
                str(CONFIG_DIR),
                "train",
                overrides,
                multirun=multirun,
                user_config_dir=user_config_dir,
            )
        except ConfigError as exc:
            fail("config", str(exc))
    sys.argv += slurm_run_overrides(args)  # the SLURM tasks of one run share its folder
    hydra_main()
    freeze_heap_for_exit()


if __name__ == "__main__":
    main()
