"""Data: IDX parsing, checksummed downloads (MNIST, CIFAR) from a local server, splits,
preprocessing, batches."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from normlab.config.schema import Preprocess
from normlab.data.batches import ResidentBatches
from normlab.data.cifar import CIFAR_DATASETS, load_cifar_dataset
from normlab.data.download import download
from normlab.data.errors import DataError
from normlab.data.idx import read_idx
from normlab.data.preprocess import Preprocessor
from normlab.data.sources import IDX_DATASETS, IdxDataset, load_idx_dataset


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(folder, n_train=50, n_test=20, seed=0) -> dict[str, str]:
    """Four small gzip IDX files shaped like MNIST; returns {filename: md5}."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for stem, array in arrays.items():
        payload = gzip.compress(idx_bytes(array))
        (folder / f"{stem}.gz").write_bytes(payload)
        md5[f"{stem}.gz"] = hashlib.md5(payload).hexdigest()
    return md5


@pytest.fixture
def http_server(tmp_path):
    """A static file server on 127.0.0.1 serving tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


def test_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)


def test_truncated_idx_names_the_file(tmp_path):
    path = tmp_path / "cut.idx"
    path.write_bytes(idx_bytes(np.zeros((5, 28, 28)))[:-10])
    with pytest.raises(DataError, match=r"cut\.idx.*truncated"):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28))))[:-30])
    with pytest.raises(DataError, match=r"cut\.gz"):
        read_idx(path)


def test_download_verifies_md5_and_tries_mirrors(http_server, tmp_path):
    base, served = http_server
    md5 = write_fake_mnist(served)
    name = "train-labels-idx1-ubyte.gz"
    dead_mirror = "http://127.0.0.1:9/"  # nothing listens on the discard port
    path = download(name, md5[name], [dead_mirror, base], tmp_path / "got")
    assert path.read_bytes() == (served / name).read_bytes()


def test_download_rejects_a_checksum_mismatch(http_server, tmp_path):
    base, served = http_server
    write_fake_mnist(served)
    with pytest.raises(DataError, match="checksum mismatch"):
        download("t10k-labels-idx1-ubyte.gz", "0" * 32, [base], tmp_path / "got")
    assert not list((tmp_path / "got").iterdir())  # no half-file left behind


def test_mnist_loader_downloads_then_loads(http_server, tmp_path, monkeypatch):
    base, served = http_server
    md5 = write_fake_mnist(served, n_train=40, n_test=10)
    monkeypatch.setitem(IDX_DATASETS, "mnist", IdxDataset("mnist", (base,), md5))
    raw = load_idx_dataset("mnist", None, tmp_path / "data", download_ok=True)
    assert raw.x_pool.shape == (40, 1, 28, 28) and raw.x_test.shape == (10, 1, 28, 28)
    assert (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_bad_labels_are_reported(tmp_path):
    folder = tmp_path / "bad"
    write_fake_mnist(folder)
    labels = np.full(50, 12)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match="label 12"):
        load_idx_dataset("fashion_mnist", str(folder), tmp_path, download_ok=False)


@pytest.mark.parametrize("method", list(Preprocess))
def test_preprocessing_is_fitted_on_train_only(method):
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 255, (500, 1, 4, 4))
    prep = Preprocessor(method, 255.0, per_feature=True, zca_epsilon=1e-3).fit(train)
    out = prep.transform(train).reshape(500, -1)
    if method is Preprocess.scale:
        assert out.max() <= 1.0
    if method is Preprocess.standardize:
        np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(out.std(0), 1, atol=1e-3)
    if method is Preprocess.whiten:
        np.testing.assert_allclose(np.cov(out, rowvar=False, bias=True), np.eye(16), atol=0.05)


def test_batches_cover_an_epoch_and_reshuffle_by_epoch():
    x, y = torch.arange(100).float()[:, None], torch.arange(100)
    batches = ResidentBatches(x, y, 10, shuffle=True, drop_last=True, seed=3)
    first = torch.cat([b for _, b in batches])
    assert sorted(first.tolist()) == list(range(100))
    assert torch.equal(first, torch.cat([b for _, b in batches]))  # same epoch, same order
    batches.set_epoch(1)
    assert not torch.equal(first, torch.cat([b for _, b in batches]))


def test_ranks_split_each_global_batch():
    x, y = torch.arange(60).float()[:, None], torch.arange(60)
    whole = [b for _, b in ResidentBatches(x, y, 6, shuffle=True, drop_last=True, seed=1)]
    halves = [
        [
            b
            for _, b in ResidentBatches(
                x, y, 6, shuffle=True, drop_last=True, seed=1, rank=r, world_size=2
            )
        ]
        for r in (0, 1)
    ]
    for batch, first, second in zip(whole, *halves, strict=True):
        assert torch.equal(batch, torch.cat([first, second]))


def write_fake_cifar(folder, name="cifar10", per_file=8, seed=0) -> str:
    """A small archive in the official format of `name` (python pickles of uint8 rows of 3072
    and label lists, inside the official folder); returns its MD5."""
    spec = CIFAR_DATASETS[name]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / spec.archive, "w:gz") as archive:
        for member in (*spec.train_files, *spec.test_files, "batches.meta"):
            batch = {
                b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                spec.label_key: rng.integers(0, spec.num_classes, per_file).tolist(),
                b"batch_label": member.encode(),
            }
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{spec.folder}/{member}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return hashlib.md5((folder / spec.archive).read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_downloads_the_archive_then_reads_it_in_place(
    name, http_server, tmp_path, monkeypatch
):
    base, served = http_server
    md5 = write_fake_cifar(served, name)
    spec = CIFAR_DATASETS[name]
    monkeypatch.setitem(CIFAR_DATASETS, name, replace(spec, md5=md5, mirrors=(base,)))
    raw = load_cifar_dataset(name, None, tmp_path / "data", download_ok=True)
    train_files = len(spec.train_files)
    assert raw.x_pool.shape == (8 * train_files, 3, 32, 32) and raw.x_test.shape == (8, 3, 32, 32)
    assert raw.x_pool.dtype == np.uint8 and raw.num_classes == spec.num_classes
    archive = tmp_path / "data" / name / spec.archive
    assert archive.read_bytes() == (served / spec.archive).read_bytes()
    (served / spec.archive).unlink()  # a second load reads the cached archive, no download
    again = load_cifar_dataset(name, None, tmp_path / "data", download_ok=True)
    np.testing.assert_array_equal(again.x_pool, raw.x_pool)


def test_cifar_download_with_a_wrong_checksum_leaves_nothing(http_server, tmp_path, monkeypatch):
    base, served = http_server
    write_fake_cifar(served)
    spec = replace(CIFAR_DATASETS["cifar10"], md5="0" * 32, mirrors=(base,))
    monkeypatch.setitem(CIFAR_DATASETS, "cifar10", spec)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_cifar_dataset("cifar10", None, tmp_path / "data", download_ok=True)
    assert not list((tmp_path / "data" / "cifar10").iterdir())


def test_cifar_reads_torchvisions_extracted_folder(tmp_path):
    write_fake_cifar(tmp_path / "archive")
    with tarfile.open(tmp_path / "archive" / CIFAR_DATASETS["cifar10"].archive) as archive:
        archive.extractall(tmp_path / "torchvision", filter="data")
    raw = load_cifar_dataset("cifar10", str(tmp_path / "torchvision"), tmp_path, False)
    assert raw.x_pool.shape == (40, 3, 32, 32)


def test_a_cifar_pickle_that_builds_anything_but_arrays_is_refused(tmp_path):
    spec = CIFAR_DATASETS["cifar10"]
    folder = tmp_path / spec.folder
    folder.mkdir()
    for member in (*spec.train_files, *spec.test_files):
        (folder / member).write_bytes(pickle.dumps({b"data": os.getcwd, b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR batch .*refused"):
        load_cifar_dataset("cifar10", str(tmp_path), tmp_path, False)


def test_missing_cifar_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"cifar100 not found .*normlab\.data\.fetch cifar100"):
        load_cifar_dataset("cifar100", None, tmp_path, download_ok=False)


def test_data_cifar10_trains_a_vgg_on_an_archive_of_the_real_format(
    http_server, tmp_path, monkeypatch, run_training
):
    base, served = http_server
    md5 = write_fake_cifar(served, per_file=24)
    monkeypatch.setitem(
        CIFAR_DATASETS, "cifar10", replace(CIFAR_DATASETS["cifar10"], md5=md5, mirrors=(base,))
    )
    result, _ = run_training(
        "data=cifar10",
        f"data.root={tmp_path / 'cifar'}",
        "data.val_size=20",
        "data.batch_size=10",
        "model=vgg",
        "model.width=4",
        "model.convs_per_stage=[1,1,2]",
        "trainer=debug",
    )
    assert result["status"] == "completed" and result["steps"] == 20
    assert result["data"] == "cifar10"
    assert (tmp_path / "cifar" / "cifar-10-python.tar.gz").is_file()


def test_fetch_command_downloads_cifar_once(http_server, tmp_path, monkeypatch):
    from normlab.data.fetch import ensure_dataset

    base, served = http_server
    md5 = write_fake_cifar(served, "cifar100")
    spec = replace(CIFAR_DATASETS["cifar100"], md5=md5, mirrors=(base,))
    monkeypatch.setitem(CIFAR_DATASETS, "cifar100", spec)
    path = ensure_dataset("cifar100", tmp_path)
    assert path == tmp_path / "cifar100" / spec.archive and path.is_file()
    (served / spec.archive).unlink()
    assert ensure_dataset("cifar100", tmp_path) == path  # found, not fetched again
