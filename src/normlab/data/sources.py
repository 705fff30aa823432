"""Raw datasets as numpy arrays: (Fashion-)MNIST IDX files, sklearn digits, MNIST-1D, synthetic
(CIFAR: cifar.py; a user's own data: custom.py).

Each loader returns a `RawData` with a training pool and a test set; the data module
(datamodule.py) carves the validation set out of the pool with the split seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab.data.download import download
from normlab.data.errors import DataError
from normlab.data.idx import read_idx


@dataclass
class RawData:
    """A training pool and a test set, images as (N, C, H, W) or vectors as (N, D); and a
    validation set where the source gives one (else it is carved out of the pool)."""

    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    max_value: float  # largest raw input value, for preprocess=scale
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass(frozen=True)
class IdxDataset:
    """Where an IDX dataset lives, with the official MD5 of each gzip file."""

    folder_name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]
    system_dirs: tuple[str, ...] = ()
    how_to_get: str = ""


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

IDX_DATASETS = {
    "fashion_mnist": IdxDataset(
        folder_name="fashion_mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get="run `make data` (Debian/Ubuntu: `apt-get install dataset-fashion-mnist`), "
        "or set data.root to a folder holding the four IDX files",
    ),
    "mnist": IdxDataset(
        folder_name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        how_to_get="allow data.download=true with network access, or copy the four official "
        "MNIST IDX files into the folder and set data.root",
    ),
}


def _find_idx_file(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def locate_idx_files(name: str, root: str | None, data_dir: Path) -> dict[str, Path] | None:
    """The four IDX files of `name` from the first place that has them all, else None."""
    spec = IDX_DATASETS[name]
    places = [Path(root)] if root else [data_dir / spec.folder_name, *map(Path, spec.system_dirs)]
    for place in places:
        found = {stem: _find_idx_file([place], stem) for stem in IDX_FILES}
        if all(found.values()):
            return found
    return None


def fetch_idx_files(name: str, folder: Path, mirrors: tuple[str, ...] | None = None) -> None:
    """Download the four official gzip files of `name` into `folder`, verifying their MD5."""
    spec = IDX_DATASETS[name]
    for filename, md5 in spec.md5.items():
        download(filename, md5, mirrors or spec.mirrors, folder)


def _check_images_and_labels(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{where}: images have shape {images.shape[1:]}, expected 28x28; "
            "the file is not (Fashion-)MNIST, fetch it again"
        )
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels; fetch both again")
    if labels.size and labels.max() > 9:
        raise DataError(
            f"{where}: label {int(labels.max())} outside 0..9; the labels file is corrupt"
        )


def load_idx_dataset(
    name: str, root: str | None, data_dir: Path, download_ok: bool, mirror: str | None = None
) -> RawData:
    """Load (Fashion-)MNIST from its IDX files, downloading them when allowed."""
    spec = IDX_DATASETS[name]
    files = locate_idx_files(name, root, data_dir)
    if files is None and download_ok:
        target = Path(root) if root else data_dir / spec.folder_name
        mirrors = (mirror, *spec.mirrors) if mirror else spec.mirrors
        fetch_idx_files(name, target, mirrors)
        files = locate_idx_files(name, str(target), data_dir)
    if files is None:
        looked = root or ", ".join([str(data_dir / spec.folder_name), *spec.system_dirs])
        raise DataError(f"{name} files not found (looked in {looked}); fix: {spec.how_to_get}")
    x_pool, y_pool = (
        read_idx(files["train-images-idx3-ubyte"]),
        read_idx(files["train-labels-idx1-ubyte"]),
    )
    x_test, y_test = (
        read_idx(files["t10k-images-idx3-ubyte"]),
        read_idx(files["t10k-labels-idx1-ubyte"]),
    )
    _check_images_and_labels(x_pool, y_pool, str(files["train-images-idx3-ubyte"].parent))
    _check_images_and_labels(x_test, y_test, str(files["t10k-images-idx3-ubyte"].parent))
    return RawData(
        x_pool[:, None], y_pool, x_test[:, None], y_test, num_classes=10, max_value=255.0
    )


def load_digits_dataset(test_size: int, split_seed: int) -> RawData:
    """scikit-learn's bundled 8x8 digits; the test set is drawn with the split seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target
    order = np.random.default_rng(split_seed).permutation(len(labels))
    test, pool = order[:test_size], order[test_size:]
    return RawData(
        images[pool, None],
        labels[pool],
        images[test, None],
        labels[test],
        num_classes=10,
        max_value=16.0,
    )


def load_mnist1d_dataset(num_samples: int, split_seed: int, data_dir: Path) -> RawData:
    """MNIST-1D generated locally (cached as .npz); never the package's download path."""
    cache = data_dir / "mnist1d" / f"mnist1d_n{num_samples}_seed{split_seed}.npz"
    if not cache.is_file():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples, args.seed = num_samples, split_seed
        made = make_dataset(args)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".part.npz")
        np.savez(partial, x=made["x"], y=made["y"], x_test=made["x_test"], y_test=made["y_test"])
        partial.replace(cache)
    stored = np.load(cache)
    return RawData(
        stored["x"].astype(np.float32),
        stored["y"],
        stored["x_test"].astype(np.float32),
        stored["y_test"],
        num_classes=10,
        max_value=float(np.abs(stored["x"]).max()),
    )


def load_synthetic_dataset(
    num_samples: int, num_features: int, num_classes: int, test_size: int, split_seed: int
) -> RawData:
    """Overlapping Gaussian class clusters: learnable, not trivially separable."""
    rng = np.random.default_rng(split_seed)
    centres = rng.normal(0.0, 1.0, size=(num_classes, num_features))
    labels = rng.integers(0, num_classes, size=num_samples)
    inputs = (centres[labels] + rng.normal(0.0, 1.0, size=(num_samples, num_features))) * 3.0 + 5.0
    inputs = inputs.astype(np.float32)
    return RawData(
        inputs[test_size:],
        labels[test_size:],
        inputs[:test_size],
        labels[:test_size],
        num_classes=num_classes,
        max_value=float(np.abs(inputs).max()),
    )
