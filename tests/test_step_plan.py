"""Several optimizer steps per Lightning batch (normlab.lit.step_plan): the chunks cover the
batches in order, end wherever something happens between steps, and change no number a run
produces (metrics.csv, weights, result) against one step per Lightning batch."""

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from conftest import TINY
from helpers import same_result
from normlab.data.batches import ResidentBatches, StepChunk
from normlab.lit.step_plan import StepPlan
from normlab.pipeline import train

# synthetic: 800 training examples in batches of 32 -> 25 steps an epoch

PLAN = StepPlan(
    steps_per_call=7,
    val_every=9,
    val_within_epoch=False,
    log_every=4,
    record_every=6,
    max_steps=53,
)


def walk(batches: ResidentBatches, epochs: int) -> list[StepChunk]:
    """The chunks of `epochs` epochs, as Lightning's loop would fetch them."""
    chunks = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        chunks.extend(batches)
    return chunks


def test_chunks_hold_every_batch_in_order_and_end_where_something_happens():
    x, y = torch.randn(110, 3), torch.arange(110)
    plain = ResidentBatches(x, y, 10, shuffle=True, drop_last=True, seed=3)
    chunked = ResidentBatches(x, y, 10, shuffle=True, drop_last=True, seed=3, plan=PLAN)
    labels = []
    for epoch in range(6):
        plain.set_epoch(epoch)
        labels.extend(batch_y for _, batch_y in plain)
    chunks = walk(chunked, 6)
    assert torch.equal(torch.cat([c.y for c in chunks]), torch.cat(labels))
    steps, ends = 0, [0]
    for chunk in chunks:
        assert 1 <= len(chunk.sizes) <= PLAN.steps_per_call and set(chunk.sizes) == {10}
        assert chunk.first == steps % 11 and chunk.epoch_steps == 11  # 11 batches an epoch
        steps += len(chunk.sizes)
        ends.append(steps)
        assert chunk.validate_after == (steps % PLAN.val_every == 0)
    for step in range(1, steps + 1):
        event = (
            step % 4 == 0  # a logged training window
            or step % 9 == 0  # validation
            or step % 6 in (0, 1)  # a recording step is a chunk of its own
            or step % 11 == 0  # the epoch's end
            or step == 53  # max_steps
        )
        if event:
            assert step in ends, step
        elif step in ends:  # a chunk ended with nothing happening: only when it was full
            assert step - ends[ends.index(step) - 1] == PLAN.steps_per_call, step
    assert any(len(c.sizes) > 1 for c in chunks)  # it did group steps


def test_validation_counted_within_the_epoch_when_check_val_every_n_epoch_is_set():
    plan = StepPlan(steps_per_call=50, val_every=4, val_within_epoch=True, log_every=100)
    chunks = walk(
        ResidentBatches(
            torch.randn(60, 2), torch.arange(60), 6, shuffle=False, drop_last=True, plan=plan
        ),
        2,
    )
    validated = [c.first + len(c.sizes) for c in chunks if c.validate_after]
    assert validated == [4, 8, 4, 8]  # 10 steps an epoch: the count restarts each epoch


def test_a_resumed_epoch_continues_with_the_same_chunks():
    x, y = torch.randn(110, 3), torch.arange(110)
    done = [0]
    whole = walk(ResidentBatches(x, y, 10, shuffle=True, drop_last=True, seed=1, plan=PLAN), 2)
    resumed = ResidentBatches(
        x, y, 10, shuffle=True, drop_last=True, seed=1, plan=PLAN, steps_done=lambda: done[0]
    )
    ends = [sum(len(c.sizes) for c in whole[: i + 1]) for i in range(len(whole))]
    cut = next(e for e in ends if e > 11)  # a chunk end in the second epoch
    done[0] = cut
    resumed.load_state_dict({"epoch": 1, "consumed": cut - 11})
    rest = list(resumed)
    assert [c.sizes for c in rest] == [c.sizes for c in whole[ends.index(cut) + 1 :]]
    assert torch.equal(rest[0].y, whole[ends.index(cut) + 1].y)


def test_ddp_ranks_get_their_share_of_every_batch_in_a_chunk():
    x, y = torch.randn(96, 2), torch.arange(96)
    plan = StepPlan(steps_per_call=3, val_every=100, val_within_epoch=False, log_every=100)
    single = walk(ResidentBatches(x, y, 12, shuffle=True, drop_last=True, seed=3, plan=plan), 1)
    ranks = [
        walk(
            ResidentBatches(
                x, y, 12, shuffle=True, drop_last=True, seed=3, plan=plan, rank=r, world_size=2
            ),
            1,
        )
        for r in range(2)
    ]
    for whole, *shares in zip(single, *ranks, strict=True):
        assert shares[0].sizes == shares[1].sizes == (6,) * len(whole.sizes)
        parts = [torch.stack(s.y.split(6)) for s in shares]  # steps x 6
        assert torch.equal(torch.cat(parts, dim=1).flatten(), whole.y)


CADENCES = [
    # odd cadences: instruments every 6, a per-step schedule, logging every 4, validation every 9
    [
        "callbacks=instruments",
        "callbacks.instruments.every_n_steps=6",
        "callbacks.instruments.probe_size=64",
        "scheduler=step",
        "scheduler.interval=step",
        "trainer.log_every_n_steps=4",
        "trainer.val_check_interval=9",
        "trainer.max_steps=53",
        "regularizer=[dropout]",
    ],
    # validation counted within each epoch, an epoch schedule, stopped by max_epochs
    [
        "trainer.check_val_every_n_epoch=1",
        "trainer.val_check_interval=10",
        "trainer.max_steps=-1",
        "trainer.max_epochs=3",
        "scheduler=exponential",
    ],
]


@pytest.mark.parametrize("overrides", CADENCES, ids=["odd-cadences", "epoch-validation"])
def test_chunked_steps_change_no_number(run_training, tmp_path, overrides):
    one, seven = tmp_path / "k1", tmp_path / "k7"
    for steps_per_call, run_dir in ((1, one), (7, seven)):
        result, _ = run_training(
            *TINY, *overrides, f"steps_per_call={steps_per_call}", run_dir=run_dir
        )
        assert result["status"] == "completed"
    # same rows, same steps, same values
    assert (seven / "metrics.csv").read_text() == (one / "metrics.csv").read_text()
    same_result(seven, one)
    weights1, weights7 = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for d in (one, seven)
    )
    assert all(torch.equal(weights7[name], weights1[name]) for name in weights1)


class BatchEnds(Callback):
    """The global step at every Lightning batch end."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.steps.append(trainer.global_step)


def test_a_default_run_takes_several_steps_per_lightning_batch(compose_cfg, tmp_path):
    ends = BatchEnds()
    # 25 steps an epoch; logging every 5 and validation every 10 (trainer=debug), 40 steps
    result = train(compose_cfg(*TINY, "trainer.max_steps=40"), tmp_path / "run", [ends])
    assert result["status"] == "completed"
    assert ends.steps == [5, 10, 15, 20, 25, 30, 35, 40]  # 8 batches, not 40
