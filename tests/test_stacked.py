"""Stacked members (normlab.stack): a member trains exactly as its solo run, members are
independent, and a stacked sweep fills the same cell folders, resumes after SIGKILL and reads
into the same report.

Tolerance: a member's per-step training loss equals its solo run's within 1e-5 relative
(float32; the stack's batched matmuls add in another order than one member's); a stack of one
is the solo run itself, bit for bit.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normlab.pipeline import train, train_members
from normlab.stack.plan import Cell, plan_stacks, solo_reason, stack_key
from normlab.train import main as train_main

# 50 steps, every one logged
PER_STEP = [
    "data=synthetic",
    "trainer=debug",
    "trainer.max_steps=50",
    "trainer.log_every_n_steps=1",
    "trainer.val_check_interval=25",
    "threads=1",
]
RELATIVE = 1e-5


def step_losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]


def assert_same_losses(solo: Path, member: Path) -> None:
    expected, got = step_losses(solo), step_losses(member)
    assert len(got) == len(expected) == 50
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert abs(a - b) <= RELATIVE * abs(a), f"step {step}: solo {a}, stacked {b}"


def train_stack_and_solos(compose_cfg, tmp_path: Path, variants: list[list[str]], common=()):
    cfgs = [compose_cfg(*PER_STEP, *common, *variant) for variant in variants]
    members = [tmp_path / f"member{i}" for i in range(len(cfgs))]
    results = train_members(cfgs, members, tmp_path / "stack")
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"solo{i}")
    return results, members


def test_each_member_trains_as_its_solo_run(compose_cfg, tmp_path):
    variants = [
        ["norm=batch", "activation=sigmoid", "seed=0"],
        ["norm=none", "activation=relu", "seed=1"],
        ["norm=group", "norm.num_groups=4", "activation=tanh", "seed=2"],
        ["norm=layer", "regularizer=[dropout]", "seed=3"],
        ["scheduler=cosine", "optimizer.lr=0.05", "init=he_normal", "seed=4"],
        ["regularizer=[l2,label_smoothing,grad_clip,weight_decay]", "seed=5"],
    ]
    results, members = train_stack_and_solos(compose_cfg, tmp_path, variants)
    assert [r["status"] for r in results] == ["completed"] * len(variants)
    for i in range(len(variants)):
        assert_same_losses(tmp_path / f"solo{i}", members[i])


def test_adam_members_with_their_own_schedules_train_as_solo(compose_cfg, tmp_path):
    variants = [
        ["optimizer.lr=0.01", "scheduler=cosine", "seed=0"],
        ["optimizer.lr=0.003", "optimizer.betas=[0.8,0.99]", "scheduler=step", "seed=1"],
    ]
    _, members = train_stack_and_solos(compose_cfg, tmp_path, variants, ["optimizer=adam"])
    for i in range(len(variants)):
        assert_same_losses(tmp_path / f"solo{i}", members[i])


def test_cnn_members_train_as_solo(compose_cfg, tmp_path):
    variants = [["norm=batch", "seed=0"], ["norm=group", "norm.num_groups=4", "seed=1"]]
    common = ["data=digits", "model=cnn", "model.width=8", "regularizer=[augment,dropout]"]
    _, members = train_stack_and_solos(compose_cfg, tmp_path, variants, common)
    for i in range(len(variants)):
        assert_same_losses(tmp_path / f"solo{i}", members[i])


def test_a_stack_of_one_is_the_solo_run_bit_for_bit(compose_cfg, tmp_path):
    cfg = compose_cfg(*PER_STEP, "regularizer=[dropout]")
    train_members([cfg], [tmp_path / "member"], tmp_path / "member")
    train(cfg, tmp_path / "solo")
    assert (tmp_path / "member/metrics.csv").read_bytes() == (
        tmp_path / "solo/metrics.csv"
    ).read_bytes()


def test_changing_one_member_leaves_the_others_bit_identical(compose_cfg, tmp_path):
    def stack(folder: str, middle_lr: float) -> list[Path]:
        variants = [["seed=0"], [f"optimizer.lr={middle_lr}", "seed=7"], ["seed=2"]]
        cfgs = [compose_cfg(*PER_STEP, "regularizer=[dropout]", *v) for v in variants]
        dirs = [tmp_path / folder / str(i) for i in range(3)]
        train_members(cfgs, dirs, tmp_path / folder / "stack")
        return dirs

    first, second = stack("a", 0.1), stack("b", 0.5)
    for i in (0, 2):
        assert (first[i] / "metrics.csv").read_bytes() == (second[i] / "metrics.csv").read_bytes()
    assert (first[1] / "metrics.csv").read_bytes() != (second[1] / "metrics.csv").read_bytes()


def test_a_diverging_member_is_recorded_and_the_others_go_on(compose_cfg, tmp_path):
    overrides = [*PER_STEP, "trainer.log_every_n_steps=5", "activation=relu", "norm=none"]
    cfgs = [compose_cfg(*overrides, "seed=1"), compose_cfg(*overrides, "optimizer.lr=100")]
    dirs = [tmp_path / "fine", tmp_path / "diverges"]
    fine, diverged = train_members(cfgs, dirs, tmp_path / "stack")
    solo = train(cfgs[1], tmp_path / "solo")
    assert solo["status"] == diverged["status"] == "diverged"
    assert diverged["diverged_at_step"] == solo["diverged_at_step"]
    assert diverged["steps"] == solo["steps"]
    assert fine["status"] == "completed" and fine["steps"] == 50 and "test/acc" in fine
    assert json.loads((dirs[1] / "result.json").read_text())["status"] == "diverged"


def test_member_wise_keys_share_a_stack_and_the_rest_does_not(compose_cfg, tmp_path):
    base = compose_cfg("data=synthetic")
    members = [
        compose_cfg("data=synthetic", "activation=relu", "norm=none", "seed=3"),
        compose_cfg("data=synthetic", "optimizer.lr=0.3", "+optimizer.momentum=0.5"),
        compose_cfg("data=synthetic", "regularizer=[dropout,l2]", "init=xavier_uniform"),
        compose_cfg("data=synthetic", "scheduler=cosine", "seed_data=5", "threads=1"),
    ]
    assert {stack_key(cfg) for cfg in members} == {stack_key(base)}
    for other in (["data.batch_size=30"], ["optimizer=adam"], ["model.width=50"]):
        assert stack_key(compose_cfg("data=synthetic", *other)) != stack_key(base)
    assert solo_reason(compose_cfg("data=synthetic", "compile=true"), tmp_path) is not None
    assert solo_reason(base, tmp_path) is None


def test_stacks_split_to_fill_the_cores_each_with_a_share_of_every_kind_side_by_side(
    compose_cfg, tmp_path
):
    cells = [
        Cell(compose_cfg("data=synthetic", f"activation={act}", f"seed={seed}"), tmp_path, i)
        for i, (seed, act) in enumerate((s, a) for s in range(3) for a in ("relu", "sigmoid"))
    ]
    [one] = plan_stacks(cells, max_members=48, jobs=1)
    kinds = [cell.cfg.activation.name for cell in one.cells]
    assert kinds == sorted(kinds)  # each kind a contiguous slice of the member axis
    halves = plan_stacks(cells, max_members=48, jobs=2)
    assert sorted(len(stack.cells) for stack in halves) == [3, 3]
    for stack in (*halves, *plan_stacks(cells, max_members=4, jobs=1)):
        kinds = [cell.cfg.activation.name for cell in stack.cells]
        assert kinds == sorted(kinds) and set(kinds) == {"relu", "sigmoid"}  # a share of each
    assert [len(s.cells) for s in plan_stacks(cells, max_members=4, jobs=1)] == [3, 3]


SWEEP = [
    "-m",
    "hydra/launcher=stacked",
    "data=synthetic",
    "trainer=debug",
    "trainer.max_steps=600",  # each stack is paused at its first checkpoint, then killed
    "trainer.val_check_interval=50",
    "norm=batch,none",
    "seed=0,1",
]


def start_sweep(env: dict) -> subprocess.Popen:
    """SWEEP as a real process, in a session of its own (to be killed with its workers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "normlab.train", *SWEEP],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def cells_of(sweep_root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep_root.glob("outputs/multirun/*/*/*/result.json")}


