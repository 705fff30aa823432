"""SLURM without a cluster: the submitit launcher's job script, and srun tasks emulated locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning_fabric.plugins.environments.lightning import find_free_network_port

FAKE_SBATCH = """#!/bin/bash
cp "$1" "$SBATCH_CAPTURE"
echo "dry run: not submitted" >&2
exit 1
"""


def test_slurm_launcher_renders_a_gpu_job_array_without_submitting(cli_env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # submitit looks for srun before it builds the job; sbatch keeps the script and refuses it
    for name, text in {"sbatch": FAKE_SBATCH, "srun": "#!/bin/bash\nexit 1\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    env = dict(cli_env, PATH=f"{bin_dir}:{os.environ['PATH']}", SBATCH_CAPTURE=str(script))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab.train",
            "-m",
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "data.batch_size=64",
            "seed=0,1",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=90",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
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
