"""normlab as an installed library: a wheel built from the repository carries its configs and
trains from any folder, writing outputs under the working directory, not into a checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from normlab.paths import REPO_DIR

# what a wheel is built from (a copy: building in the checkout would leave build/ behind)
SOURCES = ("pyproject.toml", "README.md", "src", "conf")


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    """Run a command to completion, output captured, failing the test on a non-zero exit."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """normlab's wheel, built without network from a copy of the repository."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        origin = REPO_DIR / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source))
    [built] = out.glob("normlab-*.whl")
    return built


def test_the_wheel_carries_every_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"normlab/conf/{path.relative_to(REPO_DIR / 'conf').as_posix()}"
        for path in (REPO_DIR / "conf").rglob("*.yaml")
    }
    assert "normlab/conf/train.yaml" in expected and expected <= names
    assert "hydra_plugins/normlab_stacked/stacked_launcher.py" in names


def test_installed_wheel_trains_from_any_folder_with_outputs_there(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    run(
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "-q",
        "install",
        "--no-deps",
        "--target",
        str(target),
        str(wheel),
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NORMLAB_ROOT", "NORMLAB_DATA_DIR", "PYTHONPATH")
    }
    env.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "cache"), WANDB_MODE="offline")
    where = run(
        sys.executable,
        "-c",
        "import normlab, normlab.paths as p; print(normlab.__file__); print(p.CONFIG_DIR)",
        cwd=work,
        env=env,
    ).stdout.split()
    assert all(Path(line).is_relative_to(target) for line in where), where

    done = run(
        str(target / "bin" / "normlab-train"),
        "data=digits",
        "trainer.max_steps=20",
        cwd=work,
        env=env,
    )
    assert "test/acc=" in done.stdout
    [run_dir] = (work / "outputs" / "runs").iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 20
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["git_commit"] is None  # no checkout: nothing to ask git about


def test_outputs_default_to_the_working_directory_and_data_to_the_user_cache(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from normlab.paths import CONFIG_DIR

    for name in ("NORMLAB_ROOT", "NORMLAB_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def paths(*overrides: str):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=list(overrides)).paths

    assert paths().output_dir == str(tmp_path / "outputs")
    assert paths().data_dir == str(tmp_path / "cache" / "normlab")
    assert paths("paths.output_dir=/elsewhere").output_dir == "/elsewhere"
    monkeypatch.setenv("NORMLAB_ROOT", str(tmp_path / "scratch"))
    assert paths().output_dir == str(tmp_path / "scratch" / "outputs")
    assert paths().data_dir == str(tmp_path / "scratch" / "data")
    monkeypatch.setenv("NORMLAB_DATA_DIR", str(tmp_path / "datasets"))
    assert paths().data_dir == str(tmp_path / "datasets")
    assert paths("paths.data_dir=/mine").data_dir == "/mine"
