"""A grid that grows keeps what it has (normlab.reuse): a sweep reuses the finished cells of an
earlier sweep with the same result-relevant config, trained by the same code on the same kind
of CPU kernels, and trains only the new ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import normlab
from normlab.reuse import FinishedCells, finished_cells, reuse, reuse_if_found

GRID = ["-m", "data=synthetic", "trainer=debug", "threads=1"]


def sweep_cells(root: Path) -> dict[Path, dict[str, dict]]:
    """Each sweep folder's cells: cell name -> result.json."""
    found: dict[Path, dict[str, dict]] = {}
    for result in root.glob("outputs/multirun/*/*/*/result.json"):
        found.setdefault(result.parent.parent, {})[result.parent.name] = json.loads(
            result.read_text()
        )
    return found


def test_growing_a_sweep_by_a_seed_trains_only_the_new_cell(train_cli, tmp_path):
    def sweep(*args: str):
        """`normlab-train ARGS` through main() in this process, which, as a fresh process would,
        finds the finished cells anew (a process indexes them once: normlab.reuse)."""
        finished_cells.cache_clear()
        return train_cli(*GRID, *args)

    first = sweep("seed=0,1")
    assert first.returncode == 0, first.stderr[-3000:]
    grown = sweep("seed=0,1,2")
    assert grown.returncode == 0, grown.stderr[-3000:]
    sweeps = sweep_cells(tmp_path)
    assert len(sweeps) == 2
    grown_dir = next(d for d, cells in sweeps.items() if len(cells) == 3)
    cells = sweeps[grown_dir]
    reused = {name: r for name, r in cells.items() if "reused_from" in r}
    assert sorted(r["seed"] for r in reused.values()) == [0, 1]  # seed 2 trained
    assert [r["seed"] for r in cells.values() if "reused_from" not in r] == [2]
    for name, result in reused.items():
        cell, original = grown_dir / name, Path(result["reused_from"])
        assert original.parent != grown_dir and result["status"] == "completed"
        assert (cell / "metrics.csv").read_text() == (original / "metrics.csv").read_text()
        assert (cell / "config.yaml").is_file() and (cell / "provenance.json").is_file()
    report = (grown_dir / "report" / "report.md").read_text()
    assert "3 completed" in report
    reused_section = report.split("## Reused cells")[1].split("\n## ")[0]
    assert "2 of 3 cells were not trained by this sweep" in reused_section
    for result in reused.values():  # each reused cell's origin is listed
        assert f"`{result['reused_from']}`" in reused_section
    again = sweep("seed=0,1,2", "trainer.max_steps=21")  # another budget: nothing to reuse
    assert again.returncode == 0, again.stderr[-3000:]
    [third] = [c for d, c in sweep_cells(tmp_path).items() if d not in sweeps]
    assert len(third) == 3 and not [r for r in third.values() if "reused_from" in r]


@pytest.mark.slow  # two sweeps through the CLI: ~10 s (the rule in-process: below)
def test_no_reuse_trains_every_cell_again(cli_env, tmp_path):
    assert normlab("normlab.train", *GRID, "seed=0", env=cli_env).returncode == 0
    done = normlab("normlab.train", *GRID, "seed=0,1", "--no-reuse", env=cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    grown = next(cells for cells in sweep_cells(tmp_path).values() if len(cells) == 2)
    assert not [r for r in grown.values() if "reused_from" in r]


def finished_cell(run_training, tmp_path, name: str):
    """A finished cell folder under tmp_path/outputs/multirun/x/sweep/<name>, its config."""
    from omegaconf import OmegaConf

    run_dir = tmp_path / "outputs" / "multirun" / "x" / "sweep" / name
    result, _ = run_training("data=synthetic", "trainer=debug", run_dir=run_dir)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    return run_dir, config, result


def test_a_cell_trained_by_other_code_is_not_reused_and_the_line_says_why(
    run_training, tmp_path, caplog
):
    original, config, _ = finished_cell(run_training, tmp_path, "cell")
    provenance = json.loads((original / "provenance.json").read_text())
    provenance["cpu_kernels"] = "DEFAULT" if provenance["cpu_kernels"] != "DEFAULT" else "AVX2"
    (original / "provenance.json").write_text(json.dumps(provenance))
    new = tmp_path / "outputs" / "multirun" / "x" / "grown" / "cell"
    with caplog.at_level("INFO", logger="normlab"):
        assert reuse_if_found(config, new) is None
    assert "trained with another cpu_kernels" in caplog.text
    assert not new.exists()


def test_a_reused_cell_reads_as_a_normal_cell_folder(run_training, tmp_path):
    original, config, result = finished_cell(run_training, tmp_path, "cell")
    found, why = FinishedCells(tmp_path / "outputs" / "multirun").match(config, tmp_path / "n")
    assert found == original and why == ""
    new = tmp_path / "outputs" / "multirun" / "x" / "grown" / "cell"
    reused = reuse(original, new)
    assert reused == {**result, "reused_from": str(original)}
    assert json.loads((new / "result.json").read_text()) == reused
    for name in ("metrics.csv", "config.yaml", "provenance.json"):
        assert (new / name).read_bytes() == (original / name).read_bytes()
    assert sys.platform != "win32"  # links: POSIX file systems


def test_with_reuse_off_a_match_is_trained_again(run_training, tmp_path, monkeypatch):
    _, config, _ = finished_cell(run_training, tmp_path, "cell")
    new = tmp_path / "outputs" / "multirun" / "x" / "grown" / "cell"
    monkeypatch.setenv("NORMLAB_REUSE", "0")  # what --no-reuse sets
    assert reuse_if_found(config, new) is None and not new.exists()
