"""At least 20 invalid command lines: each exits 2 with one clear line naming the key."""

import pytest

from helpers import normlab

INVALID = [
    (["norm=nope"], "norm/nope"),
    (["activation=swish"], "activation/swish"),
    (["data=cifar100"], "data/cifar100"),
    (["optimizer=lbfgs2"], "optimizer/lbfgs2"),
    (["regularizer=[l2,bogus]"], "regularizer/bogus"),
    (["norm.momentum=abc"], "norm.momentum"),
    (["data.batch_size=sixty"], "data.batch_size"),
    (["trainer.max_steps=1.5"], "trainer.max_steps"),
    (["model.depth=-1"], "model.depth"),
    (["model.width=0"], "model.width"),
    (["norm.bogus=1"], "norm.bogus"),
    (["bogus=1"], "bogus"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer.lr=abc"], "optimizer.lr"),
    (["optimizer=momentum", "optimizer.momentum=1.5"], "optimizer.momentum"),
    (["optimizer.nonsense=1"], "nonsense"),
    (["regularizer=[dropout]", "regularizer.dropout.p=1.0"], "regularizer.dropout.p"),
    (["regularizer=[dropconnect]", "regularizer.dropconnect.p=-0.1"], "regularizer.dropconnect.p"),
    (
        ["regularizer=[label_smoothing]", "regularizer.label_smoothing.value=1"],
        "regularizer.label_smoothing.value",
    ),
    (["regularizer=[l2]", "regularizer.l2.strength=-1"], "regularizer.l2.strength"),
    (
        ["regularizer=[grad_clip]", "regularizer.grad_clip.algorithm=max"],
        "regularizer.grad_clip.algorithm",
    ),
    (["norm=group", "norm.num_groups=7"], "norm.num_groups"),
    (["norm=batch", "data.batch_size=1"], "data.batch_size"),
    (["norm.placement=sideways"], "norm.placement"),
    (["data.preprocess=normalize"], "data.preprocess"),
    (["norm.eps=0"], "norm.eps"),
    (["scheduler=step", "scheduler.schedule.gamma=abc"], "scheduler"),
    (["init=normal", "init.weight.sd=0.1"], "init.weight"),
    (["trainer.max_steps=-1", "trainer.max_epochs=-1"], "trainer.max_steps"),
    (["seed=-3"], "seed"),
    (["paths.output_dir=/proc/forbidden"], "paths.output_dir=/proc/forbidden"),
    (["hydra/launcher=nonexistent"], "'hydra/launcher/nonexistent'; available: basic, joblib"),
    (["-m", "hydra.job.name=a,b"], "hydra.job.name"),
    (["regularizer=[dropout,dropout]"], "regularizer=[dropout,dropout]: dropout is listed twice"),
    (["-m", "regularizer=[l2],[dropout,l2,dropout]"], "regularizer=[dropout,l2]"),
]


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
