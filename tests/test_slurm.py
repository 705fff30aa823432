"""SLURM without a cluster: the submitit launcher's job script, and srun tasks emulated locally."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning_fabric.plugins.environments.lightning import find_free_network_port
from pytorch_lightning.callbacks import Callback

from conftest import SHORT, TINY
from helpers import same_result, wait_for_step
from normlab.pipeline import train
from normlab.sweep import CellLock
from normlab.train import main as train_main

FAKE_SBATCH = """#!/bin/bash
cp "$1" "$SBATCH_CAPTURE"
echo "dry run: not submitted" >&2
exit 1
"""


def test_slurm_launcher_renders_a_gpu_job_array_without_submitting(cli_env, tmp_path, in_process):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # submitit looks for srun before it builds the job; sbatch keeps the script and refuses it
    for name, text in {"sbatch": FAKE_SBATCH, "srun": "#!/bin/bash\nexit 1\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    env = dict(cli_env, PATH=f"{bin_dir}:{os.environ['PATH']}", SBATCH_CAPTURE=str(script))
    done = in_process(
        train_main,
        "-m",
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "data.batch_size=64",
        "seed=0,1",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        env=env,
    )
    assert "dry run: not submitted" in done.stderr, done.stderr[-3000:]
    lines = script.read_text().splitlines()
    for flag in (
        "--array=0-1%2",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--time=90",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    assert "export WANDB_MODE=offline" in lines
    [command] = [line for line in lines if line.startswith("srun ")]
    assert "-m submitit.core._submit" in command
    assert not (tmp_path / "outputs" / "runs").exists()


def test_srun_tasks_of_one_run_share_one_run_folder(cli_env, tmp_path):
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_NAME": "normlab",
        "SLURM_NODELIST": "localhost",
        "MASTER_PORT": str(find_free_network_port()),
    }
    tasks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "normlab.train",
                "data=synthetic",
                "trainer=ddp_cpu",
                "trainer.max_steps=10",
                "trainer.val_check_interval=5",
                "threads=1",
            ],
            env=dict(cli_env, **slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    assert run_dir.name == "slurm-4242.0"
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["cluster"], result["world_size"], result["steps"]) == ("SLURMEnvironment", 2, 10)
    assert (run_dir / "rank1.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert Path(run_dir / "metrics.csv").read_text().count("\n0,4,") == 1


# --- preemption and time-outs: a stand-in SLURM that runs jobs on this machine ---

# sbatch: a job id, a copy of the script, and a detached runner that runs each array element
FAKE_CLUSTER_SBATCH = """#!{python}
import os, re, shutil, subprocess, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
script = Path(sys.argv[-1])
counter = state / "next_id"
job = int(counter.read_text()) if counter.exists() else 100
counter.write_text(str(job + 1))
(state / "submitted").mkdir(exist_ok=True)
kept = shutil.copy(script, state / "submitted" / f"{{job}}.sh")
array = re.search(r"#SBATCH --array=0-(\\d+)", script.read_text())
elements = [str(i) for i in range(int(array[1]) + 1)] if array else ["-"]
runner = Path(__file__).with_name("fake_slurm_job")
with open(state / f"{{job}}.runner.log", "w") as out:
    subprocess.Popen([sys.executable, str(runner), str(job), kept, *elements],
                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
print(f"Submitted batch job {{job}}")
"""

# the job runner: one array element after the other; a requeued element runs again
FAKE_CLUSTER_JOB = """#!{python}
import os, subprocess, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
job, script, *elements = sys.argv[1:]
for element in elements:
    name = job if element == "-" else f"{{job}}_{{element}}"
    env = dict(os.environ, SLURM_JOB_ID=job if element == "-" else f"{{job}}{{element}}",
               SLURM_JOB_NAME="normlab", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
               SLURM_NNODES="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
               SLURM_NODELIST="localhost", SLURM_JOB_NODELIST="localhost")
    if element != "-":
        env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=element)
    restarts = 0
    while True:
        env["SLURM_RESTART_COUNT"] = str(restarts)
        (state / f"{{name}}.state").write_text("RUNNING")
        code = subprocess.run(["bash", script], env=env).returncode
        requeued = state / f"{{name}}.requeue"
        if requeued.exists():
            requeued.unlink()
            restarts += 1
            continue
        (state / f"{{name}}.state").write_text("COMPLETED" if code == 0 else "FAILED")
        break
"""

# srun: one task, in this process (exec), its pid kept for the test's signals
FAKE_CLUSTER_SRUN = """#!{python}
import os, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
args, streams = sys.argv[1:], {{}}
while args[0].startswith("-"):
    option = args.pop(0)
    key, _, value = option.partition("=")
    if key in ("--output", "--error"):
        streams[key] = value or args.pop(0)
