"""`python -m normlab.bench`: steps/s of normlab against a hand-written PyTorch loop.

Every case trains the default config (3x100 sigmoid MLP + BN, Fashion-MNIST, batch 60, SGD,
validation every 500 steps) for the same steps, each repetition in a fresh process; the cases
are interleaved (a b c d e f, b c d e f a, ...) so load drifts hit them alike. Steps/s is timed
from the first to the last training step (on_train_start -> on_train_end): start-up and the
final test are excluded and reported apart. Then the main ablation sweep (12 cells) runs
serially and through the parallel launcher. Two studies follow: `member_scaling`
(member-steps/s as the member count grows, against a plain vectorized step:
normlab.bench.member_scaling) and `grid` (a 1,024-cell sweep through the CLI:
normlab.bench.grid). Prints Markdown tables and the targets; `--json PATH` writes every
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import normlab
from normlab.bench.cases import LABELS
from normlab.bench.grid import grid_table, time_grid
from normlab.bench.summary import (
    cases_table,
    summarize_cases,
    sweep_table,
    targets,
    targets_table,
)
from normlab.bench.sweep import time_sweeps
from normlab.utils.threads import available_cores

STUDIES = ("member_scaling", "grid")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m normlab.bench", description=__doc__, formatter_class=_HelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000, help="training steps per case run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions per case")
    parser.add_argument(
        "--cases",
        default=",".join([*LABELS, *STUDIES]),
        help=f"comma-separated subset of {','.join([*LABELS, *STUDIES])} (raw is the reference)",
    )
    parser.add_argument("--scaling-budget", type=int, default=60_000, help="member-steps a run")
    parser.add_argument("--scaling-repeats", type=int, default=3, help="member scaling repeats")
    parser.add_argument("--grid-seeds", type=int, default=256, help="grid: 4 cells per seed")
    parser.add_argument("--grid-steps", type=int, default=1000, help="grid: steps per cell")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every case (default: normlab's policy, the cores)",
    )
    parser.add_argument("--sweep-steps", type=int, default=3000, help="steps per sweep cell")
    parser.add_argument("--sweep-seeds", type=int, default=3, help="seeds: 4 cells per seed")
    parser.add_argument(
        "--sweep-no-policy",
        action="store_true",
        help="also time the parallel sweep with threads=cores in every job",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep timing")
    parser.add_argument("--json", type=Path, default=None, help="write all measurements here")
    return parser.parse_args(argv)


def child_env() -> dict[str, str]:
    """Environment of the benchmark's processes: this normlab first, W&B quiet.

    W&B's mode is left to the config (logger=wandb is offline), as a user's run would have it.
    """
    source = str(Path(normlab.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, WANDB_SILENT="true")


def run_worker(case: str, steps: int, threads: int | None, env: dict[str, str]) -> dict[str, Any]:
    """One case in fresh processes (normlab.bench.worker); its measurement. The stacked case
    runs as the stacked launcher packs it: one 1-thread process per core, at once; the
    48-member stack (a memory bound) trains a tenth of the steps."""
    parts = available_cores() if case == "stacked" else 1
    if case == "stacked48":
        steps = max(100, steps // 10)
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as folder:
        outs = [Path(folder) / f"measurement{part}.json" for part in range(parts)]
        processes = []
        for part, out in enumerate(outs):
            command = [
                sys.executable,
                "-m",
                "normlab.bench.worker",
                case,
                "--steps",
                str(steps),
                "--spawned-at",
                repr(time.time()),
                "--out",
                str(out),
                "--part",
                str(part),
                "--parts",
                str(parts),
            ]
            if threads is not None:
                command += ["--threads", str(threads)]
            processes.append(
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                )
            )
        measured = []
        for process, out in zip(processes, outs, strict=True):
            _, stderr = process.communicate()
            if process.returncode != 0 or not out.is_file():
                raise RuntimeError(
                    f"benchmark case {case} failed ({process.returncode}):\n{stderr[-3000:]}"
                )
            measured.append(json.loads(out.read_text()))
    return measured[0] if parts == 1 else merge_parts(measured)


def run_member_scaling_worker(budget: int, repeats: int, env: dict[str, str]) -> dict[str, Any]:
    """The member-scaling study in one fresh process (normlab.bench.member_scaling); its
    measurements and its printed table."""
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as folder:
        out = Path(folder) / "member_scaling.json"
        command = [sys.executable, "-m", "normlab.bench.member_scaling"]
        command += ["--budget", str(budget), "--repeats", str(repeats), "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"member scaling failed ({done.returncode}):\n{done.stderr[-3000:]}")
        measured = json.loads(out.read_text())
    return {**measured, "table": done.stdout.strip()}


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Processes that ran at once as one measurement: their steps and memory add up, the
    slowest one's loop is the wall time."""
    merged = dict(parts[0])
    for key in ("steps", "loop_cpu_s", "peak_rss_kib", "loop_start_rss_kib", "loop_peak_rss_kib"):
        merged[key] = sum(part[key] for part in parts)
    merged["service_peak_rss_kib"] = sum(part.get("service_peak_rss_kib") or 0 for part in parts)
    for key in ("loop_s", "startup_s", "process_s"):
        merged[key] = max(part[key] for part in parts)
    merged["processes"] = len(parts)
    return merged


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if "model name" in line),
        platform.processor() or platform.machine(),
    )
    versions = {name: _version(name) for name in ("torch", "pytorch-lightning", "wandb")}
    return {
        "cpu": cpu,
        "cores": available_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
        "load_average": os.getloadavg(),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    """Run the cases and the sweeps; print the tables; write the JSON."""
    args = parse_args(argv)
    chosen = args.cases.split(",")
    unknown = set(chosen) - set(LABELS) - set(STUDIES)
    if unknown:
        choices = [*LABELS, *STUDIES]
        sys.exit(f"normlab.bench: unknown case(s) {sorted(unknown)}; choose from {choices}")
    cases = [case for case in chosen if case in LABELS]
    studies = [study for study in chosen if study in STUDIES]
    env, before = child_env(), machine()
    print(
        f"{len(cases)} cases x {args.repeats} repetitions x {args.steps} steps and "
        f"{', '.join(studies) or 'no studies'} on {before['cores']} cores ({before['cpu']}), "
        f"load average {before['load_average']}",
        flush=True,
    )
    runs = []
    for repeat in range(args.repeats if cases else 0):
        shift = repeat % len(cases)
        for case in cases[shift:] + cases[:shift]:
            run = run_worker(case, args.steps, args.threads, env)
            runs.append({**run, "repeat": repeat})
            print(
                f"  [{repeat + 1}/{args.repeats}] {LABELS[case]:<40} "
                f"{run['steps'] / run['loop_s']:7.0f} steps/s",
                flush=True,
            )
    rows = summarize_cases(runs) if runs else []
    sweeps = (
        []
        if args.no_sweep or not cases
        else time_sweeps(args.sweep_steps, args.sweep_seeds, args.sweep_no_policy, env)
    )
    scaling = (
        run_member_scaling_worker(args.scaling_budget, args.scaling_repeats, env)
        if "member_scaling" in studies
        else None
    )
    grid = time_grid(args.grid_seeds, args.grid_steps, env) if "grid" in studies else None
    if rows:
        print()
        print(cases_table(rows))
    if sweeps:
        print()
        print(sweep_table(sweeps))
        print(
            "cells' own s: the cells' wall times summed; ceiling: the speed-up if start-up, "
            "worker spawn and the report cost nothing (jobs x serial cells' s / parallel cells' s)"
        )
    if grid:
        print()
        print(grid_table(grid))
    if scaling:
        print()
        print(scaling["table"])
    checks = targets(runs, sweeps, scaling, grid)
    if checks:
        print()
        print(targets_table(checks))
    report = {
        "machine": before,
        "load_average_after": os.getloadavg(),
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "timing": "steps / wall seconds from on_train_start to on_train_end (the raw loop: "
        "its first to its last step); CPU ms/step: process CPU time over the same window",
        "memory": "peak RSS (getrusage ru_maxrss) of the case's fresh process; in-loop peak: "
        "/proc VmHWM reset at the loop start; child processes: their VmHWM at the loop end",
        "cases": rows,
        "runs": runs,
        "sweeps": sweeps,
        "member_scaling": scaling,
        "grid": grid,
        "targets": checks,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\njson: {args.json}")


if __name__ == "__main__":
    main()
