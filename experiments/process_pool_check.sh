#!/usr/bin/env bash
# The process-pool collector (collector.backend: process_pool) on a many-core machine, in one run from the
# repository root (issue 22: sampling at 0.9 of the open-loop limit beyond 2 cores):
#   1. its tests (tests/test_process_pool.py; the CUDA one runs where a GPU is);
#   2. bench collect (HalfCheetahVel, 40 tasks x 20 episodes, H = 200, 2x100 ReLU) with W workers for
#      W = 8, 16, 4 (the cores divided among them): each run also times the same collection in this process
#      as one rollout over the whole batch on the same threads (what auto does beyond two threads) and the
#      open-loop mujoco.rollout limit, so every ratio is measured in one run;
#   3. the MAML paper-setting meta-iteration with the policy and updates on the GPU (collector.device=cuda,
#      skipped without one), auto and process_pool with 8 workers alternated, twice;
#   4. the same on the CPUs alone, once each.
# PY: a Python with torch, mujoco and gymnasium (default python3); output to $OUT/log (default
# /tmp/process_pool_check). Each step has its own time limit.
set -u
OUT=${OUT:-/tmp/process_pool_check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
LOG="$OUT/log"

source "$(dirname "$0")/device_step.sh"  # step SECONDS COMMAND...

git log -1 --format='commit %H %s' >>"$LOG" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$LOG" 2>&1
$PY -c "import os, platform, torch, mujoco, gymnasium; print('torch', torch.__version__, '| mujoco', \
mujoco.__version__, '| gymnasium', gymnasium.__version__, '| cpus', os.cpu_count(), '|', platform.processor())" >>"$LOG" 2>&1
grep -m1 'model name' /proc/cpuinfo >>"$LOG" 2>&1

METARL="$PY -m metarl.cli"
step 90 $PY -m pytest -q -x tests/test_process_pool.py
for workers in 8 16 4; do
    step 90 $METARL bench collect --backend process_pool --workers "$workers" --repeats 2
done
PAPER="--config experiments/halfcheetah_vel_maml.yaml --iterations 2"
POOL="--set collector.backend=process_pool --set collector.num_workers=8"
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    for _ in 1 2; do
        step 75 $METARL bench maml $PAPER --set collector.device=cuda
        step 75 $METARL bench maml $PAPER --set collector.device=cuda $POOL
    done
fi
step 75 $METARL bench maml $PAPER --set collector.device=cpu
step 75 $METARL bench maml $PAPER --set collector.device=cpu $POOL
