#!/usr/bin/env bash
# normlab's GPU paths end to end, on the machine's real GPUs (`make gpu-check`, or run it from a
# fresh clone after `make install`). One line per check: PASS / FAIL / SKIP, seconds, and a
# summary; exit 1 on any FAIL. Without a CUDA GPU every check is a SKIP and the exit code is 0.
#
# What each check proves (docs/reliability.md, "The GPU check"):
#   gpu, gpu-steps-per-call-1   trainer=gpu trains (chunked steps and one step per call agree)
#   bf16-mixed, 16-mixed        autocast trains; the training sums and weights stay float32
#   compile                     compile=true (torch.compile) trains
#   instruments-wandb           callbacks=instruments + logger=wandb (offline)
#   deterministic               trainer.deterministic=true with the instruments, twice: equal
#   sigterm-resume              SIGTERM mid-run with dropout, re-run: metrics.csv as uninterrupted
#   ddp-1                       trainer=ddp on one GPU
#   ddp-2-sync-bn-parity        2 GPUs, norm.sync=true (fused SyncBatchNorm over NCCL) follow one
#                               GPU on the global batch, step by step
#   ddp-2-sigterm-resume        2 GPUs, dropout, SIGTERM + re-run as uninterrupted; every rank's
#                               own CUDA generator in the checkpoint
#   stacked                     hydra/launcher=stacked: two members as one stack on a GPU
#   pytest-gpu                  the test suite's GPU-only tests
#
# Environment: PY (default .venv/bin/python), GPU_CHECK_DIR (default: a new folder in /tmp),
# GPU_CHECK_TIMEOUT (seconds per check, default 300), GPU_CHECK_ONLY (a regex of check names),
# GPU_CHECK_STAND_IN=cpu (a dry run of the script itself on CPU processes; proves nothing on GPUs).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/normlab-gpu-check.XXXXXX)}
LIMIT=${GPU_CHECK_TIMEOUT:-300}
GPU_CHECK_STAND_IN=${GPU_CHECK_STAND_IN:-}
ONLY=${GPU_CHECK_ONLY:-.}
mkdir -p "$WORK"
export NORMLAB_ROOT="$WORK" WANDB_MODE=offline WANDB_SILENT=true HYDRA_FULL_ERROR=1

if ! "$PY" -c 'import normlab' 2>/dev/null; then
    echo "gpu-check: $PY cannot import normlab; run \`make install\` first (or set PY=...)" >&2
    exit 2
fi
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "${GPU_CHECK_STAND_IN:-}" = cpu ]; then
    # a dry run of this script's own logic on CPU: trainer=gpu -> cpu, ddp -> ddp_cpu, 2 "GPUs"
    GPUS=2
    echo "gpu-check: STAND-IN run on CPU (GPU_CHECK_STAND_IN=cpu): nothing here runs on a GPU"
elif [ "$GPUS" -eq 0 ]; then
    echo "gpu-check: no CUDA GPU here (torch $("$PY" -c 'import torch; print(torch.__version__)')): every check is a SKIP"
else
    echo "gpu-check: $GPUS GPU(s): $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))'); logs in $WORK"
fi

# Python helpers the checks call: results, comparisons, an interrupted run.
HELP="$WORK/gpu_check_helpers.py"
cat >"$HELP" <<'PYEOF'
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import torch

def result(run):
    return json.loads((Path(run) / "result.json").read_text())

def acc(run, least):
    r = result(run)
    assert r["status"] == "completed", r
    assert r["test/acc"] >= float(least), f"test/acc {r['test/acc']:.4f} < {least}"
    print(f"test/acc={r['test/acc']:.4f}")

def near_acc(a, b, gap):
    x, y = result(a)["test/acc"], result(b)["test/acc"]
    assert abs(x - y) <= float(gap), f"test/acc {x:.4f} vs {y:.4f}"

def losses(run):
    m = pd.read_csv(Path(run) / "metrics.csv")
    return m.dropna(subset=["train/loss"]).set_index("step")["train/loss"]

def same_losses(a, b, rtol):
    pd.testing.assert_series_equal(losses(a), losses(b), rtol=float(rtol), atol=1e-6)
    print(f"{len(losses(a))} logged steps agree within rtol {rtol}")

def same_file(a, b):
    assert Path(a).read_bytes() == Path(b).read_bytes(), f"{a} differs from {b}"

