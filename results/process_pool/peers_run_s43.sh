#!/bin/bash
# session 43: the two cheetah items, peer against metarl (auto) and metarl with collector.backend=process_pool (2 workers), 3 interleaved rounds
W=/work/peers; M=/work/main
mkdir -p $W/results_s43; cd $W; rm -f results_s43/*.out
one() { # item variant round cmd...
  item=$1; variant=$2; r=$3; shift 3
  out=$W/results_s43/${item}_${variant}_${r}.out
  echo "load: $(cut -d' ' -f1 /proc/loadavg)" > $out
  ( "$@" ) >> $out 2>&1
  echo "$(date +%T) $item $variant $r done: $(grep '^{' $out | tail -1 | cut -c1-160)"
}
for r in 1 2 3; do
  for item in cheetah_paper cheetah_h100; do
    case $item in
      cheetah_paper) P="env OMP_NUM_THREADS=1 bash -c 'cd $W/pmr && $W/pmr-venv/bin/python $W/bench_pmr.py --config configs/maml/halfcheetah-vel.yaml --num-workers 2 --iterations 3 --warmup 1 --set env-kwargs.max_episode_steps=200 --set hidden-sizes=[100,100] --set nonlinearity=relu'"
                     Q="cd $M && .venv/bin/metarl bench maml --config experiments/halfcheetah_vel_maml.yaml --iterations 2 --threads 2";;
      cheetah_h100) P="cd $W/pmr && $W/pmr-venv/bin/python $W/bench_pmr.py --config configs/maml/halfcheetah-vel.yaml --num-workers 2 --iterations 3 --warmup 1"
                    Q="cd $M && .venv/bin/metarl bench maml --config experiments/halfcheetah_vel_maml.yaml --iterations 2 --threads 2 --set env.horizon=100 --set policy.hidden_sizes=[64,64] --set policy.activation=tanh";;
    esac
    S="$Q --set collector.backend=process_pool --set collector.num_workers=2"
    if [ $((r % 2)) = 1 ]; then one $item peer $r bash -c "$P"; one $item metarl $r bash -c "$Q"; one $item metarlpool $r bash -c "$S";
    else one $item metarlpool $r bash -c "$S"; one $item metarl $r bash -c "$Q"; one $item peer $r bash -c "$P"; fi
  done
done
echo ALL DONE
