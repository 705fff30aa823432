"""`python -m normlab.results`: docs/results.md from the latest finished sweep of each
experiment (normlab.analysis.results_page), and the README's results tables with it.

Each experiment's section says when, where and by which commit its numbers were made; its
figures are copied into docs/results/. A README block `<!-- results:<experiment> -->` ...
`<!-- /results -->` becomes that experiment's run line and table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.analysis.results_page import latest_runs, render_page, update_readme


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `--help` explains every option."""
    parser = argparse.ArgumentParser(
        prog="python -m normlab.results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "multirun_dir",
        type=Path,
        nargs="?",
        default=Path("outputs/multirun"),
        help="the folder of experiments' sweeps (outputs/multirun)",
    )
    parser.add_argument("--page", type=Path, default=Path("docs/results.md"), help="written")
    parser.add_argument(
        "--readme", type=Path, default=Path("README.md"), help="its results blocks are updated"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Console entry."""
    args = parse_args(argv)
    if not args.multirun_dir.is_dir():
        sys.exit(f"normlab: {args.multirun_dir}: no such folder; run an experiment first")
    runs = latest_runs(args.multirun_dir)
    page = args.page.resolve()
    page.write_text(render_page(runs, page.parent / "results", page))
    print(f"{args.page}: {', '.join(r.experiment for r in runs) or 'no finished sweep'}")
    if args.readme.is_file():
        text, missing = update_readme(args.readme.read_text(), runs)
        args.readme.write_text(text)
        if missing:
            print(f"{args.readme}: no finished sweep of {', '.join(missing)}; left as it was")


if __name__ == "__main__":
    main()
