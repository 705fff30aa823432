"""`python -m normlab.reproduce RUN_DIR`: re-run a finished run from its saved config and say
whether its metrics come out the same (exit 0) or not (exit 1, with the first difference).

The re-run goes to RUN_DIR/reproductions/<time>/; the original folder is never modified.
Metrics are compared column by column, exactly by default (CPU runs are bit-reproducible), or
within --atol.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from normlab.config.options import typed_config
from normlab.config.schema import register_schemas
from normlab.utils.files import read_json

# columns that measure the machine, not the computation
_NOT_COMPARED = ("time", "throughput", "steps_per_s")


def load_run_config(run_dir: Path):
    """The run's resolved config.yaml, typed again by the schema."""
    register_schemas()
    saved = OmegaConf.load(run_dir / "config.yaml")
    return typed_config(saved)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def first_difference(original: Path, again: Path, atol: float = 0.0) -> str | None:
    """None when the two metrics.csv files agree; else a line naming the first difference."""
    left, right = _rows(original), _rows(again)
    if len(left) != len(right):
        return f"{len(left)} metric rows originally, {len(right)} now"
    for number, (a, b) in enumerate(zip(left, right, strict=True), start=2):
        for key in sorted(set(a) | set(b)):
            if any(word in key for word in _NOT_COMPARED):
                continue
            x, y = a.get(key, ""), b.get(key, "")
            if x == y:
                continue
            try:
                close = math.isclose(float(x), float(y), rel_tol=0.0, abs_tol=atol)
            except ValueError:
                close = False
            if not close:
                return f"metrics.csv line {number}, {key}: {x!r} originally, {y!r} now"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance per metric")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "metrics.csv").is_file():
        sys.exit(f"normlab: {run_dir} has no config.yaml / metrics.csv: not a finished run folder")
    from normlab.pipeline import train

    cfg = load_run_config(run_dir)
    target = run_dir / "reproductions" / time.strftime("%Y%m%d-%H%M%S")
    result = train(cfg, target)
    original = read_json(run_dir / "result.json") if (run_dir / "result.json").is_file() else {}
    difference = first_difference(run_dir / "metrics.csv", target / "metrics.csv", args.atol)
    print(f"re-run: {target}")
    print(f"test/acc {original.get('test/acc')} originally, {result.get('test/acc')} now")
    if difference:
        print(f"DIFFERENT: {difference}")
        sys.exit(1)
    print(
        "SAME: every logged metric matches" + (f" within {args.atol}" if args.atol else " exactly")
    )


if __name__ == "__main__":
    main()
