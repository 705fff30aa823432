"""The command line: a real run through `python -m normlab.train`, and one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import normlab


def test_cli_run_prints_accuracy_and_leaves_one_run_folder(cli_env, tmp_path):
    done = normlab("normlab.train", "data=synthetic", "trainer=debug", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "test/acc=" in done.stdout
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    for name in (
        "config.yaml",
        "provenance.json",
        "metrics.csv",
        "result.json",
        ".hydra/overrides.yaml",
    ):
        assert (run_dir / name).is_file(), name


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["norm=nope"], "norm/nope"),
        (["optimizer.lr=-1"], "optimizer.lr"),
        (
            ["-m", "seed=0,1", "regularizer=[dropout]", "regularizer.dropout.p=1.5"],
            "regularizer.dropout.p",
        ),
        (["data.root=/nonexistent", "trainer=debug"], "make data"),
    ],
)
def test_cli_error_is_one_line_with_exit_code_2(args, key, cli_env):
    done = normlab("normlab.train", *args, env=cli_env)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("normlab: ") and key in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_every_command_is_a_console_script_with_a_real_help():
    bin_dir = Path(sys.executable).parent
    for command in ("normlab-report", "normlab-bench", "normlab-reproduce"):
        done = subprocess.run([bin_dir / command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage:" in done.stdout, command
    done = subprocess.run([bin_dir / "normlab-train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("normlab-train: normalization ablations")
    assert "== Presets (-m experiment=NAME) ==" in done.stdout
    assert "norm: batch, group, layer, noisy_batch, none" in done.stdout
