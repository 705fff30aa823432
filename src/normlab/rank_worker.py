"""`python -m normlab.rank_worker`: a DDP rank > 0 of this node, joining rank 0's run.

Started by `normlab.lit.ddp.RankJoiningLauncher`, never by hand. It takes the resolved config,
the run folder and the thread count from the NORMLAB_JOIN_RUN environment variable (no Hydra,
no command line, so no second run folder and no second sweep), trains its share of every batch
and writes nothing: rank 0 keeps the books.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from normlab.config.schema import TrainConfig
from normlab.lit.ddp import JOIN_ENV


def joined_config(resolved: dict, threads: int) -> DictConfig:
    """Rank 0's resolved config, typed by the schema again (enums, bounds), with its threads."""
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), resolved)
    cfg.threads = threads
    return cfg


def main() -> None:
    """Join the run described by NORMLAB_JOIN_RUN."""
    job = json.loads(os.environ[JOIN_ENV])
    from normlab.pipeline import train

    train(joined_config(job["config"], job["threads"]), Path(job["run_dir"]))


if __name__ == "__main__":
    main()
