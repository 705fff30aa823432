"""Seeds: one user seed, from which init and data-order seeds are derived unless given."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 31-bit seed for `purpose`, independent of Python's hash randomization."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class RunSeeds:
    init: int  # weight initialization
    data: int  # batch order, dropout and augmentation draws


def run_seeds(cfg) -> RunSeeds:
    """Explicit seed_init / seed_data win (0 included); otherwise derive them from `seed`."""
    init = cfg.seed_init if cfg.seed_init is not None else derive_seed(cfg.seed, "init")
    data = cfg.seed_data if cfg.seed_data is not None else derive_seed(cfg.seed, "data")
    return RunSeeds(init=init, data=data)
