"""At least 20 invalid command lines through the CLI: each exits 2 with one clear line naming
the key. Every line of the table also goes through the precheck in-process (test_config.py);
here, each line the precheck cannot decide alone (Hydra flags, Hydra keys, folders) and every
other one of the rest, so that the CLI's own turning of errors into one line is pinned on
every kind of mistake without paying ~4 s of start-up for all ~45."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import cli_environment
from helpers import INVALID, OUTSIDE_THE_PRECHECK, normlab
from normlab.utils.threads import available_cores

THROUGH_THE_CLI = [
    (args, key)
    for index, (args, key) in enumerate(INVALID)
    if index % 2 == 0 or any(arg.startswith(OUTSIDE_THE_PRECHECK) for arg in args)
]


@pytest.fixture(scope="module")
def invalid_runs(tmp_path_factory) -> dict[tuple[str, ...], object]:
    """Every THROUGH_THE_CLI line through the CLI once, one process per core at a time (each spends
    its seconds importing torch; the table has ~40 lines)."""
    root = tmp_path_factory.mktemp("invalid")
    lines = [tuple(args) for args, _ in THROUGH_THE_CLI]

    def run(index_and_args):
        index, args = index_and_args
        return normlab("normlab.train", *args, env=cli_environment(root / str(index)))

    with ThreadPoolExecutor(max_workers=max(1, available_cores())) as pool:
        return dict(zip(lines, pool.map(run, enumerate(lines)), strict=True))


@pytest.mark.parametrize(
    ("args", "key"), THROUGH_THE_CLI, ids=[" ".join(a) for a, _ in THROUGH_THE_CLI]
)
def test_invalid_command_line_fails_in_one_line(args, key, invalid_runs):
    done = invalid_runs[tuple(args)]
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("normlab: config error:") and key in lines[0], lines[0]


def test_at_least_twenty_lines_go_through_the_cli():
    assert len(THROUGH_THE_CLI) >= 20


def test_invalid_lease_environment_fails_in_one_line(cli_env):
    done = normlab("normlab.train", env={**cli_env, "NORMLAB_CELL_LEASE_S": "ten"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "normlab: config error: NORMLAB_CELL_LEASE_S=ten: must be a number of seconds > 0, e.g. 600"
    )


def test_data_error_names_the_dataset_as_the_user_writes_it(cli_env):
    done = normlab(
        "normlab.train", "data=digits", "data.val_size=5000", "trainer=debug", env=cli_env
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "(data=digits has 1437)" in done.stderr and "DatasetName" not in done.stderr, done.stderr
