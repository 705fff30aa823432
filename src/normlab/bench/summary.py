"""Medians, spreads and ratios of the repetitions; the Markdown tables; the targets."""

from __future__ import annotations

from statistics import median
from typing import Any

from normlab.bench.cases import LABELS

MIB = 1024  # the measurements are in KiB
# (description, measured ratio, at least); checked by `targets`
TARGETS = (
    ("(b) normlab default vs raw loop", ("normlab", "raw"), 0.75),
    ("(c) normlab + instruments vs raw loop", ("instruments", "raw"), 0.65),
    ("(b) normlab default vs (d) template", ("normlab", "template"), 2.0),
)
SWEEP_TARGET = 1.6  # parallel launcher vs serial, wall time
# the stacked launcher vs the parallel one and vs serial (wall time)
STACKED_SWEEP_TARGETS = (("parallel launcher", 1.6), ("serial (basic launcher)", 2.5))
STACKED_LIMIT_TARGET = 0.75  # (j) member-steps/s vs the raw loop at 1 thread x cores
GRID_SECONDS = 180.0  # the 1,024-cell grid through the CLI, report included
STACKED_MEMORY_BOUND = 2.0  # (k) 48-member stack's peak RSS vs a solo run's (g), at most


def summarize_cases(runs: list[dict[str, Any]], reference: str = "raw") -> list[dict[str, Any]]:
    """One row per case: median steps/s, its min-max spread, and the ratio to `reference`.

    The ratio is the median over repetitions of (case / reference in the same repetition):
    repetitions are interleaved, so pairing them cancels slow drifts in the machine's load.
    """
    by_case: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_case.setdefault(run["case"], {})[run["repeat"]] = run
    rows = []
    for case, reps in by_case.items():
        rates = [_rate(run) for run in reps.values()]
        runs_of_case = list(reps.values())
        rows.append(
            {
                "case": case,
                "label": LABELS.get(case, case),
                "repeats": len(rates),
                "steps": runs_of_case[0]["steps"],
                "steps_per_s": median(rates),
                "steps_per_s_min": min(rates),
                "steps_per_s_max": max(rates),
                "spread_pct": 100 * (max(rates) - min(rates)) / median(rates),
                f"ratio_to_{reference}": paired_ratio(by_case, case, reference),
                "cpu_ms_per_step": median(
                    1000 * r["loop_cpu_s"] / r["steps"] for r in runs_of_case
                ),
                "torch_threads": runs_of_case[0].get("torch_threads"),
                "startup_s": _median(runs_of_case, "startup_s"),
                "peak_rss_mib": _median(runs_of_case, "peak_rss_kib") / MIB,
                "loop_start_rss_mib": _median(runs_of_case, "loop_start_rss_kib") / MIB,
                "loop_peak_rss_mib": _median(runs_of_case, "loop_peak_rss_kib") / MIB,
                "service_peak_rss_mib": _median(runs_of_case, "service_peak_rss_kib") / MIB,
                "val_acc": _median(runs_of_case, "val_acc"),
            }
        )
    return rows


def paired_ratio(
    by_case: dict[str, dict[int, dict[str, Any]]], case: str, reference: str
) -> float | None:
    """Median over the repetitions both ran of steps/s(case) / steps/s(reference)."""
    mine, theirs = by_case.get(case, {}), by_case.get(reference, {})
    ratios = [_rate(mine[i]) / _rate(theirs[i]) for i in mine if i in theirs]
    return median(ratios) if ratios else None


