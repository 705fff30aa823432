"""At least 20 invalid command lines through the CLI: each exits 2 with one clear line naming
the key. Every line of the table also goes through the precheck in-process (test_config.py);
here, each line the precheck cannot decide alone (Hydra flags, Hydra keys, folders) and every
other one of the rest go through the CLI's own `main()` in this process, so that its turning of
errors into one line is pinned on every kind of mistake; a few lines, one of each kind, go
through a real `python -m normlab.train` as well (its exit status and everything a fresh
interpreter prints), without paying ~3 s of start-up for all ~40."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import cli_environment
from helpers import INVALID, OUTSIDE_THE_PRECHECK, normlab
from normlab.train import main as train_main

# one line of each kind in a real process: the precheck, a Hydra group, a folder, a user's own
# module (test_cli.py runs a sweep's line and an error inside the run in real processes too)
IN_A_PROCESS = [
    ["norm=nope"],
    ["hydra/launcher=nonexistent"],
    ["paths.output_dir=/proc/forbidden"],
    ["data=custom", "data._target_=user_data.two_splits"],
]
THROUGH_THE_CLI = [
    (args, key)
    for index, (args, key) in enumerate(INVALID)
    if index % 2 == 0
    or any(arg.startswith(OUTSIDE_THE_PRECHECK) for arg in args)
    or args in IN_A_PROCESS
]


def assert_one_line_error(done, key: str) -> None:
    """Exit 2, and stderr is one line: `normlab: config error: ...` naming `key`."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("normlab: config error:") and key in lines[0], lines[0]


@pytest.fixture(scope="module")
def real_processes(tmp_path_factory) -> dict[tuple[str, ...], object]:
    """Every IN_A_PROCESS line through `python -m normlab.train`, two processes at a time."""
    root = tmp_path_factory.mktemp("invalid")
    lines = [tuple(args) for args in IN_A_PROCESS]

    def run(index_and_args):
        index, args = index_and_args
        return normlab("normlab.train", *args, env=cli_environment(root / str(index)))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(lines, pool.map(run, enumerate(lines)), strict=True))


@pytest.mark.parametrize(
    ("args", "key"), THROUGH_THE_CLI, ids=[" ".join(a) for a, _ in THROUGH_THE_CLI]
)
def test_invalid_command_line_fails_in_one_line(args, key, train_cli):
    assert_one_line_error(train_cli(*args), key)


@pytest.mark.parametrize("args", IN_A_PROCESS, ids=" ".join)
def test_invalid_command_line_fails_in_one_line_in_a_real_process(args, real_processes):
    [key] = [key for line, key in THROUGH_THE_CLI if line == args]
    assert_one_line_error(real_processes[tuple(args)], key)


def test_at_least_twenty_lines_go_through_the_cli():
    assert len(THROUGH_THE_CLI) >= 20


def test_invalid_lease_environment_fails_in_one_line(in_process, cli_env):
    done = in_process(train_main, env={**cli_env, "NORMLAB_CELL_LEASE_S": "ten"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "normlab: config error: NORMLAB_CELL_LEASE_S=ten: must be a number of seconds > 0, e.g. 600"
    )


def test_data_error_names_the_dataset_as_the_user_writes_it(train_cli):
    done = train_cli("data=digits", "data.val_size=5000", "trainer=debug")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "(data=digits has 1437)" in done.stderr and "DatasetName" not in done.stderr, done.stderr
