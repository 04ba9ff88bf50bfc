#!/usr/bin/env bash
# Meta-World ML1 reach-v3 (the MAML configs' batch: 20 tasks x 10 episodes), subproc (policy in the driver)
# against process_pool (whole step loop in the workers), 2 workers each, 3 alternated pairs
cd /work/main
git log -1 --format='commit %h'
uptime
for i in 1 2 3; do
  for b in subproc process_pool; do
    .venv-mw/bin/metarl bench collect --env metarl/MetaWorldML1-v0 --env-kwarg env_name=reach-v3 --tasks 20 --episodes 10 --backend $b --workers 2 --repeats 2 2>&1 | tail -1
  done
done
uptime
