#!/usr/bin/env bash
# The three meta-RL families on 2D navigation: the runs behind results/families_navigation/.
#
#   results/families_navigation/run.sh candidates   # PEARL: 5 candidate settings, seed 0
#   results/families_navigation/run.sh validate      # each candidate on 40 validation goals (--seed 2000)
#   results/families_navigation/run.sh seeds CAND    # seeds 1 2 of the chosen candidate
#   results/families_navigation/run.sh rl2           # RL², seeds 0 1 2
#
# MAML-TRPO's runs are those of results/promp_navigation/run.sh (runs/promp_nav/maml_s*).
# Every run: goals uniform in [-0.5, 0.5]^2, H = 100, 150 iterations, and the periodic meta-test of
# metarl train every 5 iterations on the same 40 held-out goals of the eval stream (eval.seed 1000).
# PEARL's training settings are chosen on the validation stream (seed 2000, never the eval stream): the
# candidate with the best mean return after 3 episodes of context (the last step, as metarl tune
# chooses). Runs go to runs/families_nav/<name>_s<seed>; a run that stopped part-way is resumed, a
# finished one skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=runs/families_nav
mkdir -p "$OUT"
common=(--set train.iterations=150 --set train.eval_every=5 --set train.eval_tasks=40 --set train.show_progress=false)
declare -A CANDIDATES=(
  [A_base]=""                                        # experiments/navigation2d_pearl.yaml as it is
  [B_kl01]="--set pearl.kl_lambda=0.1"               # the paper's KL weight
  [C_kl0001]="--set pearl.kl_lambda=0.001"
  [D_ent_m2]="--set pearl.target_entropy=-2.0"       # SAC's usual -|A|
  [E_post0]="--set pearl.posterior_episodes=0"       # only prior-z episodes in the encoder buffer
)

train() {  # NAME SEED CONFIG [--set ...]
  local dir=$OUT/$1_s$2 config=$3
  shift 3
  if [ -f "$dir/progress.csv" ] && [ "$(tail -n 1 "$dir/progress.csv" | cut -d, -f1)" = "150" ]; then
    echo "$dir: finished, skipped"
  elif [ -f "$dir/config.yaml" ]; then
    echo "$dir: resuming at $(git rev-parse --short HEAD)"
    .venv/bin/metarl train --resume "$dir" --set train.show_progress=false
  else
    echo "$dir: starting at $(git rev-parse --short HEAD)"
    .venv/bin/metarl train "$config" --seed "$2" "${common[@]}" "$@" --run-dir "$dir"
  fi
}

case "${1:-}" in
  candidates)
    for c in A_base B_kl01 C_kl0001 D_ent_m2 E_post0; do
      # shellcheck disable=SC2086
      train "$c" 0 experiments/navigation2d_pearl.yaml ${CANDIDATES[$c]}
    done ;;
  validate)
    for c in A_base B_kl01 C_kl0001 D_ent_m2 E_post0; do
      .venv/bin/metarl evaluate "$OUT/${c}_s0" --seed 2000 --tasks 40 --set eval.episodes_per_task=20 \
        --out "$OUT/${c}_s0/validation"
    done ;;
  seeds)
    c=${2:?"seeds needs the chosen candidate, one of: ${!CANDIDATES[*]}"}
    [ -n "${CANDIDATES[$c]+x}" ] || { echo "unknown candidate $c (expected one of: ${!CANDIDATES[*]})" >&2; exit 2; }
    # shellcheck disable=SC2086
    for s in 1 2; do train "$c" "$s" experiments/navigation2d_pearl.yaml ${CANDIDATES[$c]}; done ;;
  rl2)
    for s in 0 1 2; do train rl2 "$s" experiments/navigation2d_rl2.yaml --set eval.episodes_per_task=5; done ;;
  *)
    echo "usage: $0 candidates | validate | seeds CAND | rl2" >&2; exit 2 ;;
esac
