"""`python -m normlab.stack.worker SPEC.json`: train one stack of sweep cells in this process.

The stacked launcher writes SPEC.json (the members' resolved configs and folders, the threads
and the folder for stack checkpoints) and starts one worker per stack (the first wave starts
before the stacks are planned, `--spec-on-stdin`, and reads its spec's path from stdin), or
submits one SLURM job array element per stack (`StackJob`, which calls `run_spec_file` in the
job). Each member keeps a cell's life (normlab.sweep): a finished member is skipped, a member
locked by another process is left to it, a failed attempt is archived, and a failure is
recorded in every member's folder.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from normlab.utils.process_exit import freeze_heap_for_exit

log = logging.getLogger("normlab")


def typed_configs(resolved: list[dict]) -> list[DictConfig]:
    """`typed_config` of every member's config. The whole schema merge (tens of ms) is made
    once per stack: each member is a copy of the first one's typed config whose top-level
    entries that differ (its own groups and values) are typed again on their own."""
    import copy

    from normlab.config.schema import TrainConfig
    from normlab.models.options import type_options, typed_config

    schema = OmegaConf.structured(TrainConfig)
    first = typed_config(resolved[0])
    configs = [first]
    for tree in resolved[1:]:
        cfg = copy.deepcopy(first)
        for key, value in tree.items():
            if value == resolved[0].get(key):
                continue
            try:
                cfg[key] = value  # a value, or an untyped group (optimizer, model)
            except ValidationError:  # a typed group (regularizer, ...): typed anew
                cfg[key] = OmegaConf.merge(schema[key], value)
        type_options(cfg)  # norm and activation: by their options' schemas
        configs.append(cfg)
    return configs


def run_stack(spec: dict) -> int:
    """Train the spec's members that still need it; return how many trained."""
    from normlab.paths import last_checkpoint
    from normlab.pipeline import train_members
    from normlab.stack.plan import stack_name
    from normlab.sweep import (
        CellLock,
        archive_attempt,
        cell_status,
        finished_result,
        record_failure,
    )

    members = []
    for member in spec["members"]:
        run_dir = Path(member["run_dir"])
        if finished_result(run_dir) is not None:
            continue
        lock = CellLock(run_dir)
        if not lock.acquire():
            log.warning("another process is running this cell, skipped: %s", run_dir)
            continue
        members.append((member["config"], run_dir, lock))
    if not members:
        return 0
    trees, run_dirs, locks = zip(*members, strict=True)
    stack_dir = (
        run_dirs[0] if len(run_dirs) == 1 else Path(spec["stacks_dir"]) / stack_name(run_dirs)
    )
    try:
        cfgs = typed_configs(list(trees))
        if spec["threads"] is not None:  # null (a SLURM job): the thread policy decides
            for cfg in cfgs:
                cfg.threads = spec["threads"]
        resumes = last_checkpoint(stack_dir).is_file()
        for run_dir in run_dirs:
            if cell_status(run_dir) == "failed":
                archive_attempt(run_dir, resumes=resumes)
        log.info("stack of %d members: %s", len(cfgs), stack_dir)
        train_members(list(cfgs), list(run_dirs), stack_dir)
    except Exception as exc:  # recorded in every member's cell, reported by `normlab.report`
        trace = traceback.format_exc()
        for run_dir in run_dirs:
            (run_dir / "error.log").write_text(trace)
            record_failure(run_dir, f"{type(exc).__name__}: {exc}")
        log.error("stack failed (%s: %s): %s", type(exc).__name__, exc, stack_dir)
    finally:
        for lock in locks:
            lock.release()
    return len(run_dirs)


def _spec_from_stdin() -> Path | None:
    """A warm worker (the launcher started it before its stack was planned): import the
    training stack first, then wait for the spec's path; the stack's log takes our output."""
    import normlab.pipeline  # noqa: F401  (the imports that take seconds)

    line = sys.stdin.readline().strip()
    if not line:  # no stack for this worker
        return None
    spec_path = Path(line)
    log_file = spec_path.with_suffix(".log").open("a")
    sys.stdout.flush()
    sys.stderr.flush()
    for stream in (1, 2):
        os.dup2(log_file.fileno(), stream)
    return spec_path


def run_spec_file(path: Path) -> int:
    """Train the stack SPEC.json at `path` describes (a worker process, or a SLURM job)."""
    _configure_logging()
    import normlab.train  # noqa: F401  (registers the schema and resolvers)

    return run_stack(json.loads(Path(path).read_text()))


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
    )


def main() -> None:
    """Console entry: one SPEC.json argument, or `--spec-on-stdin` (a warm worker)."""
    _configure_logging()
    spec_path = _spec_from_stdin() if sys.argv[1:] == ["--spec-on-stdin"] else Path(sys.argv[1])
    if spec_path is not None:
        run_spec_file(spec_path)
        freeze_heap_for_exit()  # the launcher waits for this process's exit


if __name__ == "__main__":
    main()
