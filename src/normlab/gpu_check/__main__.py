"""`python -m normlab.gpu_check [--allow-cpu] [--json FILE] [--work DIR] [--only REGEX]`.

One line per check (PASS / FAIL / SKIP, seconds, what it measured), the versions first,
a JSON summary last. Exit codes: 0 every check that could run passed; 1 a check failed; 3 no GPU to
check (nvidia-smi lists GPUs that torch cannot see, or there is none and no --allow-cpu);
4 the deadline (9.5 minutes for everything) ran out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

DEADLINE_S = 570.0
EXIT_FAILED, EXIT_NO_GPU, EXIT_DEADLINE = 1, 3, 4


class Summary:
    """The JSON summary, written after every check and when the deadline runs out."""

    def __init__(self, path: Path, record: dict[str, Any]):
        self.path, self.record, self.lock = path, record, threading.Lock()
        self.started = time.monotonic()

    def add(self, check: dict[str, Any]) -> None:
        with self.lock:
            self.record["checks"].append(check)
        self.write()

    def write(self, **final: Any) -> None:
        with self.lock:
            self.record.update(final, elapsed_s=round(time.monotonic() - self.started, 1))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.record, indent=2, default=str) + "\n")


def arm_deadline(summary: Summary, seconds: float) -> threading.Timer:
    """After `seconds`, whatever is running: say so, write the summary and exit 4."""

    def expire() -> None:
        running = summary.record.get("running")
        print(
            f"DEADLINE after {seconds:.0f}s (running: {running}); summary {summary.path}",
            flush=True,
        )
        summary.write(exit_code=EXIT_DEADLINE, deadline_exceeded=True)
        os._exit(EXIT_DEADLINE)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _detail(check: dict[str, Any]) -> str:
    measured = check.get("measured") or {}
    if "max_rel_diff" in measured:
        return f"max rel diff {measured['max_rel_diff']:.2e} (limit {measured['limit']:.0e})"
    return check.get("reason", "")


def run_check(name: str, check, runner, summary: Summary) -> str:
    """Run one check; print its line; record it. Its status."""
    from normlab.gpu_check.checks import Mismatch, Skipped

    summary.record["running"] = name
    started = time.monotonic()
    entry: dict[str, Any] = {"name": name}
    try:
        entry.update(status="PASS", measured=check(runner))
    except Skipped as exc:
        entry.update(status="SKIP", reason=str(exc))
    except Mismatch as exc:
        entry.update(status="FAIL", reason=str(exc))
    except Exception as exc:  # a crash is a failure of the path it checks
        entry.update(status="FAIL", reason=f"{type(exc).__name__}: {exc}")
        entry["traceback"] = traceback.format_exc()
    entry["seconds"] = round(time.monotonic() - started, 1)
    summary.record["running"] = None
    print(f"{entry['status']:<5} {name:<22} {entry['seconds']:6.1f}s  {_detail(entry)}", flush=True)
    summary.add(entry)
    return entry["status"]


def main(argv: list[str] | None = None) -> int:
    """Run the checks; the exit code (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m normlab.gpu_check", description=__doc__)
    parser.add_argument("--allow-cpu", action="store_true", help="no GPU: run on CPU")
    parser.add_argument("--work", type=Path, help="run folders (default: a new /tmp folder)")
    parser.add_argument("--json", type=Path, help="the summary (default: WORK/gpu_check.json)")
    parser.add_argument("--only", default=".", help="run the checks whose name matches")
    parser.add_argument("--deadline-s", type=float, default=DEADLINE_S, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # cuBLAS reads this when CUDA starts; trainer.deterministic=true needs it set before
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    work = args.work or Path(tempfile.mkdtemp(prefix="normlab-gpu-check-"))
    summary = Summary(args.json or work / "gpu_check.json", {"work": str(work), "checks": []})
    deadline = arm_deadline(summary, args.deadline_s)
    try:
        return run_checks(args, work, summary)
    finally:
        deadline.cancel()  # called in-process (tests), the deadline ends with the checks


def run_checks(args: argparse.Namespace, work: Path, summary: Summary) -> int:
    """The machine's verdict, then every check `args.only` picks; the exit code."""
    from normlab.gpu_check.checks import CHECKS
    from normlab.gpu_check.machine import device_to_check, listed_gpus, versions
    from normlab.gpu_check.runs import Runner

    found = versions()
    summary.record.update(versions=found, nvidia_smi=listed_gpus())
    print("gpu-check: " + ", ".join(f"{key} {value}" for key, value in found.items()), flush=True)
    device, why = device_to_check(args.allow_cpu)
    summary.record.update(device=device, why=why)
    if device is None:
        print(f"FAIL  gpu-check: {why}", flush=True)
        summary.write(exit_code=EXIT_NO_GPU)
        return EXIT_NO_GPU
    print(f"gpu-check: on {device} ({why}); runs in {work}", flush=True)
    runner = Runner(work, device)
    statuses = [
        run_check(name, check, runner, summary)
        for name, check in CHECKS.items()
        if re.search(args.only, name)
    ]
    code = EXIT_FAILED if "FAIL" in statuses else 0
    counts = {status: statuses.count(status) for status in ("PASS", "FAIL", "SKIP")}
    print(
        "gpu-check: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" in {time.monotonic() - summary.started:.0f}s on {device}; summary {summary.path}",
        flush=True,
    )
    summary.write(exit_code=code, counts=counts)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
