"""The optimization step normlab writes out (Lightning's manual optimization): learning-rate
schedules step by Lightning's rule, gradient clipping bounds the update, the global step counts."""

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from conftest import TINY
from normlab.pipeline import train

# synthetic: 800 training examples in batches of 32 -> 25 steps an epoch


def scheduler_steps(run_dir) -> int:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    [steps] = checkpoint["normlab_schedules"]["steps"].tolist()  # lit.member_schedules
    return int(steps)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["scheduler=cosine", "trainer.max_steps=20"], 20),  # every step
        (["scheduler=cosine", "trainer.max_steps=20", "scheduler.frequency=2"], 10),
        (["scheduler=exponential", "trainer.max_steps=60"], 2),  # epochs ended at steps 25, 50
        (["scheduler=exponential", "trainer.max_steps=24"], 0),  # the first epoch never ended
    ],
)
def test_schedules_step_once_per_interval_and_frequency(run_training, overrides, expected):
    result, run_dir = run_training(*TINY, "trainer.val_check_interval=5", *overrides)
    assert result["status"] == "completed"
    assert scheduler_steps(run_dir) == expected


class ParameterTravel(Callback):
    """How far the parameters moved between the start and the end of training."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_end(self, trainer, pl_module) -> None:
        moved = [p.detach() - s for p, s in zip(pl_module.parameters(), self.start, strict=True)]
        self.distance = float(torch.cat([m.flatten() for m in moved]).norm())


def test_gradient_clipping_by_norm_bounds_each_update(compose_cfg, tmp_path):
    steps, lr, max_norm = 12, 0.1, 1e-4
    overrides = [*TINY, f"trainer.max_steps={steps}", "optimizer=sgd", f"optimizer.lr={lr}"]
    clipped, free = ParameterTravel(), ParameterTravel()
    clip = ["regularizer=[grad_clip]", f"regularizer.grad_clip.value={max_norm}"]
    train(compose_cfg(*overrides, *clip), tmp_path / "clipped", [clipped])
    train(compose_cfg(*overrides), tmp_path / "free", [free])
    # plain SGD moves at most lr * max_norm a step when the global gradient norm is clipped
    assert clipped.distance <= steps * lr * max_norm * (1 + 1e-4)
    assert free.distance > 100 * clipped.distance


def test_the_global_step_counts_optimizer_steps(run_training):
    result, run_dir = run_training(*TINY, "trainer.max_steps=30")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert result["steps"] == 30 and checkpoint["global_step"] == 30
