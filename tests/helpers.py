"""What several test modules share: the CLI runner, background runs and their waits, result
comparison and the config-option list. Test modules import from here, never from each other."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from normlab.paths import CONFIG_DIR

# argument prefixes the precheck cannot decide alone: Hydra flags, Hydra keys, folders
OUTSIDE_THE_PRECHECK = ("-", "hydra", "paths.")

# Invalid command lines and the text their one-line error must hold; the one table, read by
# tests/test_invalid_cli.py (through the CLI) and tests/test_config.py (the precheck in-process)
INVALID = [
    (["norm=nope"], "norm/nope"),
    (["activation=swish"], "activation/swish"),
    (["data=imagenet"], "data/imagenet"),
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
    (["data.batch_size=0"], "data.batch_size"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"], "optimizer"),
    (["paths.output_dir=/proc/forbidden"], "paths.output_dir=/proc/forbidden"),
    (["hydra/launcher=nonexistent"], "'hydra/launcher/nonexistent'; available: basic, joblib"),
    (["-m", "hydra.job.name=a,b"], "hydra.job.name"),
    (["regularizer=[dropout,dropout]"], "regularizer=[dropout,dropout]: dropout is listed twice"),
    (["-m", "regularizer=[l2],[dropout,l2,dropout]"], "regularizer=[dropout,l2]"),
    (["model=custom"], "model._target_ is not set"),
    (["model=custom", "model._target_=no_such_package.nets.Net"], "model._target_="),
    (["model=custom", "model._target_=torch.nn.Linear"], "model._target_=torch.nn.Linear"),
    (["model=custom", "model._target_=collections.OrderedDict"], "not an nn.Module"),
    (["model=resnet_small", "regularizer=[dropout]"], "regularizer=dropout"),
    (["model=mlp", "model.depth=abc"], "model.depth"),
    # a key a schema does not have, whether added with + (Hydra's advice) or not
    (
        ["norm=group", "+norm.num_group=5"],
        "norm.num_group: no such key; did you mean norm.num_groups?",
    ),
    (
        ["norm=group", "norm.num_group=5"],
        "norm.num_group: no such key; did you mean norm.num_groups?",
    ),
    (["+activation.slope=0.1"], "activation.slope: no such key"),
    (
        ["activation=leaky_relu", "activation.negative_slop=0.1"],
        "did you mean activation.negative_slope?",
    ),
    # an option's _target_ names a registry entry, not a layer class
    (
        ["activation._target_=torch.nn.SiLU"],
        "activation._target_=torch.nn.SiLU is a type, not an ActivationOption",
    ),
    (["norm.name=rms"], "norm.name=rms: no such norm"),
    (["+data.batchsize=30"], "did you mean data.batch_size?"),
    (
        ["+regularizer.l2.strength=0.1"],
        "regularizer.l2 is null here (off); turn it on first with regularizer=[l2]",
    ),
    # Trainer arguments normlab replaces
    (
        ["+trainer.gradient_clip_val=1.0"],
        "trainer.gradient_clip_val: normlab sets this Trainer argument itself; "
        "use regularizer=grad_clip",
    ),
    (["+trainer.gradient_clip_algorithm=value"], "regularizer.grad_clip.algorithm"),
    (["+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches: normlab sets"),
    # a schedule the configured optimizer cannot drive (OneCycleLR needs momentum or betas)
    (
        [
            "optimizer._target_=torch.optim.Adagrad",
            "+scheduler.schedule._target_=torch.optim.lr_scheduler.OneCycleLR",
            "+scheduler.schedule._partial_=true",
            "+scheduler.schedule.max_lr=0.1",
            "+scheduler.schedule.total_steps=100",
        ],
        "with optimizer (torch.optim.Adagrad)",
    ),
    (["data=custom"], "data._target_ is not set"),
    (["data=custom", "data._target_=no_such_package.data.load"], "cannot import no_such_package"),
    (["data=custom", "data._target_=math.pi"], "pi is a float, not a function"),
    (["data=custom", "data._target_=collections.OrderedDict"], "returned OrderedDict; return a"),
    (["data=custom", "data._target_=user_data.two_splits"], "returned 2 items"),
    (["data=custom", "data._target_=user_data.tensors", "+data.kwargs.bogus=1"], "calling it"),
    (["data=custom", "data._target_=user_data.iterable"], "train is a Stream, not a map-style"),
    (["data=custom", "data._target_=user_data.shapes_differ"], "val examples have shape (11,)"),
    (["data=custom", "data._target_=user_data.inconsistent_examples"], "train[3] has shape (5,)"),
    (
        ["data=custom", "data._target_=user_data.label_out_of_range", "data.num_classes=3"],
        "test[5] has label 7, outside 0..2",
    ),
    (["data=custom", "data._target_=user_data.empty_val"], "the val split is empty"),
    (["data=custom", "data._target_=user_data.float_labels"], "train[0] has label 2.0 (float)"),
    (["data._target_=user_data.tensors"], "read only by data=custom"),
    (["data=digits", "data.num_features=5"], "data.num_features=5 is read only by data=synthetic"),
]


def normlab(module: str, *args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` to completion, output captured (no exception on failure)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# warnings a fresh interpreter does not print (Python's default filters, outside __main__)
UNSHOWN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def run_in_process(
    main: Callable[[], object], *args: str, env: dict, capture
) -> subprocess.CompletedProcess:
    """A console entry point `main()` run in this process as `python -m ... ARGS` would run it
    (sys.argv, os.environ = `env`), its output read from `capture` (pytest's capfd): its exit
    status (SystemExit's code; 1 and the traceback for an exception) and what it printed. What
    only a fresh process would print is added: warnings its default filters show, and log
    records before the command sets up logging (logging's last resort, stderr). The caller's
    argv, environment, working directory, logging and heap are restored after."""
    saved_argv, saved_env, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    saved_loggers = _logging_state()
    capture.readouterr()  # what the test printed before: not the command's
    logging.getLogger().handlers = []  # pytest's, which a fresh process does not have
    sys.argv = [getattr(main, "__module__", "python"), *args]
    os.environ.clear()
    os.environ.update(env)
    code, crash = 0, ""
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.resetwarnings()
            for category in UNSHOWN_WARNINGS:
                warnings.simplefilter("ignore", category)
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                crash = "" if isinstance(exc.code, int | None) else f"{exc.code}\n"
            except Exception:
                code, crash = 1, traceback.format_exc()
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        _restore_logging(saved_loggers)
        gc.unfreeze()  # an entry point's freeze_heap_for_exit, meant for a process about to end
    out, err = capture.readouterr()
    printed = "".join(
        warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in shown
    )
    return subprocess.CompletedProcess(list(args), code, out, printed + err + crash)


def _logging_state() -> dict:
    """Every logger's handlers, level, propagation and disabled flag (a command's logging
    set-up changes them)."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    return {
        logger: (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in loggers
    }


def _restore_logging(saved: dict) -> None:
    """Put `_logging_state` back; close the handlers the command added."""
    kept = {id(handler) for handlers, *_ in saved.values() for handler in handlers}
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue
        for handler in logger.handlers:
            if id(handler) not in kept:
                handler.close()
        handlers, level, propagate, disabled = saved.get(logger, ([], logging.NOTSET, True, False))
        logger.handlers, logger.level = handlers, level
        logger.propagate, logger.disabled = propagate, disabled


def start_training(env: dict, *args: str) -> subprocess.Popen:
    """`python -m normlab.train ARGS` in the background (to be interrupted), stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "normlab.train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(
    run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120
) -> None:
    """Block until metrics.csv has a row at or past `step` (and a checkpoint exists)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        metrics = run_dir / "metrics.csv"
        if (run_dir / "checkpoints" / "last.ckpt").is_file() and metrics.is_file():
            steps = [
                int(line.split(",")[1])
                for line in metrics.read_text().splitlines()[1:]
                if line.count(",") > 1 and line.split(",")[1].isdigit()
            ]
            if steps and max(steps) >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def same_result(a: Path, b: Path) -> None:
    """The two run folders' results agree on every number a run reports."""
    keep = ("test/acc", "test/loss", "val/acc_best", "steps", "status")
    first, second = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert {k: first[k] for k in keep} == {k: second[k] for k in keep}


def options(group: str) -> list[str]:
    """Every option of a config group, read from conf/ (so the tests follow the folder)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
