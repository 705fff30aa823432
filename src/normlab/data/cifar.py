"""CIFAR-10 and CIFAR-100 from the official "python version" archives (Krizhevsky 2009).

The archive is downloaded once, MD5-checked, into `<data dir>/<name>/` and read in place (no
extraction); a folder holding torchvision's extracted copy (`cifar-10-batches-py/`) works too.
Each batch file is a pickle of {b"data": uint8 array (N, 3072), b"labels" or b"fine_labels":
list}; it is read with an unpickler that builds nothing but numpy arrays and plain containers.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab.data.download import download
from normlab.data.errors import DataError
from normlab.data.sources import RawData


@dataclass(frozen=True)
class CifarDataset:
    """Where one CIFAR archive lives, what it holds and how its labels are keyed."""

    archive: str
    md5: str
    folder: str  # the folder inside the archive (and torchvision's extracted copy)
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    mirrors: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)


CIFAR_DATASETS = {
    "cifar10": CifarDataset(
        archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
    ),
    "cifar100": CifarDataset(
        archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",  # the 100 classes (b"coarse_labels": the 20 superclasses)
        num_classes=100,
    ),
}

# what a CIFAR pickle may build: numpy arrays (numpy 1 and 2 spell the module differently) and
# bytes (a protocol-2 pickle written by Python 3 builds them with _codecs.encode)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that refuses every global but numpy's array constructors."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to build {module}.{name}")
        return super().find_class(module, name)


def _read_batch(raw: bytes, where: str, spec: CifarDataset) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
        images = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[spec.label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: not a CIFAR batch ({type(exc).__name__}: {exc}); delete it and fetch again"
        ) from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise DataError(
            f"{where}: holds {images.shape} images and {len(labels)} labels, expected "
            "(N, 3072) and N; delete it and fetch again"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{where}: label {int(labels.max())} outside 0..{spec.num_classes - 1}; "
            "the file is corrupt, delete it and fetch again"
        )
    return images.reshape(-1, 3, 32, 32), labels


def _read_members(source: Path, spec: CifarDataset, names: tuple[str, ...]) -> list[bytes]:
    """The bytes of batch files `names`, from the archive or from an extracted folder."""
    try:
        if source.is_dir():
            return [(source / name).read_bytes() for name in names]
        with tarfile.open(source, "r:gz") as archive:
            return [archive.extractfile(f"{spec.folder}/{name}").read() for name in names]
    except (OSError, EOFError, KeyError, tarfile.TarError) as exc:
        raise DataError(
            f"{source}: unreadable CIFAR data ({exc}); delete it and fetch it again"
        ) from None


def locate_cifar(name: str, root: str | None, data_dir: Path) -> Path | None:
    """The archive or extracted folder of `name` in `root` (else `<data_dir>/<name>`), or None."""
    spec = CIFAR_DATASETS[name]
    folder = Path(root) if root else data_dir / name
    for candidate in (folder / spec.archive, folder / spec.folder):
        if candidate.exists():
            return candidate
    return None


def fetch_cifar(name: str, folder: Path, mirrors: tuple[str, ...] | None = None) -> Path:
    """Download `name`'s official archive into `folder`, verifying its MD5."""
    spec = CIFAR_DATASETS[name]
    return download(spec.archive, spec.md5, mirrors or spec.mirrors, folder, timeout=120)


def load_cifar_dataset(
    name: str, root: str | None, data_dir: Path, download_ok: bool, mirror: str | None = None
) -> RawData:
    """CIFAR-10 / CIFAR-100 as (N, 3, 32, 32) uint8 images, downloading when allowed."""
    spec = CIFAR_DATASETS[name]
    source = locate_cifar(name, root, data_dir)
    if source is None and download_ok:
        mirrors = (mirror, *spec.mirrors) if mirror else spec.mirrors
        source = fetch_cifar(name, Path(root) if root else data_dir / name, mirrors)
    if source is None:
        where = root or data_dir / name
        raise DataError(
            f"{name} not found in {where}; fix: allow data.download=true with network access "
            f"(or `python -m normlab.data.fetch {name}`), or put {spec.archive} there"
        )
    splits = []
    for names in (spec.train_files, spec.test_files):
        parts = [
            _read_batch(raw, f"{source}:{member}", spec)
            for member, raw in zip(names, _read_members(source, spec, names), strict=True)
        ]
        splits.append(
            (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        )
    (x_pool, y_pool), (x_test, y_test) = splits
    return RawData(x_pool, y_pool, x_test, y_test, num_classes=spec.num_classes, max_value=255.0)
