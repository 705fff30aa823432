"""The member axis is a tensor dimension: a training step dispatches the same ops whatever M, each
member's update equals torch.optim's for its settings, each member's schedule equals torch's
scheduler, and Lightning's contract holds (one optimizer step per batch, so step-level callbacks
see every step).

Tolerances: member vs torch.optim updates within 1e-5 relative over 100 float32 steps (the
member-wise ops round in another order than torch's fused ones); schedules within 1e-12 relative
(float64 closed forms against torch's recursive float64 updates).
"""

from __future__ import annotations

import copy
from collections import Counter
from functools import partial

import pandas as pd
import pytest
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from normlab.lit.member_schedules import MemberSchedule, MemberSchedules
from normlab.lit.optimizers import MemberOptimizer
from normlab.models.members import MemberNetworks
from normlab.models.mlp import MLP
from normlab.pipeline import train, train_members


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


class CountStep(Callback):
    """Counts the ops of one training step: from its batch start to its batch end."""

    def __init__(self, step: int):
        self.step, self.counter = step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.counter = OpCounter()
            self.counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.counter is not None and trainer.global_step == self.step + 1:
            self.counter.__exit__(None, None, None)


STEP_CONFIG = [
    "data=synthetic",
    "trainer=debug",
    "trainer.max_steps=6",
    "trainer.log_every_n_steps=50",
    "trainer.val_check_interval=1000",
    "logger=csv",
    "norm=batch",
    "optimizer=momentum",
    "scheduler=cosine",
    "regularizer=[label_smoothing,l2,grad_clip]",
    "callbacks.checkpoint=false",
]


def step_ops(compose_cfg, tmp_path, members: int) -> Counter[str]:
    # one composition, each member's seed and learning rate set on a copy (a composition each
    # would cost 64 times what the step does; test_config.py pins what composing gives)
    base = compose_cfg(*STEP_CONFIG)
    cfgs = []
    for seed in range(members):
        cfg = copy.deepcopy(base)
        cfg.seed, cfg.optimizer.lr = seed, 0.01 * (1 + seed % 5)
        cfgs.append(cfg)
    counting = CountStep(step=3)
    dirs = [tmp_path / f"m{members}" / str(i) for i in range(members)]
    train_members(cfgs, dirs, tmp_path / f"stack{members}", [counting])
    return counting.counter.ops


def test_a_training_step_dispatches_the_same_ops_at_2_and_64_members(compose_cfg, tmp_path):
    two, many = step_ops(compose_cfg, tmp_path, 2), step_ops(compose_cfg, tmp_path, 64)
    assert sum(two.values()) > 50  # the counter saw the step (forward, backward, update)
    assert two == many, {op: (two[op], many[op]) for op in two.keys() | many.keys()}


def tiny_networks(count: int) -> list[nn.Module]:
    """`count` MLPs 5-4-3 with batch norm (no bias before it, as normlab builds them: its
    gradient would be rounding noise, which Adam's normalization would amplify)."""
    torch.manual_seed(0)
    return [
        MLP(
            norm_layer=lambda width, spatial=None: nn.BatchNorm1d(width),
            act_layer=nn.ReLU,
            num_classes=3,
            input_shape=(5,),
            depth=1,
            width=4,
            linear_bias=False,
        )
        for _ in range(count)
    ]


