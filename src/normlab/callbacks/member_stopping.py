"""Early stopping per member of a stack: Lightning's EarlyStopping rule, one member at a time.

Lightning's EarlyStopping stops the whole trainer; in a stack each member stops on its own
metric, as its solo run would, and the others train on (ClassifierModule.stop_member). The
rule is Lightning's: after each validation, an improvement is `current - min_delta > best`
(mode max; `current + min_delta < best` for min), else the wait count grows, and `patience`
validations without improvement stop the member. A non-finite value stops it at once.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class MemberEarlyStopping(Callback):
    """`regularizer=early_stopping` for every member of a stack that asks for it (`rules[m]`:
    its early_stopping config, or None: it trains to the end)."""

    def __init__(self, rules: list[Any]):
        self.rules = rules
        self.best = [
            None if r is None else (-math.inf if r.mode == "max" else math.inf) for r in rules
        ]
        self.waits = [0] * len(rules)

    @staticmethod
    def _improved(rule, current: float, best: float) -> bool:
        delta = abs(rule.min_delta)
        return current - delta > best if rule.mode == "max" else current + delta < best

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for member, rule in enumerate(self.rules):
            if rule is None or not pl_module.active(member):
                continue
            value = trainer.callback_metrics.get(pl_module.member_key(member, rule.monitor))
            if value is None:
                continue
            current = float(value)
            if not math.isfinite(current):
                pl_module.stop_member(member)
            elif self._improved(rule, current, self.best[member]):
                self.best[member], self.waits[member] = current, 0
            else:
                self.waits[member] += 1
                if self.waits[member] >= rule.patience:
                    pl_module.stop_member(member)

    def state_dict(self) -> dict[str, Any]:
        return {"best": list(self.best), "waits": list(self.waits)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.waits = list(state_dict["best"]), list(state_dict["waits"])
