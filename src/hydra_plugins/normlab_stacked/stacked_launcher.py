"""`hydra/launcher=stacked`: a sweep's cells train together, as stacks of members.

Hydra sets every cell up as usual (its folder, `.hydra/` files, log); the launcher then groups
the cells into stacks (normlab.stack.plan), writes one spec per stack and runs each in its own
`python -m normlab.stack.worker` process, as many at once as there are cores (or GPUs: each
process then sees one GPU). A multi-device (DDP) cell or an Optuna search trial (it reaches its
study through its job's environment) runs through Hydra's own job runner, as
with the basic launcher; every other cell that cannot stack trains as a stack of one, with a
log line saying why. Finished cells are skipped; a killed stack resumes from its checkpoint.

With `backend: slurm` (hydra/launcher=stacked_slurm) the stacks go to SLURM instead, through
submitit's executor: one element of one job array per stack, each running the stack in its
job's own process (`StackJob`). A preempted or timed-out element stops at a resume-safe step,
is requeued through submitit's checkpointing interface and resumes (normlab.utils.slurm).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.normlab_stacked.composed_once import ComposedOnce
from normlab.utils.gpus import GPU_ACCELERATORS

log = logging.getLogger("normlab")
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, where PyYAML has it
UNKNOWN_SIZE_BOUND = 256  # members a stack holds when its data's shape is not known in advance


def _set_up_cell(sweep_config: DictConfig, sweep_dir: Path, index: int):
    """A cell's folder, as Hydra's job runner would set it up (its output dir in the config,
    `.hydra/overrides.yaml`, which the report reads), its config resolved once for the planner
    and the worker. Its `config.yaml` and `provenance.json` are the worker's to write."""
    from normlab.stack.plan import Cell, resolved_task

    HydraConfig.instance().set_config(sweep_config)  # ${hydra:...} interpolations, as for a job
    run_dir = sweep_dir / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
    with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
        sweep_config.hydra.runtime.output_dir = str(run_dir.absolute())
    run_dir.mkdir(parents=True, exist_ok=True)
    if sweep_config.hydra.output_subdir is not None:
        hydra_dir = run_dir / str(sweep_config.hydra.output_subdir)
        hydra_dir.mkdir(exist_ok=True)
        overrides = list(sweep_config.hydra.overrides.task)
        (hydra_dir / "overrides.yaml").write_text(yaml.dump(overrides, Dumper=_Dumper))
    return Cell(sweep_config, run_dir, index, resolved_task(sweep_config))


def _noted(sweep_config: DictConfig, cell) -> JobReturn:
    """The launch's record of a cell set up for a stack (its score is filled in at the end)."""
    ret = JobReturn(
        overrides=list(sweep_config.hydra.overrides.task),
        cfg=sweep_config,
        hydra_cfg=sweep_config,
        working_dir=str(cell.run_dir),
        task_name=str(sweep_config.hydra.job.name),
        status=JobStatus.COMPLETED,
    )
    ret.return_value = (sweep_config, cell.run_dir)
    return ret