array = os.environ.get("SLURM_ARRAY_JOB_ID")
name = f"{{array}}_{{os.environ['SLURM_ARRAY_TASK_ID']}}" if array else os.environ["SLURM_JOB_ID"]
for key, fd in (("--output", 1), ("--error", 2)):
    if key in streams:
        path = streams[key].replace("%A", array or "").replace("%a", os.environ.get(
            "SLURM_ARRAY_TASK_ID", "")).replace("%j", name).replace("%t", "0")
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
(state / f"{{name}}.pid").write_text(str(os.getpid()))
os.environ.update(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_STEP_ID="0")
os.execvp(args[0], args)
"""

FAKE_CLUSTER_SCONTROL = """#!{python}
import os, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
with open(state / "scontrol.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "requeue":
    (state / f"{{sys.argv[2]}}.requeue").touch()
"""

FAKE_CLUSTER_SACCT = """#!{python}
import os, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
jobs = [sys.argv[i + 1] for i, arg in enumerate(sys.argv) if arg == "-j"]
print("JobID|State|NodeList")
for path in sorted(state.glob("*.state")):
    if path.stem.split("_")[0] in jobs:
        print(f"{{path.stem}}|{{path.read_text()}}|localhost")
"""


def fake_cluster(tmp_path: Path, env: dict) -> tuple[dict, Path]:
    """A stand-in SLURM on this machine: the environment that submits to it, and its state
    folder (submitted scripts, `<job>.pid` of the running task, scontrol.log)."""
    bin_dir, state = tmp_path / "slurm-bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    scripts = {
        "sbatch": FAKE_CLUSTER_SBATCH,
        "fake_slurm_job": FAKE_CLUSTER_JOB,
        "srun": FAKE_CLUSTER_SRUN,
        "scontrol": FAKE_CLUSTER_SCONTROL,
        "sacct": FAKE_CLUSTER_SACCT,
        "scancel": "#!/bin/bash\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    return dict(env, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(state)), state


STOP_SIGNALS = [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
# a SLURM batch job of one task (your own sbatch script running normlab.train)
BATCH_JOB = {
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "normlab",
    "SLURM_NODELIST": "localhost",
}


class SignalAt(Callback):
    """Sends this process `signum` at the end of training step `step` (as SLURM would)."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step, self.sent = signum, step, False

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def under_batch_job(monkeypatch, tmp_path) -> Path:
    """This process as task 0 of SLURM batch job 4242 (the stand-in scontrol on PATH)."""
    env, state = fake_cluster(tmp_path, dict(os.environ))
    for key, value in {**BATCH_JOB, "PATH": env["PATH"], "FAKE_SLURM_DIR": str(state)}.items():
        monkeypatch.setenv(key, value)
    return state


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_in_a_slurm_job_stops_requeues_and_resumes_exactly(
    compose_cfg, tmp_path, monkeypatch, short_reference, signum
):
    state = under_batch_job(monkeypatch, tmp_path)
    reference = json.loads((short_reference / "result.json").read_text())
    run_dir = tmp_path / "preempted"
    first = train(compose_cfg(*SHORT), run_dir, [SignalAt(signum, 13)])
    assert first["status"] == "preempted" and first["steps"] < 60
    assert first["error"].startswith(signal.Signals(signum).name)
    # requeued once, after the stop (no Lightning HPC checkpoint, no requeue from a handler)
    assert (state / "scontrol.log").read_text() == "requeue 4242\n"
    assert not list(run_dir.glob("hpc_ckpt_*"))
    resumed = train(compose_cfg(*SHORT), run_dir)
    assert resumed["resumed_from_step"] == first["steps"]
    assert resumed["status"] == reference["status"] == "completed"
    same_result(run_dir, short_reference)
    assert (run_dir / "metrics.csv").read_text() == (short_reference / "metrics.csv").read_text()


def test_a_stale_hpc_checkpoint_is_never_trained_or_tested_from(
    compose_cfg, tmp_path, monkeypatch, short_reference
):
    under_batch_job(monkeypatch, tmp_path)
    train(compose_cfg(*SHORT, "seed=1"), tmp_path / "other")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # what Lightning's auto-requeue left: under SLURM its fit and test would load this
    shutil.copy(tmp_path / "other" / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_1.ckpt")
    result = train(compose_cfg(*SHORT), run_dir)
    assert result["resumed_from_step"] is None
    same_result(run_dir, short_reference)
    assert (run_dir / "lightning-hpc-ignored" / "hpc_ckpt_1.ckpt").is_file()


# one sweep cell of ~600 steps: long enough to be signalled mid-way
CELL = [
    "data=synthetic",
    "data.num_samples=20000",
    "trainer.max_steps=600",
    "trainer.val_check_interval=100",
    "regularizer=[dropout]",
    "threads=1",
]


def wait_for_file(pattern: str, root: Path, process: subprocess.Popen, timeout=180) -> Path:
    """The first file under `root` matching `pattern`, once it exists."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} under {root} in {timeout}s")


def job_logs(root: Path) -> str:
    """The submitit job logs of a sweep under `root` (for failure messages)."""
    return "\n".join(p.read_text()[-2000:] for p in sorted(root.glob("outputs/**/*_log.*")))


@pytest.mark.slow  # a sweep process, the job and its requeued run: ~40 s each on 2 cores
@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signalled_submitit_job_is_requeued_and_ends_as_an_uninterrupted_run(
    compose_cfg, cli_env, tmp_path, signum
):
    env, state = fake_cluster(tmp_path, cli_env)
    command = ["-m", "hydra/launcher=slurm", *CELL, "hydra.launcher.gpus_per_node=null"]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "normlab.train", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint = wait_for_file("outputs/multirun/**/checkpoints/last.ckpt", tmp_path, sweep)
    run_dir = checkpoint.parent.parent
    wait_for_step(run_dir, 100, sweep)
    os.kill(int((state / "100.pid").read_text()), signum)  # SLURM signals the job's task
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 0, output[-3000:] + job_logs(tmp_path)
    # the stopped task requeued its job through submitit, which ran it again to completion
    assert (state / "scontrol.log").read_text() == "requeue 100\n", job_logs(tmp_path)
    assert (state / "100.state").read_text() == "COMPLETED"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and 100 <= result["resumed_from_step"] < 600
    train(compose_cfg(*CELL), tmp_path / "reference")
    same_result(run_dir, tmp_path / "reference")
    assert (run_dir / "metrics.csv").read_text() == (
        tmp_path / "reference" / "metrics.csv"
    ).read_text()


@pytest.mark.slow  # a sweep process and its job: ~25 s on 2 cores
def test_a_stacked_sweep_goes_to_slurm_as_one_array_element_per_stack(cli_env, tmp_path):
    env, state = fake_cluster(tmp_path, cli_env)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab.train",
            "-m",
            "hydra/launcher=stacked_slurm",
            *TINY,
            "activation=sigmoid,relu",
            "norm=batch,none",
            "hydra.launcher.slurm.cpus_per_task=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:] + job_logs(tmp_path)
    [script] = (state / "submitted").iterdir()  # one submission: the four cells are one stack
    lines = script.read_text().splitlines()
    assert "#SBATCH --cpus-per-task=1" in lines
    assert not any(line.startswith("#SBATCH --array") for line in lines)  # a job of one stack
    results = sorted(tmp_path.glob("outputs/multirun/**/result.json"))
    assert len(results) == 4
    for path in results:
        assert json.loads(path.read_text())["status"] == "completed"
        stack = json.loads((path.parent / "provenance.json").read_text())["stack"]
        assert stack["members"] == 4


def test_a_requeued_job_takes_over_the_fresh_lock_its_earlier_run_left(tmp_path, monkeypatch):
    # the first run was killed (SIGKILL after the grace time) on another node, seconds ago
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = CellLock(tmp_path, lease_s=600)
    assert first.acquire()
    first._stop.set()  # the process is gone: nothing refreshes or releases the lock
    owner = json.loads((tmp_path / ".cell.lock").read_text())
    (tmp_path / ".cell.lock").write_text(json.dumps({**owner, "host": "other-node"}))
    monkeypatch.setenv("SLURM_JOB_ID", "4343")  # another job: the fresh lease is respected
    assert not CellLock(tmp_path, lease_s=600).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the same job, run again
    assert not CellLock(tmp_path, lease_s=600).acquire()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # ... after its requeue
    again = CellLock(tmp_path, lease_s=600)
    try:
        assert again.acquire()
    finally:
        again.release()


def stacked_slurm_sweep(env: dict, *extra: str) -> subprocess.Popen:
    """The 2x2 activation x norm sweep of CELL through hydra/launcher=stacked_slurm."""
    command = ["-m", "hydra/launcher=stacked_slurm", *CELL, "activation=sigmoid,relu"]
    return subprocess.Popen(
        [sys.executable, "-m", "normlab.train", *command, "norm=batch,none", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow  # two stacked sweeps through the stand-in SLURM, one of them requeued: ~2 min
def test_a_preempted_stack_on_slurm_is_requeued_and_ends_as_an_uninterrupted_one(cli_env, tmp_path):
    reference_root = tmp_path / "reference"
    reference_root.mkdir()
    env, _ = fake_cluster(reference_root, dict(cli_env, NORMLAB_ROOT=str(reference_root)))
    reference = stacked_slurm_sweep(env)
    output = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, output[-3000:]
    env, state = fake_cluster(tmp_path, cli_env)
    sweep = stacked_slurm_sweep(env)
    wait_for_file("outputs/multirun/**/stacks/*/checkpoints/last.ckpt", tmp_path, sweep)
    os.kill(int((state / "100.pid").read_text()), signal.SIGUSR2)  # submitit's time-out signal
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 0, output[-3000:] + job_logs(tmp_path)
    assert (state / "scontrol.log").read_text() == "requeue 100\n", job_logs(tmp_path)
    cells = sorted(tmp_path.glob("outputs/multirun/**/result.json"))
    references = sorted(reference_root.glob("outputs/multirun/**/result.json"))
    assert [p.parent.name for p in cells] == [p.parent.name for p in references] and len(cells) == 4
    for cell, reference in zip(cells, references, strict=True):
        result = json.loads(cell.read_text())
        assert result["status"] == "completed" and 100 <= result["resumed_from_step"] < 600
        same_result(cell.parent, reference.parent)
        metrics = (cell.parent / "metrics.csv").read_text()
        assert metrics == (reference.parent / "metrics.csv").read_text()
