"""One benchmark case in a fresh process: `python -m normlab.bench.worker CASE --out PATH ...`.

A fresh process per measurement keeps the cases from sharing warm caches and makes the peak
memory figure that case's own.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# W&B offline runs write only into the benchmark's throw-away run folder; no prompts, no banners
os.environ.setdefault("WANDB_SILENT", "true")


def main() -> None:
    """Parse the arguments, run the case, write its measurement as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--part", type=int, default=0, help="this process's share of a stack")
    parser.add_argument("--parts", type=int, default=1, help="processes sharing a stacked case")
    parser.add_argument("--spawned-at", type=float, required=True, help="parent's time.time()")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from normlab.bench.cases import run_case

    measured = run_case(args.case, args.steps, args.threads, (args.part, args.parts))
    measured["torch_threads"] = torch.get_num_threads()
    measured.update(
        case=args.case,
        startup_s=measured.pop("started_at") - args.spawned_at,
        process_s=time.time() - args.spawned_at,
    )
    args.out.write_text(json.dumps(measured))


if __name__ == "__main__":
    main()