class StackedLauncher(Launcher):
    """Runs a sweep's cells as stacks of members (see the module docstring)."""

    def __init__(
        self,
        max_members: int | None = None,
        n_jobs: int | None = None,
        backend: str = "local",
        slurm: DictConfig | dict | None = None,
    ) -> None:
        if backend not in ("local", "slurm"):
            raise ValueError(f"hydra.launcher.backend={backend}: must be local or slurm")
        self.max_members, self.n_jobs, self.backend = max_members, n_jobs, backend
        if OmegaConf.is_config(slurm):
            slurm = OmegaConf.to_container(slurm, resolve=True)
        self.slurm = slurm  # the submitit executor's parameters (backend slurm)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        if not isinstance(hydra_context.config_loader, ComposedOnce):
            # shared with the sweeper: the cells it composes to check them are kept for launch()
            hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from normlab.reuse import reuse_if_found
        from normlab.stack.plan import plan_stacks, solo_reason
        from normlab.sweep import cell_score, finished_result

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # the first wave of local stack workers starts now: their imports (Lightning, torch:
        # seconds) overlap the composition of every cell's config below
        jobs = self._jobs(str(self.config.trainer.accelerator) in GPU_ACCELERATORS)
        local = self.backend == "local"
        warm = _WarmWorkers(sweep_dir / "stacks", min(jobs, len(job_overrides)) if local else 0)
        returns, cells, ddp = [], [], []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.take(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = index
                sweep_config.hydra.job.num = index
            if "NORMLAB_OPTUNA_TRIAL" in (sweep_config.hydra.job.env_set or {}):
                # a search trial reaches its study through its job's environment
                ddp.append((offset, sweep_config, "a search trial"))
                returns.append(None)
                continue
            cell = _set_up_cell(sweep_config, sweep_dir, index)
            returns.append(_noted(sweep_config, cell))
            if finished_result(cell.run_dir) is not None:
                status = finished_result(cell.run_dir)["status"]
                log.info("already %s, skipped: %s", status, cell.run_dir)
                continue
            if reuse_if_found(cell.resolved, cell.run_dir) is not None:
                continue  # a finished cell of an earlier sweep (normlab.reuse)
            reason = solo_reason(sweep_config, cell.run_dir)
            if reason and reason.startswith("multi-device") and self.backend == "slurm":
                raise ValueError(
                    f"hydra/launcher=stacked_slurm cannot run {cell.run_dir.name} ({reason}); "
                    "use hydra/launcher=slurm for multi-device cells and search trials"
                )
            if reason and reason.startswith("multi-device"):
                ddp.append((offset, sweep_config, reason))
            elif reason:
                log.info("solo (%s): %s", reason, cell.run_dir)
                cells.append((cell, True))
            else:
                cells.append((cell, False))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        on_gpu = any(str(cell.cfg.trainer.accelerator) in GPU_ACCELERATORS for cell, _ in cells)
        jobs = self._jobs(on_gpu)
        stackable = [cell for cell, solo in cells if not solo]
        at_once = 1 if self.backend == "slurm" else jobs
        bound = self._max_members(stackable, at_once, on_gpu)
        # on SLURM every stack gets its own allocation: split by max_members alone
        stacks = plan_stacks(stackable, bound, at_once)
        stacks += [plan_stacks([cell], 1, 1)[0] for cell, solo in cells if solo]
        try:
            if self.backend == "slurm":
                self._submit_stacks(stacks, sweep_dir)
            else:
                self._run_stacks(stacks, sweep_dir, jobs, warm)
        finally:
            warm.close()
        for offset, sweep_config, reason in ddp:  # Hydra's own job runner, as basic's
            log.info("through Hydra's job runner (%s): #%d", reason, initial_job_idx + offset)
            returns[offset] = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for ret in returns:
            if ret.status == JobStatus.COMPLETED and isinstance(ret.return_value, tuple):
                _, run_dir = ret.return_value
                finished = finished_result(run_dir) or {}
                ret.return_value = cell_score(finished.get("val/acc_best"), run_dir)
        return returns

    def _max_members(self, stackable, at_once: int, on_gpu: bool) -> int:
        """`max_members`, or (null) as many members as fit in memory with `at_once` stacks
        running together (normlab.stack.memory)."""
        from normlab.stack.memory import available_bytes, members_that_fit

        if self.max_members is not None or not stackable:
            return int(self.max_members or 1)
        if self.backend == "slurm":  # each stack gets its own allocation: its mem_gb
            gigabytes = (self.slurm or {}).get("mem_gb")
            available = int(gigabytes * 2**30) if gigabytes else None
        else:  # `auto` asks for a GPU only where there is one
            available = available_bytes(on_gpu and _gpu_count() > 0)
        first = stackable[0]
        fit = members_that_fit(first.cfg, first.resolved, at_once, available) if available else None
        if fit is None:
            log.info("stacks of at most %d members (their memory is unknown)", UNKNOWN_SIZE_BOUND)
            return UNKNOWN_SIZE_BOUND
        log.info("stacks of at most %d members (what fits in memory, %d at once)", fit, at_once)
        return fit

    def _jobs(self, on_gpu: bool) -> int:
        """Stack processes at once: `n_jobs`, else one per GPU when the cells train on GPUs,
        else one per core."""
        from normlab.utils.threads import available_cores

        if self.n_jobs:
            return int(self.n_jobs)
        return _gpu_count() if on_gpu and _gpu_count() > 0 else available_cores()

    def _run_stacks(self, stacks, sweep_dir: Path, jobs: int, warm: _WarmWorkers) -> None:
        """Each stack in its own worker process, `jobs` at once, the cores shared evenly."""
        from normlab.analysis.progress import sweep_progress
        from normlab.sweep import stop_on
        from normlab.utils.gpus import visible_gpu_ids
        from normlab.utils.threads import available_cores

        if not stacks:
            return
        at_once = min(jobs, len(stacks))
        warm.close(keep=at_once)
        threads = max(1, available_cores() // at_once)
        gpus = _gpu_count()
        gpu_ids = visible_gpu_ids(gpus)
        specs_dir = sweep_dir / "stacks"
        specs_dir.mkdir(parents=True, exist_ok=True)
        pending = list(stacks)
        running: dict[int, tuple[subprocess.Popen, int]] = {}  # slot -> (process, stack size)
        stopping = {"signal": None}

        def forward(signum, frame):  # a stopped sweep stops its stacks at resume-safe points
            stopping["signal"] = signum
            for process, _ in running.values():
                process.send_signal(signum)

        stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
        previous = {signum: signal.signal(signum, forward) for signum in stop_signals}
        try:
            while pending or running:
                for slot in range(at_once):
                    if slot in running or not pending or stopping["signal"]:
                        continue
                    stack = pending.pop(0)
                    spec_path = _write_spec(stack, specs_dir, threads)
                    process = warm.hand_over(slot, spec_path)
                    if process is None:  # a later wave: a fresh worker for this stack
                        with (specs_dir / f"{stack.name}.log").open("a") as out:
                            process = subprocess.Popen(
                                [sys.executable, "-m", "normlab.stack.worker", str(spec_path)],
                                env=_slot_env(slot, gpus, gpu_ids),
                                stdout=out,
                                stderr=subprocess.STDOUT,
                            )
                    log.info(
                        "stack of %d cells (%d threads): %s", len(stack.cells), threads, spec_path
                    )
                    running[slot] = (process, len(stack.cells))
                for slot, (process, _) in list(running.items()):
                    if process.poll() is not None:
                        del running[slot]
                        print(sweep_progress(sweep_dir), flush=True)
                if pending or running:
                    time.sleep(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if stopping["signal"]:  # the stacks saved their checkpoints: the sweep stops
            stop_on(signal.Signals(stopping["signal"]).name)

    def _submit_stacks(self, stacks, sweep_dir: Path) -> None:
        """Each stack as one element of a SLURM job array (submitit), then wait for them all."""
        import submitit

        from normlab.analysis.progress import sweep_progress

        if not stacks:
            return
        params = dict(self.slurm or {})
        folder = params.pop("submitit_folder", str(sweep_dir / ".submitit" / "%j"))
        executor = submitit.AutoExecutor(
            folder=folder,
            cluster="slurm",
            slurm_max_num_timeout=params.pop("max_num_timeout", 3),
        )
        # as hydra-submitit-launcher does: shared keys plain, SLURM-only ones `slurm_`-prefixed
        shared = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "nodes"}
        shared |= {"mem_gb", "name", "stderr_to_stdout"}
        executor.update_parameters(
            **{key if key in shared else f"slurm_{key}": value for key, value in params.items()}
        )
        specs_dir = sweep_dir / "stacks"
        specs_dir.mkdir(parents=True, exist_ok=True)
        # threads: null, the job's task reads its own CPU allocation (normlab.utils.threads)
        specs = [str(_write_spec(stack, specs_dir, None)) for stack in stacks]
        jobs = executor.map_array(StackJob(), specs)
        log.info("submitted %d stacks to SLURM (job %s)", len(jobs), jobs[0].job_id.split("_")[0])
        for job, spec in zip(jobs, specs, strict=True):
            try:
                job.result()
            except Exception as exc:  # each member's folder records its own outcome
                log.error("stack job %s ended without a result (%s): %s", job.job_id, exc, spec)
        print(sweep_progress(sweep_dir), flush=True)


class StackJob:
    """One stack as a submitit job: trains it in the job's own process.

    `checkpoint` is submitit's checkpointing interface: on a preemption or time-out the stack
    has stopped at a resume-safe step and saved its checkpoint (normlab.utils.slurm), and the
    requeued job runs the same spec again, which resumes it."""

    def __call__(self, spec_path: str) -> int:
        from normlab.stack.worker import run_spec_file

        return run_spec_file(Path(spec_path))

    def checkpoint(self, spec_path: str):
        """The same call, resubmitted."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec_path)


def _write_spec(stack, specs_dir: Path, threads: int | None) -> Path:
    """The stack's worker spec (its members' folders and resolved configs, the threads)."""
    spec_path = specs_dir / f"{stack.name}.json"
    spec = {
        "threads": threads,
        "stacks_dir": str(specs_dir),
        "members": [
            {
                "run_dir": str(cell.run_dir),
                "config": cell.resolved,
            }
            for cell in stack.cells
        ],
    }
    spec_path.write_text(json.dumps(spec, indent=1))
    return spec_path


def _slot_env(slot: int, gpus: int, gpu_ids: list[str]) -> dict[str, str]:
    """A worker's environment: on a multi-GPU node, its slot's own GPU (a slot keeps it)."""
    env = dict(os.environ)
    if gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids[slot % gpus]
    return env


class _WarmWorkers:
    """Stack workers started before their stacks are known, one per slot of the first wave.

    Each imports normlab's training stack while the launcher composes the cells, then waits
    for one line on its stdin: the spec of the stack it trains (it then writes the stack's log
    itself). An unused one is sent an empty line and exits.
    """

    def __init__(self, specs_dir: Path, count: int) -> None:
        from normlab.utils.gpus import visible_gpu_ids

        specs_dir.mkdir(parents=True, exist_ok=True)
        gpus = _gpu_count()
        gpu_ids = visible_gpu_ids(gpus)
        self.idle: dict[int, subprocess.Popen] = {}
        for slot in range(count):
            with (specs_dir / f"worker-{slot}.log").open("a") as out:
                self.idle[slot] = subprocess.Popen(
                    [sys.executable, "-m", "normlab.stack.worker", "--spec-on-stdin"],
                    env=_slot_env(slot, gpus, gpu_ids),
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )

    def hand_over(self, slot: int, spec_path: Path) -> subprocess.Popen | None:
        """This slot's warm worker, now training `spec_path`; None when it has none (left)."""
        process = self.idle.pop(slot, None)
        if process is None or process.poll() is not None:
            return None
        try:
            process.stdin.write(f"{spec_path}\n")
            process.stdin.close()
        except BrokenPipeError:  # it died while starting: its log says why
            return None
        return process

    def close(self, keep: int = 0) -> None:
        """End the workers of slots `keep` and above: no stack needs them (they hold nothing
        yet, so they are simply stopped)."""
        for slot in [slot for slot in self.idle if slot >= keep]:
            process = self.idle.pop(slot)
            process.kill()
            process.wait()


def _gpu_count() -> int:
    from normlab.utils.gpus import gpu_count

    return gpu_count()
