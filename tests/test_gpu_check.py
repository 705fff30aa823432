"""The GPU check (`make gpu-check`): it cannot pass by checking nothing. Its logic runs here on
CPU (--allow-cpu); on a machine whose driver lists a GPU that torch cannot use it fails with
exit 3; its deadline ends it with exit 4. Its GPU comparisons run only on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_environment

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def gpu_check(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    """scripts/gpu_check.sh ARGS with this interpreter, its summary in tmp_path."""
    env = {**cli_environment(tmp_path), "PY": sys.executable}
    if path is not None:
        env["PATH"] = path
    command = ["bash", str(SCRIPT), "--work", str(tmp_path / "work"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "work" / "gpu_check.json").read_text())


def check_cpu_summary(found: dict, two_ranks: bool, scaling: bool = False) -> None:
    """A --allow-cpu run's summary: versions, a reasoned SKIP, numbers within their limits."""
    assert found["exit_code"] == 0 and found["device"] == "cpu"
    versions = found["versions"]
    assert versions["torch"] == torch.__version__
    assert {"cuda", "cudnn", "nccl", "tf32_matmul", "tf32_cudnn"} <= versions.keys()
    checks = {check["name"]: check for check in found["checks"]}
    # the comparison with a GPU run needs a GPU, and says so
    assert checks["cpu-vs-gpu"]["status"] == "SKIP"
    assert "needs a GPU" in checks["cpu-vs-gpu"]["reason"]
    # 16-mixed autocasts on CUDA only, and says so
    assert checks["16-mixed-stack-lr50"]["status"] == "SKIP"
    assert "needs a GPU" in checks["16-mixed-stack-lr50"]["reason"]
    # every other check measured a number against its reference
    measured = ["stacked-vs-solo", "deterministic", "sigterm-resume"]
    if scaling:
        assert checks["member-scaling"]["status"] == "PASS", checks["member-scaling"]
        rates = checks["member-scaling"]["measured"]["member_steps_per_s"]
        assert set(rates) == {"1", "12", "48", "256", "1024"}
    for name in measured + (["ddp-2-sync-bn-parity"] if two_ranks else []):
        assert checks[name]["status"] == "PASS", checks[name]
        numbers = checks[name]["measured"]
        assert 0 <= numbers["max_rel_diff"] <= numbers["limit"], (name, numbers)
    assert checks["stacked-vs-solo"]["measured"]["members"] == 3
    assert 0 < checks["sigterm-resume"]["measured"]["stopped_at"] < 300


@no_gpu_here
def test_the_gpu_check_on_cpu_measures_every_number_it_can(tmp_path, capsys):
    """In this process, but for the two-rank check (seconds of rank start-up) and the
    member-scaling table (a minute): the slow test below runs them."""
    from normlab.gpu_check.__main__ import main

    only = "^(?!ddp-2|member-scaling)"
    assert main(["--allow-cpu", "--work", str(tmp_path / "work"), "--only", only]) == 0
    check_cpu_summary(summary(tmp_path), two_ranks=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"gpu-check: torch {torch.__version__}, cuda ")
    assert "tf32_matmul" in lines[0]
    assert lines[-1].startswith("gpu-check: 3 PASS, 0 FAIL, 2 SKIP")


@no_gpu_here
@pytest.mark.slow  # every check through make gpu-check's script, two gloo ranks included: ~2 min
def test_the_gpu_check_script_on_cpu_passes_with_every_check(tmp_path):
    done = gpu_check(tmp_path, "--allow-cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    check_cpu_summary(summary(tmp_path), two_ranks=True, scaling=True)
    assert done.stdout.splitlines()[-1].startswith("gpu-check: 5 PASS, 0 FAIL, 2 SKIP")


@no_gpu_here
def test_a_gpu_the_driver_lists_but_torch_cannot_use_fails_with_exit_3(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)"\n')
    fake.chmod(0o755)
    # with --allow-cpu too: a CPU run on a GPU machine is the vacuous pass this check refuses
    done = gpu_check(tmp_path, "--allow-cpu", path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "FAIL  gpu-check: nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100" in done.stdout
    assert "but torch sees none" in done.stdout
    assert summary(tmp_path)["exit_code"] == 3 and summary(tmp_path)["checks"] == []


@no_gpu_here
def test_no_gpu_and_no_allow_cpu_is_not_a_pass(tmp_path, monkeypatch, capsys):
    from normlab.gpu_check.__main__ import main

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi on it
    assert main(["--work", str(tmp_path / "work")]) == 3
    assert "FAIL  gpu-check: no GPU here" in capsys.readouterr().out
    assert summary(tmp_path)["checks"] == []


def test_the_deadline_ends_every_check_with_exit_4(tmp_path):
    done = gpu_check(tmp_path, "--allow-cpu", "--deadline-s", "1")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "DEADLINE after 1s" in done.stdout
    found = summary(tmp_path)
    assert found["exit_code"] == 4 and found["deadline_exceeded"] is True
