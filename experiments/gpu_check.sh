#!/usr/bin/env bash
# The GPU checks of issue 22 in one run, on a machine with a CUDA GPU, from the repository root:
#   0. bench collect on every core (two shares of stepping threads against one whole-batch rollout);
#   1. a MAML-paper-setting meta-iteration (HalfCheetahVel, 40 tasks x 20 episodes, H = 200, 2x100 ReLU) with
#      the policy and every update on the GPU and MuJoCo on the CPUs, alternated with the same on the CPUs alone;
#   2. the same at pytorch-maml-rl's setting (H = 100, 2x64 tanh) on the GPU;
#   3. end to end with collector.device=cuda: two iterations each of MAML, RL² and the oracle, and an evaluation;
#   4. the device-plumbing and collector-threads tests (before 3; SKIP_END_TO_END=1 stops after them).
# PY: a Python with torch (CUDA), mujoco, gymnasium and stable-baselines3 (default python3); every output goes
# to $OUT/log (default /tmp/gpu_check). Each step has its own time limit, so one that hangs does not take the rest.
set -u
OUT=${OUT:-/tmp/gpu_check}
PY=${PY:-python3}
RUNS=${RUNS:-/tmp/gpu_runs}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
LOG="$OUT/log"

source "$(dirname "$0")/device_step.sh"  # step SECONDS COMMAND...

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$LOG" 2>&1
$PY -c "import os, torch, mujoco, gymnasium; print('torch', torch.__version__, torch.cuda.get_device_name(0), \
'| mujoco', mujoco.__version__, '| gymnasium', gymnasium.__version__, '| cpus', os.cpu_count())" >>"$LOG" 2>&1

METARL="$PY -m metarl.cli"
# sampling on every core: MuJoCo in two shares of threads against one rollout over the whole batch, one run
step 150 $METARL bench collect --repeats 2
PAPER="--config experiments/halfcheetah_vel_maml.yaml --iterations 2"
for device in cuda cpu cuda; do
    step 150 $METARL bench maml $PAPER --set collector.device=$device
done
step 150 $METARL bench maml $PAPER --set collector.device=cuda --set collector.backend=native
step 120 $METARL bench maml $PAPER --set collector.device=cuda --set env.horizon=100 \
    --set policy.hidden_sizes=[64,64] --set policy.activation=tanh

step 240 $PY -m pytest -q -x tests/test_device.py tests/test_threads.py tests/test_collector.py
[ "${SKIP_END_TO_END:-0}" = 1 ] && exit 0

for config in halfcheetah_vel_maml halfcheetah_vel_rl2 halfcheetah_vel_oracle; do
    step 150 $METARL train experiments/$config.yaml --set collector.device=cuda --set train.iterations=2 \
        --set train.checkpoint_every=1 --set train.show_progress=false --run-dir "$RUNS/$config" --overwrite
done
step 150 $METARL evaluate "$RUNS/halfcheetah_vel_maml" --tasks 4 --out "$RUNS/eval_maml"
step 150 $METARL evaluate "$RUNS/halfcheetah_vel_rl2" --tasks 4 --out "$RUNS/eval_rl2"
