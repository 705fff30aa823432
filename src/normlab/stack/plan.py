"""Which sweep cells train together: the stack key, solo reasons, and packing onto the cores.

Cells stack when their configs differ only in member-wise values: the seeds, the optimizer's
settings (its class is shared), the schedule, the regularizers' strengths, the init, the
activation and the norm. Everything else (data, model shape, batch size, steps, trainer,
instruments, loggers) is the stack key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from normlab.models.build import STACKABLE
from normlab.paths import last_checkpoint

# whole groups or keys a member may set for itself
MEMBER_WISE = (
    "seed",
    "seed_init",
    "seed_data",
    "init",
    "activation",
    "norm",
    "scheduler",
    "regularizer",
)
# keys the stack key ignores: set per member, or never part of training
IGNORED = ("threads", "tags", "search", "gradcheck")
# optimizer arguments every member must share (they choose the implementation, not its numbers)
SHARED_OPTIMIZER_ARGS = (
    "_target_",
    "_partial_",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
)


def resolved_task(cfg: DictConfig | dict) -> dict[str, Any]:
    """A cell's config as a resolved dict, Hydra's own node left out (a dict: as it is)."""
    if isinstance(cfg, dict):
        return cfg
    return {
        key: OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        if OmegaConf.is_config(node := cfg[key])
        else getattr(node, "value", node)
        for key in cfg
        if key != "hydra"
    }


@dataclass
class Cell:
    """One sweep cell waiting to train: its config, its folder and its config resolved."""

    cfg: DictConfig
    run_dir: Path
    index: int  # the job's position in the sweep
    resolved: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.resolved is None:
            self.resolved = resolved_task(self.cfg)


@dataclass
class Stack:
    """Cells that train together as one network (one member each)."""

    cells: list[Cell]

    @property
    def name(self) -> str:
        """A stable name for this member set: its checkpoint folder under <sweep>/stacks/."""
        return stack_name([cell.run_dir for cell in self.cells])


def stack_name(run_dirs: Sequence[Path]) -> str:
    """`stack-<hash of the member folders>`: the same members always find the same stack."""
    names = "\n".join(sorted(str(Path(d).resolve()) for d in run_dirs))
    return "stack-" + hashlib.sha256(names.encode()).hexdigest()[:10]


def solo_reason(cfg: DictConfig, run_dir: Path) -> str | None:
    """Why this cell cannot train in a stack, or None when it can."""
    from normlab.lit.member_schedules import closed_form
    from normlab.lit.optimizers import member_wise
    from normlab.models.norms import norm_option, norm_settings

    trainer = cfg.trainer
    if trainer.devices not in (1, "1") or trainer.num_nodes != 1 or trainer.strategy != "auto":
        return "multi-device training (DDP) runs one cell per process group"
    if cfg.model._target_ not in STACKABLE:
        return (
            f"model._target_={cfg.model._target_}: only normlab's mlp and cnn have a batched "
            "form for several members"
        )
    if cfg.compile:
        return "compile=true compiles one member's forward"
    if last_checkpoint(run_dir).is_file():
        return "it resumes its own solo checkpoint"
    # a norm that draws inside its layer draws from the process's generator, not from each
    # member's own stream (normlab.models.member_randomness) as dropout does
    norm = norm_settings(cfg.norm)
    reason = norm_option(norm).solo_reason(norm)
    if reason is not None:
        return reason
    if str(trainer.precision).startswith("16"):
        # one gradient scaler for the whole stack: one member's overflow would skip every
        # member's step
        return f"trainer.precision={trainer.precision} scales one loss for the whole stack"
    optimizer = get_class(cfg.optimizer._target_)
    if not member_wise(optimizer):
        return (
            f"optimizer._target_={cfg.optimizer._target_}: only SGD, Adam, AdamW and RMSprop "
            "update member-wise"
        )
    schedule = cfg.scheduler.schedule
    if schedule is not None and not closed_form(OmegaConf.to_container(schedule)):
        return (
            f"scheduler.schedule._target_={schedule._target_}: only the built-in schedules are "
            "computed member-wise"
        )
    return None


def stack_key(cfg: DictConfig | dict) -> str:
    """The settings every member of one stack shares, as a short hash (`cfg`: a config, or
    one resolved by `resolved_task`)."""
    tree: dict[str, Any] = dict(resolved_task(cfg))
    for key in (*MEMBER_WISE, *IGNORED):
        tree.pop(key, None)
    optimizer = tree.get("optimizer") or {}
    tree["optimizer"] = {k: v for k, v in optimizer.items() if k in SHARED_OPTIMIZER_ARGS}
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def member_kind(cfg: DictConfig | dict) -> tuple:
    """Members of one kind (norm and activation) share batched calls: sort them together."""
    tree = resolved_task(cfg)
    return json.dumps(tree["norm"], sort_keys=True), json.dumps(tree["activation"], sort_keys=True)


def plan_stacks(cells: Sequence[Cell], max_members: int, jobs: int) -> list[Stack]:
    """Group stackable `cells` by stack key, members of one kind side by side, at most
    `max_members` a stack; then split the largest stacks until there are at least `jobs`
    (each running process gets a core's share: one thread per stack beats two on a small
    model, measured by `make bench`).

    A split deals the kind-sorted members out in turn, so every part gets its share of each
    kind (a batch-norm member costs more per step than a norm-free one: parts holding one kind
    each would finish apart) and keeps them side by side."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(stack_key(cell.resolved), []).append(cell)
    stacks: list[list[Cell]] = []
    for members in groups.values():
        members.sort(key=lambda cell: (member_kind(cell.resolved), cell.index))
        parts = -(-len(members) // max_members)
        stacks += [members[part::parts] for part in range(parts)]
    while len(stacks) < jobs:
        largest = max(stacks, key=len, default=[])
        if len(largest) < 2:
            break
        stacks.remove(largest)
        stacks += [largest[0::2], largest[1::2]]
    return [Stack(members) for members in stacks]
