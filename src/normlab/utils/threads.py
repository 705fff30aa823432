"""Thread policy: parallel jobs share the cores instead of oversubscribing them."""

from __future__ import annotations

import os

import torch

from normlab.utils.ranks import devices_per_node, launched_externally


def available_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parallel_jobs() -> int:
    """How many sweep jobs run at once: the joblib launcher's n_jobs, else 1."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except (ImportError, ValueError):
        return 1
    jobs = launcher.get("n_jobs") if launcher is not None else None
    if jobs is None or jobs < 0:  # joblib's -1 means one job per core
        return available_cores() if jobs is not None else 1
    return max(1, int(jobs))


def apply_thread_policy(requested: int | None) -> int:
    """Set torch's intra-op threads: the request, else cores // parallel jobs (at least 1),
    lowered to OMP_NUM_THREADS when that is set and smaller.

    Two 2-thread jobs on 2 cores run 8-11x slower each than two 1-thread jobs (measured here);
    any other load on the cores hurts multi-threaded small models the same way. So an
    OMP_NUM_THREADS left in a shell can lower the count but never oversubscribe a sweep; only an
    explicit `threads=N` can.
    """
    policy = max(1, available_cores() // parallel_jobs())
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:
        policy = min(policy, int(from_env))
    threads = requested or policy
    torch.set_num_threads(threads)
    return threads


def threads_per_rank(trainer_cfg) -> int | None:
    """Torch threads when this node's ranks share its cores (normlab starts them), else None.

    Two 2-thread processes on 2 cores ran 8-11x slower each than two 1-thread ones (measured).
    Under SLURM or torchrun each task has cores of its own, so the usual policy applies.
    """
    per_node = devices_per_node(trainer_cfg) or 1
    if per_node == 1 or launched_externally():
        return None
    return max(1, available_cores() // (parallel_jobs() * per_node))
