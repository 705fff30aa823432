"""The command line: a real run through `python -m normlab.train`, and one-line errors."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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


# mistakes of each kind: the precheck (one run, a sweep), a data error inside the run
CLI_ERRORS = [
    (["norm=nope"], "norm/nope"),
    (["optimizer.lr=-1"], "optimizer.lr"),
    (
        ["-m", "seed=0,1", "regularizer=[dropout]", "regularizer.dropout.p=1.5"],
        "regularizer.dropout.p",
    ),
    (["data.root=/nonexistent", "trainer=debug"], "make data"),
]
# the ones that also run as real processes (tests/test_invalid_cli.py runs more of the kinds)
IN_A_PROCESS = (2, 3)


def assert_one_line_at_the_end(done, key: str) -> None:
    """Exit 2; the last line of stderr is normlab's, naming `key`; no traceback."""
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("normlab: ") and key in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "key"), CLI_ERRORS)
def test_cli_error_is_one_line_with_exit_code_2(args, key, train_cli):
    assert_one_line_at_the_end(train_cli(*args), key)


@pytest.mark.parametrize(("args", "key"), [CLI_ERRORS[i] for i in IN_A_PROCESS])
def test_cli_error_is_one_line_with_exit_code_2_in_a_real_process(args, key, cli_env):
    assert_one_line_at_the_end(normlab("normlab.train", *args, env=cli_env), key)


def test_every_command_is_a_console_script_with_a_real_help():
    bin_dir = Path(sys.executable).parent
    commands = ("normlab-train", "normlab-report", "normlab-bench", "normlab-reproduce")
    with ThreadPoolExecutor(max_workers=2) as pool:  # each spends its time starting up
        helps = dict(
            zip(
                commands,
                pool.map(
                    lambda command: subprocess.run(
                        [bin_dir / command, "--help"], capture_output=True, text=True
                    ),
                    commands,
                ),
                strict=True,
            )
        )
    for command in ("normlab-report", "normlab-bench", "normlab-reproduce"):
        done = helps[command]
        assert done.returncode == 0 and "usage:" in done.stdout, command
    done = helps["normlab-train"]
    assert done.returncode == 0
    assert done.stdout.startswith("normlab-train: normalization ablations")
    assert "== Presets (-m experiment=NAME) ==" in done.stdout
    assert "norm: batch, group, layer, noisy_batch, none" in done.stdout
