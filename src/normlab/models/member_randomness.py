"""Each member's own random stream, for every draw a member makes during training.

A member draws its dropout and DropConnect masks and its augmentation from a torch.Generator
seeded with its data seed, in the order its solo run would: so each member's draws are its
solo run's, whatever the other members do. Layers that draw from the process's global
generator (noisy batch norm, a user's own network: these train as a stack of one) get it seeded
with the member's data seed too, and it is saved with the member streams for an exact resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class MemberRandomness:
    """The members' generators (one set per device they draw on) and their checkpoint state."""

    def __init__(self, data_seeds: Sequence[int]):
        self.seeds = list(data_seeds)
        self._generators: dict[torch.device, list[torch.Generator]] = {}
        self._pending: dict[str, list[torch.Tensor]] = {}  # restored states of devices not yet used

    def decorrelate(self, rank: int) -> None:
        """DDP rank `rank` > 0 of a fresh run: streams of its own (every rank would otherwise
        draw the same masks for its share of the batch), seeded `seed + rank`."""
        self.seeds = [seed + rank for seed in self.seeds]
        self._generators = {}

    def generators(self, device: torch.device) -> list[torch.Generator]:
        """Every member's generator on `device` (made, and seeded, on first use)."""
        device = torch.device(device)
        generators = self._generators.get(device)
        if generators is None:
            generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
            saved = self._pending.pop(_kind(device), None)
            if saved is not None:
                for generator, state in zip(generators, saved, strict=True):
                    generator.set_state(state)
            self._generators[device] = generators
        return generators

    def state_dict(self, device: torch.device | None = None) -> dict:
        """Every member stream's position on every device it drew on, and the global CPU
        generator's (and the global generator of `device`, the run's, when it is a GPU: decided
        by the run's device, never by what this process happened to initialize)."""
        members = {
            _kind(device): [g.get_state() for g in generators]
            for device, generators in self._generators.items()
        }
        members.update(
            {kind: [s.clone() for s in states] for kind, states in self._pending.items()}
        )
        state = {"members": members, "global": torch.get_rng_state()}
        if device is not None and torch.device(device).type == "cuda":
            state["global_cuda"] = torch.cuda.get_rng_state(device)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue every stream where the checkpoint left it."""
        torch.set_rng_state(state["global"].clone())  # a copy: a view with an offset crashes
        if state.get("global_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["global_cuda"].clone())
        self._generators = {}
        self._pending = {
            kind: [s.clone() for s in states] for kind, states in state["members"].items()
        }


def _kind(device: torch.device) -> str:
    """`cpu`, `cuda`, ...: a checkpoint resumes on another machine's device of the same kind."""
    return torch.device(device).type
