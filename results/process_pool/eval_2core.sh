#!/usr/bin/env bash
# metarl evaluate of a HalfCheetahVel run (paper setting, 100 iterations, session 42), auto against the process
# pool with 2 workers: wall seconds of the whole command, 2 alternated pairs; the curves must agree to rounding
cd /work/main && source .venv/bin/activate
git log -1 --format='commit %h'
uptime
RUN=/work/runs/s42/hcv_f0.2  # the F = 0.2 run of results/fisher_subsample (100 iterations); its checkpoints are not in git
for i in 1 2; do
  for b in auto process_pool; do
    /usr/bin/time -f "$b wall %e s" metarl evaluate $RUN --tasks 40 --steps 2 --set collector.backend=$b --set collector.num_workers=2 --out /tmp/s44_eval_$b 2>&1 | tail -4
  done
done
uptime
python - <<'PY'
import csv
a = {(r["method"], r["step"]): float(r["mean"]) for r in csv.DictReader(open("/tmp/s44_eval_auto/adaptation.csv"))}
b = {(r["method"], r["step"]): float(r["mean"]) for r in csv.DictReader(open("/tmp/s44_eval_process_pool/adaptation.csv"))}
for k in a: print(k, f"auto {a[k]:.4f} pool {b[k]:.4f} diff {b[k]-a[k]:+.2e}")
PY
