#!/usr/bin/env bash
# ProMP vs MAML-TRPO (and E-MAML) on 2D navigation: the runs behind results/promp_navigation/.
#
#   results/promp_navigation/run.sh [METHOD ...]      METHOD: maml promp emaml (default: maml promp)
#
# Every method: the same tasks, horizon (100), policy, meta-batch (20 tasks x 20 episodes per inner
# step and for the query), inner step (alpha 0.1), iterations (so the same env-step budget), and the
# same periodic meta-test (train.eval_every): 40 held-out tasks from the eval seed stream, sampled
# actions, eval.inner_lr 0.1 then 0.05, scored after 0..3 steps. Runs go to runs/promp_nav/<method>_s<seed>,
# one at a time (a lock file: a second invocation waits for the first's current run). A run that
# stopped part-way is resumed (metarl train --resume); a finished one is skipped.
# ITERS (default 150) and SEEDS (default "0 1 2") may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS=${ITERS:-150}
SEEDS=${SEEDS:-"0 1 2"}
METHODS=${*:-maml promp}
OUT=runs/promp_nav
mkdir -p "$OUT"
common=(--set train.iterations="$ITERS" --set train.eval_every=5 --set train.eval_tasks=40 --set train.show_progress=false)

finished() {  # the run's progress.csv reached iteration ITERS
  [ -f "$1/progress.csv" ] && [ "$(tail -n 1 "$1/progress.csv" | cut -d, -f1)" = "$ITERS" ]
}

for seed in $SEEDS; do
  for m in $METHODS; do
    dir=$OUT/${m}_s$seed
    case $m in
      maml) args=(experiments/navigation2d_maml.yaml) ;;
      promp) args=(experiments/navigation2d_promp.yaml) ;;
      emaml) args=(experiments/navigation2d_maml.yaml --set maml.estimator=emaml) ;;
      *) echo "unknown method $m (expected maml, promp or emaml)" >&2; exit 2 ;;
    esac
    (
      flock 9
      if finished "$dir"; then
        echo "$(date -u +%FT%TZ) $dir: finished, skipped"
      elif [ -f "$dir/config.yaml" ]; then
        echo "$(date -u +%FT%TZ) $dir: resuming at $(git rev-parse --short HEAD)"
        .venv/bin/metarl train --resume "$dir" --set train.iterations="$ITERS" --set train.show_progress=false
      else
        echo "$(date -u +%FT%TZ) $dir: starting at $(git rev-parse --short HEAD)"
        .venv/bin/metarl train "${args[@]}" --seed "$seed" "${common[@]}" --run-dir "$dir"
      fi
      git rev-parse HEAD >> "$dir/commits.txt"
      echo "$(date -u +%FT%TZ) $dir: done"
    ) 9> "$OUT/queue.lock"
  done
done
