"""Where things live: the packaged config folder, the data cache, a run's latest checkpoint
(no heavy imports: the stacked launcher's parent process reads these)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# conf/ ships inside the package (pyproject.toml maps it to normlab.conf): Hydra reads it as
# CONFIG_SEARCH_PATH, and CONFIG_DIR is the same folder on disk, in a checkout or a wheel
CONFIG_PACKAGE = "normlab.conf"
CONFIG_SEARCH_PATH = f"pkg://{CONFIG_PACKAGE}"
CONFIG_DIR = Path(str(resources.files(CONFIG_PACKAGE)))
# the source checkout normlab runs from, when it runs from one (git records its commit)
REPO_DIR = Path(__file__).resolve().parents[2]
DATA_DIR_ENV = "NORMLAB_DATA_DIR"
ROOT_ENV = "NORMLAB_ROOT"


def is_checkout(folder: Path) -> bool:
    """Whether `folder` is normlab's source checkout (not the folder a wheel was installed in)."""
    return (folder / "src" / "normlab" / "paths.py").is_file() and (folder / "conf").is_dir()


def data_cache_dir() -> Path:
    """Where datasets are downloaded and generated: $NORMLAB_DATA_DIR, else $NORMLAB_ROOT/data,
    else the user cache ($XDG_CACHE_HOME/normlab, by default ~/.cache/normlab)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser() / "data"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "normlab"


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run's latest checkpoint lives (what a re-run resumes from)."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"
