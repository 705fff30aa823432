"""`python -m normlab.train [overrides]`: compose the config, train, test, fill the run folder.

Config mistakes are reported in one line before anything starts (exit code 2). Heavy imports
(Lightning) happen only once the config is known to be valid.
"""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from normlab.config.errors import ConfigError
from normlab.config.precheck import compose_checked
from normlab.config.schema import register_schemas
from normlab.paths import CONFIG_DIR

log = logging.getLogger("normlab")

register_schemas()
# A short random id makes run folders started in the same second distinct. Cached, so every
# read of hydra.run.dir / hydra.sweep.dir in one process (and Hydra's copied sweep cache) agrees.
OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)

# Hydra's own command-line flags: with these, Hydra does something other than a plain run
_HYDRA_FLAGS_SKIPPING_PRECHECK = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                                  "--shell-completion", "-sc", "--config-path", "-cp",
                                  "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def fail(kind: str, message: str) -> None:
    """Print one line and exit 2 (a usage error, distinct from a crash)."""
    print(f"normlab: {kind} error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job: train; a config or data error fails this run (and only this cell in a sweep)."""
    from normlab.data.errors import DataError
    from normlab.pipeline import record_failure, train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = train(cfg, run_dir)
    except (ConfigError, DataError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "data"
        record_failure(run_dir, f"{kind}: {exc}")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("%s error: %s", kind, exc)  # recorded in result.json; the sweep goes on
            return None
        fail(kind, str(exc))
    best = result["val/acc_best"]
    print(f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f} "
          f"val/acc_best={'n/a' if best is None else f'{best:.4f}'} steps={result['steps']} "
          f"time={result['wall_time_s']:.1f}s run_dir={run_dir}")
    return result["val/acc_best"]


def main() -> None:
    """Console entry: precheck the overrides, then hand over to Hydra."""
    args = sys.argv[1:]
    if not _HYDRA_FLAGS_SKIPPING_PRECHECK.intersection(args):
        overrides = [arg for arg in args if not arg.startswith("-")]
        try:
            compose_checked(str(CONFIG_DIR), "train", overrides)
        except ConfigError as exc:
            fail("config", str(exc))
    hydra_main()


if __name__ == "__main__":
    main()
