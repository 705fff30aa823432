"""At least 20 invalid command lines: each exits 2 with one clear line naming the key."""

import pytest

from helpers import INVALID, normlab


@pytest.mark.parametrize(("args", "key"), INVALID, ids=[" ".join(a) for a, _ in INVALID])
def test_invalid_command_line_fails_in_one_line(args, key, cli_env):
    done = normlab("normlab.train", *args, env=cli_env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("normlab: config error:") and key in lines[0], lines[0]


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