def books(run):
    state = torch.load(Path(run) / "checkpoints/last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    kinds = {v.dtype for v in state.values() if v.is_floating_point()}
    assert kinds == {torch.float32}, kinds

def rank_streams(run, world):
    ranks = torch.load(Path(run) / "checkpoints/last.ckpt", map_location="cpu",
                       weights_only=False)["normlab_rank_rng"]
    assert len(ranks) == int(world), len(ranks)
    for kind in ["cpu"] if os.environ.get("GPU_CHECK_STAND_IN") else ["cpu", "cuda"]:
        states = [r[kind][0] if r[kind] else None for r in ranks]
        assert all(s is not None for s in states), f"no {kind} generator saved"
        assert not torch.equal(states[0], states[1]), f"the ranks' {kind} streams are equal"

def wandb_run(run):
    assert list(Path(run).glob("wandb/offline-run-*")), "no offline W&B run"

def cells(root, count):
    found = [result(p.parent)["status"] for p in Path(root).glob("outputs/multirun/**/result.json")]
    assert found.count("completed") == int(count), found

def interrupt(run, step, *args):
    """Start a run, SIGTERM it once it has checkpointed past `step`, expect exit 143."""
    run = Path(run)
    proc = subprocess.Popen([sys.executable, "-m", "normlab.train", *args, f"hydra.run.dir={run}"])
    deadline = time.time() + 600
    while time.time() < deadline:
        assert proc.poll() is None, f"ended (code {proc.returncode}) before the interruption"
        ckpt, metrics = run / "checkpoints/last.ckpt", run / "metrics.csv"
        if ckpt.is_file() and metrics.is_file():
            steps = pd.read_csv(metrics)["step"].dropna()
            if len(steps) and steps.max() >= int(step):
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143, f"exit code {proc.returncode}, not 143"
    assert result(run)["status"] == "preempted"

if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
PYEOF

PASSED=0 FAILED=0 SKIPPED=0 STARTED=$(date +%s)
stand_in() {
    case "${GPU_CHECK_STAND_IN:-}:$1" in
    cpu:trainer=gpu) echo trainer=cpu ;;
    cpu:trainer=ddp) echo trainer=ddp_cpu ;;
    *) echo "$1" ;;
    esac
}
train() {
    local arg args=()
    for arg in "$@"; do args+=("$(stand_in "$arg")"); done
    "$PY" -m normlab.train "${args[@]}"
}
helper() {
    local arg args=()
    for arg in "$@"; do args+=("$(stand_in "$arg")"); done
    "$PY" "$HELP" "${args[@]}"
}

# check NAME GPUS_NEEDED FUNCTION: run FUNCTION (log in $WORK/NAME.log), print one line
check() {
    local name=$1 need=$2 fn=$3 start status
    [[ $name =~ $ONLY ]] || return 0
    if [ "$GPUS" -lt "$need" ]; then
        printf 'SKIP  %-24s %6.1fs  (needs %d GPU%s, %d here)\n' "$name" 0 "$need" \
            "$([ "$need" -gt 1 ] && echo s)" "$GPUS"
        SKIPPED=$((SKIPPED + 1))
        return 0
    fi
    start=$(date +%s%N)
    # set -f: the overrides' brackets (regularizer=[dropout]) are not file patterns
    timeout --kill-after=10 "$LIMIT" bash -c "set -efo pipefail; $(declare -f stand_in train helper "$fn"); $fn" \
        >"$WORK/$name.log" 2>&1
    status=$?
    local seconds
    seconds=$(awk "BEGIN { printf \"%.1f\", ($(date +%s%N) - $start) / 1e9 }")
    if [ $status -eq 0 ]; then
        printf 'PASS  %-24s %6.1fs\n' "$name" "$seconds"
        PASSED=$((PASSED + 1))
    else
        printf 'FAIL  %-24s %6.1fs  (exit %d%s; log %s)\n' "$name" "$seconds" "$status" \
            "$([ $status -eq 124 ] && echo ": over ${LIMIT}s")" "$WORK/$name.log"
        tail -n 5 "$WORK/$name.log" | sed 's/^/      | /'
        FAILED=$((FAILED + 1))
    fi
}
export PY HELP WORK GPU_CHECK_STAND_IN

DIGITS="data=digits trainer.max_steps=300 trainer.val_check_interval=100"
# dropout, and enough steps to be interrupted after the first checkpoint even on a fast GPU
RESUMABLE="data=synthetic data.num_samples=20000 trainer.max_steps=3000 trainer.val_check_interval=100 regularizer=[dropout] trainer.deterministic=true"
PARITY="data=synthetic trainer.max_steps=30 trainer.log_every_n_steps=1 trainer.val_check_interval=15"
export DIGITS RESUMABLE PARITY

