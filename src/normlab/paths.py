"""Where things live: the repository's config folder, a run's latest checkpoint (no heavy
imports: the stacked launcher's parent process reads these)."""

from __future__ import annotations

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_DIR / "conf"


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run's latest checkpoint lives (what a re-run resumes from)."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"