def targets(
    runs: list[dict[str, Any]],
    sweeps: list[dict[str, Any]],
    scaling: dict[str, Any] | None = None,
    grid: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The targets that these measurements can decide, each with its verdict."""
    by_case: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_case.setdefault(run["case"], {})[run["repeat"]] = run
    checks = []
    for description, (case, reference), least in TARGETS:
        ratio = paired_ratio(by_case, case, reference)
        if ratio is not None:
            checks.append(
                {"target": description, "measured": ratio, "at_least": least, "met": ratio >= least}
            )
    checks += stacked_targets(by_case, sweeps)
    if scaling is not None:
        medians = scaling["medians"]
        largest = max(int(key.split("/")[1]) for key in medians if key.startswith("plain/"))
        ratio = medians[f"tiny/{largest}"] / medians[f"plain/{largest}"]
        checks.append(
            _check(f"member scaling: normlab vs a plain vectorized step, M={largest}", ratio, 0.7)
        )
    if grid is not None:
        checks.append(
            {
                "target": f"{grid['cells']}-cell grid, all cells complete (wall s)",
                "measured": grid["wall_s"],
                "at_most": GRID_SECONDS,
                "unit": " s",
                "met": grid["wall_s"] <= GRID_SECONDS
                and grid["complete_cells"] == grid["cells"]
                and grid["report"],
            }
        )
    parallel = next((row for row in sweeps if row["variant"] == "parallel launcher"), None)
    if parallel is not None:
        checks.append(
            {
                "target": "parallel sweep vs serial (wall time)",
                "measured": parallel["speedup"],
                "at_least": SWEEP_TARGET,
                "met": parallel["speedup"] >= SWEEP_TARGET,
            }
        )
    return checks


def stacked_targets(
    by_case: dict[str, dict[int, dict[str, Any]]], sweeps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The stacked targets: the stacked sweep's speed-ups, (j) against the CPU limit, (k)'s
    memory against a solo run's."""
    checks = []
    stacked = next((row for row in sweeps if row["variant"] == "stacked launcher"), None)
    for variant, least in STACKED_SWEEP_TARGETS if stacked is not None else ():
        other = next((row for row in sweeps if row["variant"] == variant), None)
        if other is not None:
            ratio = other["wall_s"] / stacked["wall_s"]
            checks.append(_check(f"stacked sweep vs {variant} (wall time)", ratio, least))
    limit = paired_ratio(by_case, "stacked", "raw_1t")
    if limit is not None:
        cores = next(iter(by_case["stacked"].values())).get("processes", 1)
        checks.append(
            _check(
                f"(j) stacked vs the CPU limit (raw loop at 1 thread x {cores} cores)",
                limit / cores,
                STACKED_LIMIT_TARGET,
            )
        )
    solo = _median(list(by_case.get("solo_1t", {}).values()), "peak_rss_kib")
    stack48 = _median(list(by_case.get("stacked48", {}).values()), "peak_rss_kib")
    if solo and stack48:
        ratio = stack48 / solo
        checks.append(
            {
                "target": "(k) 48-member stack's peak RSS vs a solo run's (g)",
                "measured": ratio,
                "at_most": STACKED_MEMORY_BOUND,
                "met": ratio <= STACKED_MEMORY_BOUND,
            }
        )
    return checks


def _check(description: str, ratio: float, least: float) -> dict[str, Any]:
    return {"target": description, "measured": ratio, "at_least": least, "met": ratio >= least}


def _rate(run: dict[str, Any]) -> float:
    return run["steps"] / run["loop_s"]


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return median(values) if values else None


def cases_table(rows: list[dict[str, Any]], reference: str = "raw") -> str:
    """The per-case Markdown table."""
    lines = [
        "| case | steps/s (median) | min-max | x raw loop | CPU ms/step | threads | start-up s "
        "| peak RSS MiB | RSS in loop MiB | + child processes MiB | val acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['steps_per_s']:.0f} "
            f"| {row['steps_per_s_min']:.0f}-{row['steps_per_s_max']:.0f} "
            f"| {_fmt(row[f'ratio_to_{reference}'], '.2f')} | {row['cpu_ms_per_step']:.2f} "
            f"| {row['torch_threads']} "
            f"| {_fmt(row['startup_s'], '.1f')} | {row['peak_rss_mib']:.0f} "
            f"| {row['loop_start_rss_mib']:.0f} -> {row['loop_peak_rss_mib']:.0f} "
            f"| {row['service_peak_rss_mib']:.0f} | {_fmt(row['val_acc'], '.3f')} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The sweep Markdown table: wall time per launcher and the speed-up over serial."""
    lines = [
        "| sweep | cells x steps | torch threads per cell | wall s | cells' own s "
        "| speed-up vs serial | ceiling |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ceiling = row.get("ceiling")
        lines.append(
            f"| {row['variant']} | {row['cells']} x {row['steps']} | {row['threads']} "
            f"| {row['wall_s']:.1f} | {row['cells_s']:.1f} | {row['speedup']:.2f}x "
            f"| {'-' if ceiling is None else f'{ceiling:.2f}x'} |"
        )
    return "\n".join(lines)


def targets_table(checks: list[dict[str, Any]]) -> str:
    """The targets as a Markdown table."""
    lines = ["| target | measured | bound | met |", "|---|---:|---:|---|"]
    for check in checks:
        unit = check.get("unit", "x")
        bound = (
            f">= {check['at_least']:.2f}{unit}"
            if "at_least" in check
            else f"<= {check['at_most']:.2f}{unit}"
        )
        lines.append(
            f"| {check['target']} | {check['measured']:.2f}{unit} | {bound} "
            f"| {'yes' if check['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
