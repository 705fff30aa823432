"""One Lightning logger for a stack: each member's metrics reach that member's own loggers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytorch_lightning.loggers import Logger

MEMBER_PREFIX = "members/"  # ClassifierModule.member_key: members/<m>/<name>


def split_member_key(key: str) -> tuple[int | None, str]:
    """`members/3/val/acc` -> (3, `val/acc`); any other name -> (None, name)."""
    if key.startswith(MEMBER_PREFIX):
        member, name = key.removeprefix(MEMBER_PREFIX).split("/", 1)
        return int(member), name
    return None, key


class MemberLoggers(Logger):
    """Routes `members/<m>/<name>` to member m's loggers as `<name>`; a metric without a member
    (Lightning's `epoch`) goes with every member's row. Each member folder so gets the metrics.csv
    (and W&B run) its solo run would write. A row of metrics without a member (a callback's
    from callbacks.extra, e.g. LearningRateMonitor's lr-SGD) goes to every member."""

    def __init__(self, member_loggers: Sequence[Sequence[Logger]]):
        super().__init__()
        self.member_loggers = [list(loggers) for loggers in member_loggers]

    @property
    def name(self) -> str:
        return "members"

    @property
    def version(self) -> str:
        return ""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        shared: dict[str, Any] = {}
        routed: list[dict[str, Any]] = [{} for _ in self.member_loggers]
        for key, value in metrics.items():
            member, name = split_member_key(key)
            (shared if member is None else routed[member])[name] = value
        everyone = bool(shared.keys() - {"epoch"})  # Lightning adds `epoch` to every row
        for loggers, own in zip(self.member_loggers, routed, strict=True):
            if own or everyone:
                for logger in loggers:
                    logger.log_metrics({**own, **shared}, step)

    def save(self) -> None:
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.save()

    def finalize(self, status: str) -> None:
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.finalize(status)


def member_metrics(metrics: dict[str, Any], member: int, members: int) -> dict[str, Any]:
    """Member `member`'s share of a stack's metrics, under their plain names."""
    if members == 1:
        return dict(metrics)
    own = {}
    for key, value in metrics.items():
        index, name = split_member_key(key)
        if index == member:
            own[name] = value
    return own
