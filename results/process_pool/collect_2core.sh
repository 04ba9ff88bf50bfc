#!/usr/bin/env bash
# 2-core: auto (two shares of threads) against process_pool (2 workers x 1 thread), 3 alternated pairs
cd /work/main && source .venv/bin/activate
git log -1 --format='commit %h' 
uptime
for i in 1 2 3; do
  metarl bench collect --repeats 2 2>&1 | tail -1
  metarl bench collect --backend process_pool --workers 2 --repeats 2 2>&1 | tail -1
done
uptime
# one worker's share on a 16-core machine, emulated: 50 columns on 1 thread (W = 16), 100 columns on 2 threads (W = 8)
for i in 1 2; do
  metarl bench collect --tasks 5 --episodes 10 --backend native --threads 1 --repeats 2 2>&1 | tail -1
  metarl bench collect --tasks 5 --episodes 20 --threads 2 --repeats 2 2>&1 | tail -1
done
