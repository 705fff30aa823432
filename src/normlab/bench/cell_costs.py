"""What a cell costs beyond its training: `python -m normlab.bench.cell_costs [--members N]`.

Trains one stack of N members of the tiny MLP (MNIST-1D, W&B offline, 200 steps) through
`train_members`, as a stacked sweep's worker does, under the profiler, and prints the time per
member of each fixed cost a cell pays: its configs typed and checked, its folder written (config,
provenance), its network built, its W&B run opened and closed, its result written. The sweep's
parent pays its own per-cell share (composing and setting up the cell's folder): the grid study
(normlab.bench.grid) times the whole command.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

from normlab.bench.cases import compose_config

# (what, the function whose cumulative time is it), in the order a worker pays them
COSTS = (
    ("config typed from the spec", "typed_configs"),
    ("config checked", "_validate_members"),
    ("config.yaml + provenance.json", "_write_run_folders"),
    ("network built and initialized", "seeded_network"),
    ("W&B run opened (+ CSV logger; 4 at once, beside the network build)", "_opened"),
    ("W&B run closed", "finish_wandb"),
    ("result.json", "write_json_atomic"),
)


def profile_stack(members: int, steps: int) -> pstats.Stats:
    """Train the stack under cProfile; its statistics."""
    from normlab.pipeline import train_members
    from normlab.stack.plan import resolved_task
    from normlab.stack.worker import typed_configs

    lead = compose_config(
        [
            "data=mnist1d",
            "model.width=16",
            "logger=wandb",
            "threads=1",
            f"trainer.max_steps={steps}",
        ]
    )
    trees = []
    for seed in range(members):
        tree = resolved_task(lead)
        tree["seed"] = seed
        trees.append(tree)
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as folder:
        dirs = [Path(folder) / f"member{i}" for i in range(members)]
        profiler.enable()
        cfgs = typed_configs(trees)
        train_members(cfgs, dirs, Path(folder) / "stack")
        profiler.disable()
    return pstats.Stats(profiler)


def per_member_ms(stats: pstats.Stats, members: int) -> dict[str, float]:
    """Each cost's cumulative milliseconds per member."""
    totals: dict[str, float] = {}
    for (_, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        for label, name in COSTS:
            if function == name:
                totals[label] = totals.get(label, 0.0) + cumulative
    return {label: 1000 * totals.get(label, 0.0) / members for label, _ in COSTS}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(prog="python -m normlab.bench.cell_costs")
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    costs = per_member_ms(profile_stack(args.members, args.steps), args.members)
    print(f"| fixed cost of a cell (a stack of {args.members}, profiled) | ms per cell |")
    print("|---|---:|")
    for label, milliseconds in costs.items():
        print(f"| {label} | {milliseconds:.1f} |")


if __name__ == "__main__":
    main()
