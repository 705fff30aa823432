"""Bring your own data: `data=custom data._target_=pkg.module.fn`, from a module outside the
package (tests/user_data.py). Datasets become the same resident tensors as the built-in sets
(preprocessing, batch size, stacked sweeps); a LightningDataModule streams, one network per run.
Mistakes the precheck can decide are lines of tests/helpers.py INVALID."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from normlab.config.errors import ConfigError
from normlab.data.datamodule import ResidentDataModule, build_datamodule
from normlab.data.errors import DataError
from normlab.data.streaming import StreamingDataModule

USER_DATA = Path(__file__).with_name("user_data.py")
CUSTOM = ["data=custom", "trainer=debug"]


class CountBatches(pl.Callback):
    """A user's own callback: provenance.json must name this file too."""

    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


@pytest.mark.parametrize("function", ["tensors", "pairs"])
def test_custom_datasets_train_as_resident_tensors(function, run_training):
    result, _ = run_training(*CUSTOM, f"data._target_=user_data.{function}")
    assert result["status"] == "completed" and result["steps"] == 20
    assert result["data"] == "custom" and result["test/acc"] > 0.5  # clusters 3 sigma apart


def test_tensor_and_item_datasets_of_the_same_data_give_the_same_run(run_training, tmp_path):
    results = [
        run_training(*CUSTOM, f"data._target_=user_data.{f}", run_dir=tmp_path / f)[0]
        for f in ("tensors", "pairs")
    ]
    keep = ("test/acc", "test/loss", "val/acc_best", "steps")
    assert [{k: r[k] for k in keep} for r in results] == [{k: results[0][k] for k in keep}] * 2


def test_preprocessing_batch_size_and_the_users_splits_apply(compose_cfg):
    cfg = compose_cfg(
        *CUSTOM,
        "data._target_=user_data.tensors",
        "data.preprocess=standardize",
        "data.per_feature=true",
        "data.batch_size=25",
        "data.train_size=500",
    )
    datamodule = build_datamodule(cfg.data, Path(cfg.paths.data_dir), 0)
    assert isinstance(datamodule, ResidentDataModule)
    datamodule.setup()
    x, y = datamodule.tensors["train"]
    assert x.shape == (500, 12) and y.dtype == torch.int64 and datamodule.num_classes == 3
    torch.testing.assert_close(x.mean(0), torch.zeros(12), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(12), atol=1e-2, rtol=0)
    assert [len(datamodule.tensors[s][1]) for s in ("val", "test")] == [150, 150]
    batch_x, _ = next(iter(datamodule.train_dataloader()))
    assert batch_x.shape == (1, 25, 12)  # one member, batches of 25


def test_the_function_is_called_with_data_kwargs(compose_cfg):
    cfg = compose_cfg(*CUSTOM, "data._target_=user_data.tensors", "+data.kwargs.features=7")
    datamodule = build_datamodule(cfg.data, Path(cfg.paths.data_dir), 0)
    datamodule.setup()
    assert datamodule.input_shape == (7,)


def test_a_datamodule_streams_its_own_batches(run_training, compose_cfg):
    result, _ = run_training(*CUSTOM, "data._target_=user_data.datamodule")
    assert result["status"] == "completed" and result["steps"] == 20
    cfg = compose_cfg(*CUSTOM, "data._target_=user_data.datamodule")
    datamodule = build_datamodule(cfg.data, Path(cfg.paths.data_dir), [0])
    assert isinstance(datamodule, StreamingDataModule)
    datamodule.setup()
    assert datamodule.input_shape == (12,) and datamodule.num_classes == 3
    batch_x, _ = next(iter(datamodule.train_dataloader()))
    assert batch_x.shape == (20, 12)  # its own batch size, not data.batch_size


def test_a_streaming_datamodule_refuses_a_stack_in_one_line(compose_cfg):
    cfg = compose_cfg(*CUSTOM, "data._target_=user_data.datamodule")
    with pytest.raises(
        ConfigError, match=r"^data\._target_=user_data.datamodule: [^\n]*not a stack"
    ):
        build_datamodule(cfg.data, Path(cfg.paths.data_dir), [0, 1])


def test_a_streamed_label_out_of_range_fails_before_training(run_training):
    with pytest.raises(DataError, match=r"^data\._target_=.*label 5, outside 0\.\.2[^\n]*$"):
        run_training(*CUSTOM, "data._target_=user_data.datamodule", "+data.kwargs.label_offset=5")


def test_gradcheck_asks_for_datasets_when_the_data_streams(compose_cfg):
    from normlab.gradcheck import run_gradcheck

    with pytest.raises(ConfigError, match="return \\(train, val, test\\) datasets"):
        run_gradcheck(compose_cfg(*CUSTOM, "data._target_=user_data.datamodule"))


def test_provenance_records_the_users_data_and_callback_code(run_training):
    result, run_dir = run_training(
        *CUSTOM,
        "data._target_=user_data.tensors",
        f"+callbacks.extra.count._target_={__name__}.CountBatches",
    )
    assert result["status"] == "completed"
    records = json.loads((run_dir / "provenance.json").read_text())["user_code"]
    assert set(records) == {"data._target_", "callbacks.extra.count._target_"}  # mlp: normlab's
    for key, path, module in (
        ("data._target_", USER_DATA, "user_data"),
        ("callbacks.extra.count._target_", Path(__file__), __name__),
    ):
        assert records[key]["module"] == module
        assert Path(records[key]["file"]) == path.resolve()
        assert records[key]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_custom_data_trains_as_a_stack_in_a_stacked_sweep(train_cli, tmp_path):
    done = train_cli(  # the stack trains in a worker process, importing user_data itself
        "-m",
        "hydra/launcher=stacked",
        "hydra.launcher.n_jobs=1",  # one process: the two cells in one stack
        "seed=0,1",
        "data=custom",
        "data._target_=user_data.tensors",
        "trainer=debug",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stack of 2" in done.stdout + done.stderr, done.stdout + done.stderr
    results = sorted((tmp_path / "outputs" / "multirun").rglob("result.json"))
    assert [json.loads(r.read_text())["status"] for r in results] == ["completed"] * 2
