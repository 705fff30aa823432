"""`python -m normlab.data.fetch NAME`: make a dataset's files available (used by `make data`).

Fashion-MNIST: already present -> nothing; else Debian's `dataset-fashion-mnist` when apt-get
can run as root; else the official files, MD5-checked, into <data cache>/fashion_mnist.
MNIST: the official files, MD5-checked, into <data cache>/mnist. CIFAR-10 / CIFAR-100: the
official archive, MD5-checked, into <data cache>/cifar10 (cifar100). The data cache is the
config's default `paths.data_dir` (normlab.paths.data_cache_dir: ~/.cache/normlab unless
$NORMLAB_DATA_DIR, $NORMLAB_ROOT or $XDG_CACHE_HOME say otherwise).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from normlab.data.cifar import CIFAR_DATASETS, fetch_cifar, locate_cifar
from normlab.data.errors import DataError
from normlab.data.sources import IDX_DATASETS, fetch_idx_files, locate_idx_files
from normlab.paths import data_cache_dir


def _apt_install(package: str) -> bool:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    for attempt in (
        ["apt-get", "install", "-y", "-q", package],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", package],
    ):
        done = subprocess.run(attempt, capture_output=True, text=True, check=False)
        if done.returncode == 0 and attempt[1] == "install":
            return True
    return False


def ensure_dataset(name: str, data_dir: Path) -> Path:
    """Return where `name`'s files are (IDX folder, CIFAR archive), fetching them if needed."""
    if name in CIFAR_DATASETS:
        return locate_cifar(name, None, data_dir) or fetch_cifar(name, data_dir / name)
    found = locate_idx_files(name, None, data_dir)
    if found is None and name == "fashion_mnist" and _apt_install("dataset-fashion-mnist"):
        found = locate_idx_files(name, None, data_dir)
    if found is None:
        target = data_dir / IDX_DATASETS[name].folder_name
        fetch_idx_files(name, target)
        found = locate_idx_files(name, str(target), data_dir)
    return next(iter(found.values())).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted([*IDX_DATASETS, *CIFAR_DATASETS]))
    parser.add_argument("--data-dir", type=Path, default=data_cache_dir())
    args = parser.parse_args()
    try:
        folder = ensure_dataset(args.name, args.data_dir)
    except DataError as exc:
        sys.exit(f"normlab: data error: {exc}")
    print(f"{args.name}: {folder}")


if __name__ == "__main__":
    main()
