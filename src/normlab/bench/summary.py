"""Medians, spreads and ratios of the repetitions; the Markdown tables."""

from __future__ import annotations

from statistics import median
from typing import Any

from normlab.bench.cases import LABELS

MIB = 1024  # the measurements are in KiB


def summarize_cases(runs: list[dict[str, Any]], reference: str = "raw") -> list[dict[str, Any]]:
    """One row per case: median steps/s, its min-max spread, and the ratio to `reference`.

    The ratio is the median over repetitions of (case / reference in the same repetition):
    repetitions are interleaved, so pairing them cancels slow drifts in the machine's load.
    """
    by_case: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_case.setdefault(run["case"], {})[run["repeat"]] = run
    baseline = by_case.get(reference, {})
    rows = []
    for case, reps in by_case.items():
        rate = {i: run["steps"] / run["loop_s"] for i, run in reps.items()}
        paired = [rate[i] / (baseline[i]["steps"] / baseline[i]["loop_s"])
                  for i in rate if i in baseline]
        runs_of_case = list(reps.values())
        rows.append({
            "case": case,
            "label": LABELS.get(case, case),
            "repeats": len(rate),
            "steps": runs_of_case[0]["steps"],
            "steps_per_s": median(rate.values()),
            "steps_per_s_min": min(rate.values()),
            "steps_per_s_max": max(rate.values()),
            "spread_pct": 100 * (max(rate.values()) - min(rate.values())) / median(rate.values()),
            f"ratio_to_{reference}": median(paired) if paired else None,
            "startup_s": _median(runs_of_case, "startup_s"),
            "peak_rss_mib": _median(runs_of_case, "peak_rss_kib") / MIB,
            "loop_peak_rss_mib": _median(runs_of_case, "loop_peak_rss_kib") / MIB,
            "loop_start_rss_mib": _median(runs_of_case, "loop_start_rss_kib") / MIB,
            "service_peak_rss_mib": _median(runs_of_case, "service_peak_rss_kib") / MIB,
            "val_acc": _median(runs_of_case, "val_acc"),
        })
    return rows


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return median(values) if values else None


def cases_table(rows: list[dict[str, Any]], reference: str = "raw") -> str:
    """The per-case Markdown table."""
    lines = ["| case | steps/s (median) | min-max | x raw loop | start-up s | peak RSS MiB "
             "| RSS in loop MiB | + child processes MiB | val acc |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['steps_per_s']:.0f} | {row['steps_per_s_min']:.0f}-"
            f"{row['steps_per_s_max']:.0f} | {_fmt(row[f'ratio_to_{reference}'], '.2f')} "
            f"| {_fmt(row['startup_s'], '.1f')} | {row['peak_rss_mib']:.0f} "
            f"| {row['loop_start_rss_mib']:.0f} -> {row['loop_peak_rss_mib']:.0f} "
            f"| {row['service_peak_rss_mib']:.0f} | {_fmt(row['val_acc'], '.3f')} |")
    return "\n".join(lines)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The sweep Markdown table: wall time per launcher and the speed-up over serial."""
    lines = ["| sweep | cells | torch threads per cell | wall s | speed-up vs serial |",
             "|---|---:|---|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['cells']} | {row['threads']} | "
                     f"{row['wall_s']:.1f} | {_fmt(row.get('speedup'), '.2f')}x |")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
