#!/usr/bin/env bash
# normlab's GPU paths on this machine's GPU (`make gpu-check`, or after `make install`):
# `python -m normlab.gpu_check` in one process, each check a number against a reference (CPU vs
# GPU losses, stacked vs solo, two deterministic runs, SIGTERM and resume), on data that needs
# no network. Prints the versions and one PASS / FAIL / SKIP line per check, writes a
# JSON summary. Exit: 0 passed; 1 a check failed; 2 normlab cannot be imported; 3 no GPU to
# check (nvidia-smi lists GPUs torch cannot see, or none and no --allow-cpu); 4 the 9.5-minute
# deadline ran out. Arguments go to the module: --allow-cpu, --json FILE, --work DIR, --only RE.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEADLINE_S=570  # the module's own deadline; `timeout` below is the backstop if it hangs

if ! "$PY" -c 'import normlab' 2>/dev/null; then
    echo "gpu-check: $PY cannot import normlab; run \`make install\` first (or set PY=...)" >&2
    exit 2
fi
export WANDB_MODE=offline WANDB_SILENT=true
timeout --kill-after=10 $((DEADLINE_S + 20)) "$PY" -m normlab.gpu_check "$@"
status=$?
if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    echo "gpu-check: DEADLINE: killed after $((DEADLINE_S + 20))s" >&2
    exit 4
fi
exit $status
