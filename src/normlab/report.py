"""`python -m normlab.report SWEEP_DIR`: tables and figures of a Hydra multirun sweep.

Writes SWEEP_DIR/report/: report.md (tables, figures, cells left out), summary.csv (one row
per configuration), cells.csv (one row per cell) and the figures as PNG and PDF files.
An Optuna search's sweep (hparams_search=...) gets a search report: report.md, trials.csv
(trials by objective), importances.csv, cells.csv and Optuna's figures of the study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.analysis.report import NoCells, build_report
from normlab.analysis.search import NoStudy
from normlab.analysis.tables import BANDS, DEFAULT_METRIC, MetricNotLogged


def parse_marks(text: str) -> list[int]:
    """ "500,1000,2000" -> [500, 1000, 2000]."""
    try:
        return [int(mark) for mark in text.split(",") if mark.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"marks must be integers: {text!r}") from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `--help` explains every option."""
    parser = argparse.ArgumentParser(
        prog="python -m normlab.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (holds multirun.yaml)")
    parser.add_argument(
        "--target-acc",
        type=float,
        default=0.8,
        help="val/acc a run must reach for the steps-to-target column (0.8)",
    )
    parser.add_argument(
        "--marks",
        type=parse_marks,
        default=None,
        help="steps at which to tabulate val/acc, e.g. 500,1000,2000 "
        "(default: 4 evenly spaced logged validation steps)",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="the metric the configuration table aggregates over seeds: result.json's final "
        "value (test/acc, test/loss, val/acc_best) or the last logged in metrics.csv (any "
        "column: train/loss, grad/layer1/norm, ...); one logged at several steps also gets "
        f"a figure against steps ({DEFAULT_METRIC})",
    )
    parser.add_argument(
        "--band",
        choices=list(BANDS),
        default="ci95",
        help="the spread around each mean over seeds, in figures and the table: ci95 (95%% CI "
        "of the mean, Student t: for a paper) or minmax (the lowest and highest seed) (ci95)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: SWEEP_DIR/report)"
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and figures to a W&B run (offline unless "
        "WANDB_MODE says otherwise)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the report; print where it is and the cell counts."""
    args = parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"normlab.report: no such folder: {args.sweep_dir}", file=sys.stderr)
        return 2
    try:
        report = build_report(
            args.sweep_dir, args.target_acc, args.marks, args.out, args.metric, args.band
        )
    except (NoCells, NoStudy, MetricNotLogged) as exc:
        print(f"normlab.report: {exc}", file=sys.stderr)
        return 2
    for line in report.summary_lines():
        print(line)
    print(f"report: {report.out_dir / 'report.md'}")
    print(f"cells: {report.runs['status'].value_counts().to_dict()}")
    if args.wandb:
        from normlab.analysis.wandb_log import log_report_to_wandb

        print(f"wandb: {log_report_to_wandb(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
