#!/usr/bin/env bash
# 2-core: MAML paper-setting iteration, auto against process_pool (2 workers), 2 alternated pairs, 2 iterations each
cd /work/main && source .venv/bin/activate
git log -1 --format='commit %h'
uptime
P="--config experiments/halfcheetah_vel_maml.yaml --iterations 2"
for i in 1 2; do
  metarl bench maml $P 2>&1 | tail -1
  metarl bench maml $P --set collector.backend=process_pool --set collector.num_workers=2 2>&1 | tail -1
done
uptime