def stack_workers(root: Path) -> dict[str, int]:
    """The stack workers training under `root`: {stack name: pid}. A worker's stdout is its
    stack's log, stacks/<stack name>.log (Linux: read from /proc)."""
    workers = {}
    for entry in Path("/proc").iterdir():
        try:
            if b"normlab.stack.worker" not in (entry / "cmdline").read_bytes():
                continue
            log = Path(os.readlink(entry / "fd" / "1"))
        except OSError:  # not a process, or one that just ended
            continue
        if log.is_relative_to(root) and log.parent.name == "stacks":
            workers[log.stem] = int(entry.name)
    return workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stacked_sweep_killed_and_rerun_ends_as_an_uninterrupted_one(tmp_path, in_process):
    from conftest import cli_environment

    # the uninterrupted sweep and the rerun run through main() in this process (their stacks
    # train in worker processes all the same); the killed one is a process group of its own
    reference = cli_environment(tmp_path / "reference")
    done = in_process(train_main, *SWEEP, env=reference)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "report:" in done.stdout
    expected = cells_of(tmp_path / "reference")
    assert len(expected) == 4

    env = cli_environment(tmp_path / "killed")
    process = start_sweep(env)
    deadline = time.time() + 120
    checkpoints = "outputs/multirun/*/*/stacks/stack-*/checkpoints/*.ckpt"
    paused: set[str] = set()
    try:
        # each stack's worker is paused (SIGSTOP) once its first checkpoint is written, so a
        # worker that started sooner cannot finish while the other one is still starting
        while len(paused) < 2:  # both stacks part-way
            assert process.poll() is None and time.time() < deadline, "no stack checkpoint appeared"
            written = {path.parents[1].name for path in (tmp_path / "killed").glob(checkpoints)}
            if written - paused:
                for stack, pid in stack_workers(tmp_path / "killed").items():
                    if stack in written - paused:
                        os.kill(pid, signal.SIGSTOP)
                        paused.add(stack)
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its workers, paused or not
        process.wait()
    done = in_process(train_main, *SWEEP, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = cells_of(tmp_path / "killed")
    assert resumed.keys() == expected.keys()
    for name, cell in resumed.items():
        result = json.loads((cell / "result.json").read_text())
        assert result["status"] == "completed"
        assert result["resumed_from_step"] is not None, f"{name} started over"
        assert (cell / "metrics.csv").read_bytes() == (expected[name] / "metrics.csv").read_bytes()
        provenance = json.loads((cell / "provenance.json").read_text())
        assert provenance["stack"]["members"] == 2
        # the values torch.backends.cpu.get_cpu_capability documents
        kernels = ("DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256")
        assert provenance["cpu_kernels"] in kernels


def test_each_member_logs_to_its_own_wandb_run(compose_cfg, tmp_path):
    from wandb_reader import wandb_history

    cfgs = [
        compose_cfg("data=synthetic", "trainer=debug", "logger=wandb", f"seed={s}") for s in (0, 1)
    ]
    dirs = [tmp_path / "m0", tmp_path / "m1"]
    train_members(cfgs, dirs, tmp_path / "stack")
    for run_dir in dirs:
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
        logged = [row["train/loss"] for row in wandb_history(run_dir) if "train/loss" in row]
        assert logged and logged == pytest.approx(step_losses(run_dir), rel=1e-6)
    # the stack's process lists its packages once, in its first member's run
    listed = [bool(list((d / "wandb").glob("offline-run-*/files/requirements.txt"))) for d in dirs]
    assert listed == [True, False]


def test_an_early_stopped_member_ends_as_its_solo_run(compose_cfg, tmp_path):
    common = [*PER_STEP, "trainer.max_steps=200", "trainer.val_check_interval=10"]
    stops = ["regularizer=[early_stopping]", "regularizer.early_stopping.patience=1", "seed=3"]
    cfgs = [compose_cfg(*common, *stops), compose_cfg(*common, "seed=1")]
    dirs = [tmp_path / "stops", tmp_path / "trains_on"]
    stopped, trained = train_members(cfgs, dirs, tmp_path / "stack")
    solo = train(cfgs[0], tmp_path / "solo")
    assert solo["steps"] < 200, "the solo run should stop early for this test to mean anything"
    assert stopped["steps"] == solo["steps"] and trained["steps"] == 200
    assert stopped["test/acc"] == pytest.approx(solo["test/acc"], abs=1e-6)
    assert stopped["val/acc_best"] == pytest.approx(solo["val/acc_best"], abs=1e-6)
    assert len(step_losses(dirs[0])) == len(step_losses(tmp_path / "solo"))


def configuration_accuracies(sweep_root: Path) -> dict[tuple[str, str], list[float]]:
    found: dict[tuple[str, str], list[float]] = {}
    for cell in cells_of(sweep_root).values():
        result = json.loads((cell / "result.json").read_text())
        key = tuple(part for part in cell.name.split(",") if not part.startswith("seed="))
        found.setdefault(key, []).append(result["test/acc"])
    return found


@pytest.mark.slow  # two 12-cell ablations on Fashion-MNIST: ~3 min on 2 cores
def test_a_stacked_ablation_agrees_with_the_solo_sweep(tmp_path, data_dir):
    from conftest import cli_environment

    runs = {}
    for launcher in ("basic", "stacked"):
        env = cli_environment(tmp_path / launcher)
        command = [sys.executable, "-m", "normlab.train", "-m", "experiment=bn_sigmoid_vs_relu"]
        command.append("logger=csv")  # the launchers' agreement, not W&B
        done = subprocess.run(
            [*command, f"hydra/launcher={launcher}"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[launcher] = configuration_accuracies(tmp_path / launcher)
    assert list((tmp_path / "stacked").glob("outputs/multirun/*/*/report/report.md"))
    t_975 = 4.303  # Student's t, 2 degrees of freedom (3 seeds)
    for key, solo in runs["basic"].items():
        stacked = runs["stacked"][key]
        assert len(solo) == len(stacked) == 3
        mean = sum(solo) / 3
        std = (sum((a - mean) ** 2 for a in solo) / 2) ** 0.5
        half_width = t_975 * std / 3**0.5
        assert abs(sum(stacked) / 3 - mean) <= half_width, (key, solo, stacked)


def test_cells_composed_once_per_choice_of_groups_equal_hydras_compositions(tmp_path):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hydra_plugins.normlab_stacked.composed_once import ComposedOnce
    from normlab.paths import CONFIG_DIR

    cells = [
        ["norm=batch", "seed=3", "optimizer.lr=0.3"],
        ["norm=batch", "seed=4", "optimizer.lr=0.1", "+optimizer.momentum=0.5"],
        ["norm=none", "seed=3", "regularizer=[l2]", "regularizer.l2.strength=0.01"],
        ["norm=none", "seed=5", "regularizer=[l2]", "trainer.max_steps=7", "name=other"],
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        common = [f"paths.root_dir={tmp_path}", "data=synthetic", "hydra/launcher=stacked"]
        master = loader.load_configuration("train", common, RunMode.MULTIRUN)
        once = ComposedOnce(loader)
        for cell in cells:
            ours, hydras = (
                once.load_sweep_config(master, cell),
                loader.load_sweep_config(master, cell),
            )
            assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras), cell
            assert ours.hydra.job.override_dirname == hydras.hydra.job.override_dirname
            assert once.take(master, cell) is ours  # the sweeper's composition, kept
    # two choices of groups (norm=batch; norm=none with regularizer=[l2]), composed once each
    assert len(once.bases) == 2


def test_a_workers_typed_member_configs_equal_the_schemas_own(compose_cfg):
    from omegaconf import OmegaConf

    from normlab.models.options import typed_config
    from normlab.stack.plan import resolved_task
    from normlab.stack.worker import typed_configs

    variants = [
        ["norm=batch", "init=normal"],
        ["norm=none", "init=xavier_uniform", "optimizer=adam", "regularizer=[l2,dropout]"],
        ["norm=group", "optimizer=sgd", "scheduler=cosine", "regularizer=[label_smoothing]"],
    ]
    trees = [resolved_task(compose_cfg("data=synthetic", *v)) for v in variants]
    for tree, fast in zip(trees, typed_configs(trees), strict=True):
        slow = typed_config(tree)
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow)
        for group in ("norm", "regularizer", "init", "scheduler"):
            assert OmegaConf.get_type(fast, group) is OmegaConf.get_type(slow, group)