OPTIMIZERS = {
    "sgd": [partial(torch.optim.SGD, lr=0.1), partial(torch.optim.SGD, lr=0.03, weight_decay=0.1)],
    "momentum": [
        partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        partial(torch.optim.SGD, lr=0.1, momentum=0.5, dampening=0.3),
        partial(torch.optim.SGD, lr=0.1),  # no momentum beside members with it
    ],
    "nesterov": [
        partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
        partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    ],
    "adam": [
        partial(torch.optim.Adam, lr=0.01),
        partial(torch.optim.Adam, lr=0.003, betas=(0.8, 0.99), weight_decay=0.01),
        partial(torch.optim.Adam, lr=0.01, amsgrad=True, maximize=True),
    ],
    "adamw": [
        partial(torch.optim.AdamW, lr=0.01),
        partial(torch.optim.AdamW, lr=0.003, weight_decay=0.1, eps=1e-6),
    ],
    "rmsprop": [
        partial(torch.optim.RMSprop, lr=0.001),
        partial(torch.optim.RMSprop, lr=0.001, momentum=0.9, centered=True, weight_decay=0.01),
        partial(torch.optim.RMSprop, lr=0.002, alpha=0.9),
    ],
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_members_update_equals_torch_optims_for_its_settings(name):
    factories = OPTIMIZERS[name]
    count = len(factories)
    stacked = MemberNetworks(tiny_networks(count))
    alone = tiny_networks(count)  # the same initial weights, each with its own torch optimizer
    optimizer = MemberOptimizer(
        stacked, factories, active=lambda: torch.ones(count, dtype=torch.bool)
    )
    reference = [f(network.parameters()) for f, network in zip(factories, alone, strict=True)]
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        x = torch.randn(count, 8, 5, generator=generator)
        optimizer.zero_grad()
        stacked(x).pow(2).mean(dim=(1, 2)).sum().backward()
        optimizer.step()
        for network, torch_optimizer, xs in zip(alone, reference, x, strict=True):
            torch_optimizer.zero_grad()
            network(xs).pow(2).mean().backward()
            torch_optimizer.step()
    for member, network in enumerate(alone):
        for name_, expected in network.named_parameters():
            got = stacked.networks[member].get_parameter(name_)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


SCHEDULES = [
    ({"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 40}, "step", 1),
    (
        {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 30, "eta_min": 0.01},
        "step",
        2,
    ),
    ({"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.9}, "epoch", 1),
    ({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 3, "gamma": 0.5}, "epoch", 1),
    ({"_target_": "normlab.lit.schedules.inverse_time", "decay_rate": 0.5}, "step", 1),
    ({"_target_": "normlab.lit.schedules.inverse_sqrt", "k": 2.0}, "step", 1),
    (
        {
            "_target_": "normlab.lit.schedules.warmup_cosine",
            "warmup_steps": 5,
            "total_steps": 40,
            "eta_min_factor": 0.1,
        },
        "step",
        1,
    ),
    (None, "epoch", 1),
]


def test_member_schedules_equal_torch_schedulers_member_by_member():
    from hydra.utils import instantiate

    base = torch.tensor([0.1 * (i + 1) for i in range(len(SCHEDULES))], dtype=torch.float64)
    lr = base.clone()
    members = [MemberSchedule(s, interval, frequency) for s, interval, frequency in SCHEDULES]
    schedules = MemberSchedules(members, lr, base)
    torch_side = []
    for (schedule, _, _), rate in zip(SCHEDULES, base.tolist(), strict=True):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=rate)
        made = instantiate({**schedule, "_partial_": True})(optimizer) if schedule else None
        torch_side.append((optimizer, made))
    steps_per_epoch = 4
    for epoch in range(10):
        for batch in range(1, steps_per_epoch + 1):
            for (optimizer, made), member in zip(torch_side, members, strict=True):
                if made and member.interval == "step" and batch % member.frequency == 0:
                    optimizer.step()
                    made.step()
                epoch_due = batch == steps_per_epoch and (epoch + 1) % member.frequency == 0
                if made and member.interval == "epoch" and epoch_due:
                    optimizer.step()
                    made.step()
            schedules.step("step", batch)
            if batch == steps_per_epoch:
                schedules.step("epoch", epoch + 1)
            expected = [optimizer.param_groups[0]["lr"] for optimizer, _ in torch_side]
            assert lr.tolist() == pytest.approx(expected, rel=1e-12)


def test_learning_rate_monitor_logs_every_log_every_n_steps_as_in_plain_lightning(
    compose_cfg, tmp_path
):
    cfg = compose_cfg(
        "data=synthetic",
        "trainer=debug",
        "trainer.max_steps=200",
        "trainer.log_every_n_steps=20",
        "trainer.val_check_interval=100",
        "scheduler=cosine",
        "logger=csv",
    )
    monitor = LearningRateMonitor(logging_interval="step")
    train(cfg, tmp_path / "solo", [monitor])
    rows = pd.read_csv(tmp_path / "solo" / "metrics.csv")
    logged = rows.dropna(subset=["lr-SGD"])
    assert len(logged) == 10
    assert logged["step"].tolist() == list(range(19, 200, 20))


def test_each_member_gets_its_own_learning_rate_from_the_monitor(compose_cfg, tmp_path):
    common = ["data=synthetic", "trainer=debug", "trainer.max_steps=40", "logger=csv"]
    cfgs = [compose_cfg(*common, f"optimizer.lr={lr}") for lr in (0.1, 0.02)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    train_members(cfgs, dirs, tmp_path / "stack", [LearningRateMonitor("step")])
    for run_dir, lr in zip(dirs, (0.1, 0.02), strict=True):
        logged = pd.read_csv(run_dir / "metrics.csv")["lr-SGD"].dropna()
        assert len(logged) == 8 and set(logged) == {lr}


class EveryStep(Callback):
    """The global step each batch hook sees."""

    def __init__(self):
        self.starts, self.ends = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(trainer.global_step)


def test_every_batch_hook_sees_one_optimizer_step(compose_cfg, tmp_path):
    seen = EveryStep()
    train(compose_cfg("data=synthetic", "trainer=debug", "trainer.max_steps=60"), tmp_path, [seen])
    assert seen.starts == list(range(60)) and seen.ends == list(range(1, 61))


def test_a_user_optimizer_trains_through_torch_optim_itself(run_training):
    result, _ = run_training(
        "data=synthetic",
        "trainer=debug",
        "optimizer._target_=torch.optim.Adagrad",
        "optimizer.lr=0.05",
    )
    assert result["status"] == "completed" and result["test/acc"] > 0.5


def test_a_run_shorter_than_the_validation_cadence_validates_at_its_last_step(run_training):
    result, run_dir = run_training("data=synthetic", "trainer.max_steps=30", "logger=csv")
    assert result["val/acc_best"] is not None  # trainer.val_check_interval is 500
    validated = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/acc"])
    assert validated["step"].tolist() == [29]  # once, at the last step (0-based)


def test_16_mixed_cells_train_one_at_a_time(compose_cfg, tmp_path):
    from normlab.config.errors import ConfigError
    from normlab.stack.plan import solo_reason

    cfg = compose_cfg("data=synthetic", "trainer=gpu", "trainer.precision=16-mixed")
    assert "16-mixed scales one loss for the whole stack" in solo_reason(cfg, tmp_path)
    with pytest.raises(ConfigError, match="one loss scale for several members"):
        train_members([cfg, cfg], [tmp_path / "a", tmp_path / "b"], tmp_path / "stack")