gpu() { train $DIGITS trainer=gpu hydra.run.dir="$WORK/gpu"; helper acc "$WORK/gpu" 0.8; }
gpu_steps_per_call_1() {
    train $DIGITS trainer=gpu steps_per_call=1 hydra.run.dir="$WORK/gpu1"
    helper acc "$WORK/gpu1" 0.8
    [ ! -f "$WORK/gpu/result.json" ] || helper same-losses "$WORK/gpu" "$WORK/gpu1" 1e-4
}
bf16_mixed() {
    train $DIGITS trainer=gpu trainer.precision=bf16-mixed hydra.run.dir="$WORK/bf16"
    helper acc "$WORK/bf16" 0.8 && helper books "$WORK/bf16"
    [ ! -f "$WORK/gpu/result.json" ] || helper near-acc "$WORK/gpu" "$WORK/bf16" 0.05
}
fp16_mixed() {
    train $DIGITS trainer=gpu trainer.precision=16-mixed hydra.run.dir="$WORK/fp16"
    helper acc "$WORK/fp16" 0.8 && helper books "$WORK/fp16"
}
compiled() { train $DIGITS trainer=gpu compile=true hydra.run.dir="$WORK/compile"; helper acc "$WORK/compile" 0.8; }
instruments_wandb() {
    train $DIGITS trainer=gpu callbacks=instruments logger=wandb hydra.run.dir="$WORK/instr"
    helper acc "$WORK/instr" 0.8 && helper wandb-run "$WORK/instr"
}
deterministic() {
    for run in det1 det2; do
        train $DIGITS trainer=gpu trainer.deterministic=true callbacks=instruments \
            regularizer=[dropout] hydra.run.dir="$WORK/$run"
    done
    helper same-file "$WORK/det1/metrics.csv" "$WORK/det2/metrics.csv"
}
sigterm_resume() {
    train $RESUMABLE trainer=gpu hydra.run.dir="$WORK/resume-ref"
    helper interrupt "$WORK/resume" 100 $RESUMABLE trainer=gpu
    train $RESUMABLE trainer=gpu hydra.run.dir="$WORK/resume"
    helper same-file "$WORK/resume-ref/metrics.csv" "$WORK/resume/metrics.csv"
}
ddp_1() { train $DIGITS trainer=ddp trainer.devices=1 hydra.run.dir="$WORK/ddp1"; helper acc "$WORK/ddp1" 0.8; }
ddp_2_sync_bn_parity() {
    train $PARITY trainer=gpu hydra.run.dir="$WORK/parity-one"
    train $PARITY trainer=ddp trainer.devices=2 norm.sync=true hydra.run.dir="$WORK/parity-two"
    helper same-losses "$WORK/parity-one" "$WORK/parity-two" 1e-3
}
ddp_2_sigterm_resume() {
    train $RESUMABLE trainer=ddp trainer.devices=2 hydra.run.dir="$WORK/ddp-resume-ref"
    helper interrupt "$WORK/ddp-resume" 100 $RESUMABLE trainer=ddp trainer.devices=2
    helper rank-streams "$WORK/ddp-resume" 2
    train $RESUMABLE trainer=ddp trainer.devices=2 hydra.run.dir="$WORK/ddp-resume"
    helper same-file "$WORK/ddp-resume-ref/metrics.csv" "$WORK/ddp-resume/metrics.csv"
}
stacked() {
    NORMLAB_ROOT="$WORK/stacked" train -m hydra/launcher=stacked seed=0,1 $DIGITS trainer=gpu
    helper cells "$WORK/stacked" 2
}
pytest_gpu() { "$PY" -m pytest -q -m '' tests/test_ddp.py -k cuda; }

check gpu 1 gpu
check gpu-steps-per-call-1 1 gpu_steps_per_call_1
check bf16-mixed 1 bf16_mixed
check 16-mixed 1 fp16_mixed
check compile 1 compiled
check instruments-wandb 1 instruments_wandb
check deterministic 1 deterministic
check sigterm-resume 1 sigterm_resume
check ddp-1 1 ddp_1
check ddp-2-sync-bn-parity 2 ddp_2_sync_bn_parity
check ddp-2-sigterm-resume 2 ddp_2_sigterm_resume
check stacked 1 stacked
check pytest-gpu 1 pytest_gpu

echo "gpu-check: $PASSED passed, $FAILED failed, $SKIPPED skipped in $(($(date +%s) - STARTED))s ($GPUS GPU(s))"
[ "$FAILED" -eq 0 ]
