"""Faults on a real cluster shape: MAML 2D navigation on a Ray cluster of a head and two worker nodes.

    .venv/bin/python experiments/ray_cluster_faults.py [--iterations N] [--out DIR]

Starts a Ray cluster on this machine (every process bound to 127.0.0.1): a head node with no CPU
(so it holds no actor) and two worker nodes of one CPU each, one collector actor on each. Then it
trains ``experiments/navigation2d_maml.yaml`` (small: see TRAIN) with ``collector.backend=ray`` on
it, four times, each driver a separate ``metarl train`` process as a user would start it:

* undisturbed: the reference run;
* node: one worker node is killed (SIGKILL of all its processes, as a machine losing power) while
  its actor is collecting, mid-run. No node has room for a replacement actor, so the lost share is
  re-collected by the actor on the other node; then a new worker node joins and the replacement
  actor, placed there, takes its share again (Ray may first try the dead node, until its health
  checks declare it dead, about 15 s with Ray's defaults; the collector then starts another). The run must finish with the reference's progress.csv
  rows (timing columns aside) and parameters, bit for bit: the shares keep their sizes and inputs,
  whichever actor collects them;
* driver: the driver is SIGKILLed while its actors are collecting, mid-run, and ``metarl train
  --resume RUN_DIR`` continues on the cluster (the address is in the run's config) from the last
  checkpoint; again the reference's rows and parameters, bit for bit;
* local: the same config on the local backend, for the record: equal to the cluster runs bit for
  bit where the BLAS gives a row the same value in a share's rows as in the whole batch (see the
  README), else within rounding.

It prints and writes to ``OUT/summary.json`` the iterations completed, the wall time each fault
cost, what was re-collected (the collector's log lines) and the comparisons; exit status 1 when a
check fails. The cluster is shut down at the end, also on failure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from metarl.common.checkpoint import list_checkpoints, load_latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
TRAIN = [  # small enough for a 2-core machine: shares of 3 tasks x 10 episodes x 100 steps
    "experiments/navigation2d_maml.yaml",
    "--set", "maml.meta_batch_size=6", "--set", "maml.episodes_per_task=10", "--set", "policy.hidden_sizes=[32,32]",
    "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=100", "--set", "train.show_progress=false",
]
ACTOR_TITLE = "ray::_CollectorWorker"  # Ray's process title of a collector actor (".collect_columns" while collecting)
TIMEOUT = 900  # seconds any one training process may take


def driver_env() -> dict:
    # Ray dials a loopback address through this machine's outward IP (it assumes other machines
    # join), where a cluster bound to 127.0.0.1 does not listen; with this variable (Ray's switch
    # for single-machine clusters) the driver keeps 127.0.0.1.
    return dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")


class LocalCluster:
    """A head with no CPU and worker nodes of one CPU each, all on 127.0.0.1; shut down on exit."""

    def __init__(self, workers: int = 2):
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, node_ip_address=LOOPBACK, include_dashboard=False))
        self.session_dir = self.cluster.head_node.get_session_dir_path()
        self.workers = [self.add_worker() for _ in range(workers)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self):
        return self.cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)

    def join(self):
        node = self.add_worker()
        self.workers.append(node)
        return node

    @staticmethod
    def raylet_pid(node) -> int:
        return node.all_processes["raylet"][0].process.pid

    def actor_pids(self, node, collecting: bool = False) -> list[int]:
        """Collector actors running on ``node`` (children of its raylet); with ``collecting``, only
        those executing a share now."""
        title = ACTOR_TITLE + (".collect_columns" if collecting else "")
        return [pid for pid in _children(self.raylet_pid(node)) if _title(pid).startswith(title)]

    def kill(self, node) -> int:
        """SIGKILL every process of a worker node (its workers first), as a machine losing power;
        how many there were."""
        workers = _children(self.raylet_pid(node))
        for pid in workers:
            _sigkill(pid)
        alive = len(node.live_processes())
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)
        return len(workers) + alive

    def shutdown(self, grace: float = 15.0) -> list[int]:
        """Stop every node, then wait for the cluster's worker processes to exit (they notice their
        raylet is gone within seconds); SIGKILL (and return) any still there after ``grace`` seconds."""
        self.cluster.shutdown()
        deadline = time.monotonic() + grace
        while (left := session_processes(self.session_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            _sigkill(pid)
        return left


def session_processes(session_dir: str) -> list[int]:
    """Processes of a Ray cluster: those naming its session directory on their command line or
    holding a file in it open (workers, whose process title hides their command line, log there)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            open_files = (os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd"))
            if session_dir in cmdline or any(path.startswith(session_dir) for path in open_files):
                found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    return found


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Driver:
    """One ``metarl train`` process; stdout and stderr go to ``log``."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self.started = time.monotonic()
        with open(log, "a") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "metarl.cli", "train", *args], cwd=ROOT,
                                         env=driver_env(), stdout=f, stderr=subprocess.STDOUT)

    def wait(self) -> float:
        """Seconds the process ran; raises when it failed."""
        rc = self.proc.wait(timeout=TIMEOUT)
        if rc != 0:
            raise RuntimeError(f"metarl train exited with {rc}; see {self.log}:\n{self.log.read_text()[-3000:]}")
        return time.monotonic() - self.started

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()


def rows(run_dir: Path) -> list[dict]:
    """progress.csv without the wall-clock columns (which cannot match between two runs)."""
    path = run_dir / "progress.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]


def sampling_s(run_dir: Path, iteration: int) -> float:
    """Seconds the iteration spent collecting (progress.csv's time/sampling_s)."""
    with open(run_dir / "progress.csv", newline="") as f:
        return float(next(r for r in csv.DictReader(f) if int(r["iteration"]) == iteration)["time/sampling_s"])


def final_params(run_dir: Path) -> dict:
    return load_latest_checkpoint(run_dir)["algo"]["policy"]


def compare(run_dir: Path, reference: Path) -> dict:
    """Rows equal, parameters bit-identical, and the largest parameter difference."""
    a, b = final_params(run_dir), final_params(reference)
    diff = max(float((a[k] - b[k]).abs().max()) for k in b)
    return dict(rows_equal=rows(run_dir) == rows(reference), params_bitwise=all(torch.equal(a[k], b[k]) for k in b),
                params_max_abs_diff=diff)


def wait_until(condition, what: str, driver: Driver | None = None, timeout: float = TIMEOUT, poll: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver is not None and not driver.running():
            raise RuntimeError(f"the run ended before {what}; see {driver.log}")
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting for {what}")


def collector_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("Ray collector:")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100,
                        help="meta-iterations of every run (at least 4; the replacement actor can only start once Ray "
                             "has declared the killed node dead, about 15 s, and the run must still be going then)")
    parser.add_argument("--out", type=Path, default=Path("runs/ray_cluster_faults"), help="output directory (replaced)")
    args = parser.parse_args(argv)
    if args.iterations < 4:
        parser.error(f"--iterations must be at least 4 (the faults hit iteration 3), got {args.iterations}")
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    n = args.iterations
    fault_at = 2  # the faults hit iteration 3, after 2 were logged (later ones show the recovered cluster)

    # SIGTERM (a timeout, a CI cancel) runs the cleanup below too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    cluster = LocalCluster()
    session_dir = cluster.session_dir
    drivers: list[Driver] = []
    try:
        print(f"cluster: head {cluster.address} (0 CPUs) + 2 worker nodes (1 CPU each), all on {LOOPBACK}", flush=True)
        train = TRAIN + ["--set", f"train.iterations={n}", "--set", "collector.backend=ray",
                         "--set", f"collector.address={cluster.address}", "--set", "collector.num_workers=2"]

        def start(name, extra=()):
            d = Driver(train + ["--run-dir", str(out / name), *extra], out / f"{name}.log")
            drivers.append(d)
            return d

        # 1. undisturbed
        t_ref = start("undisturbed").wait()
        print(f"undisturbed: {len(rows(out / 'undisturbed'))} iterations in {t_ref:.1f} s", flush=True)

        # 2. a worker node dies while its actor is collecting
        d = start("node")
        victim = cluster.workers[1]
        wait_until(lambda: len(rows(out / "node")) >= fault_at, f"iteration {fault_at}", d)
        wait_until(lambda: cluster.actor_pids(victim, collecting=True), "a share on the node", d)
        actor = cluster.actor_pids(victim)[0]
        at_iteration = len(rows(out / "node")) + 1
        killed = cluster.kill(victim)
        killed_at = time.monotonic()
        wait_until(lambda: any("re-collecting" in s for s in collector_lines(d.log)), "the re-collection", d, poll=0.05)
        recollected_at = time.monotonic()
        newcomer = cluster.join()  # as an autoscaler would: a new node, with room for the replacement
        joined_at = time.monotonic()
        back = wait_until(lambda: [s for s in collector_lines(d.log) if "is back" in s] or not d.running(),
                          "the replacement", poll=0.05)
        back_at, back_iteration = time.monotonic(), len(rows(out / "node")) + 1
        back_on_newcomer = bool(cluster.actor_pids(newcomer))
        t_node = d.wait()
        node = dict(killed_actor_pid=actor, killed_processes=killed, killed_during_iteration=at_iteration,
                    killed_after_s=round(killed_at - d.started, 2),
                    recollection_logged_after_s=round(recollected_at - d.started, 2),
                    node_joined_after_s=round(joined_at - d.started, 2),
                    replacement_back=back is not True, replacement_back_after_s=round(back_at - d.started, 2),
                    replacement_back_by_iteration=back_iteration, replacement_on_new_node=back_on_newcomer,
                    iterations=len(rows(out / "node")), wall_s=round(t_node, 2), lost_s=round(t_node - t_ref, 2),
                    sampling_s_of_that_iteration=round(sampling_s(out / "node", at_iteration), 2),
                    undisturbed_sampling_s_of_that_iteration=round(sampling_s(out / "undisturbed", at_iteration), 2),
                    collector_log=collector_lines(d.log), **compare(out / "node", out / "undisturbed"))
        print(f"node killed during iteration {at_iteration}: {node['iterations']} iterations in {t_node:.1f} s "
              f"({node['lost_s']:+.1f} s); rows equal {node['rows_equal']}, parameters bit-identical "
              f"{node['params_bitwise']}", flush=True)
        print(f"  collecting in iteration {at_iteration} took {node['sampling_s_of_that_iteration']} s "
              f"(undisturbed: {node['undisturbed_sampling_s_of_that_iteration']} s)", flush=True)
        print(f"  killed after {node['killed_after_s']} s, re-collection logged after "
              f"{node['recollection_logged_after_s']} s, new node joined after {node['node_joined_after_s']} s, replacement actor "
              + (f"running on it after {node['replacement_back_after_s']} s (iteration {back_iteration})"
                 if node["replacement_back"] and back_on_newcomer else "not back before the run ended"), flush=True)
        for line in node["collector_log"]:
            print("  " + line)

        # 3. the driver dies while its actors are collecting; --resume on the cluster
        d = start("driver")
        wait_until(lambda: len(rows(out / "driver")) >= fault_at, f"iteration {fault_at}", d)
        wait_until(lambda: any(cluster.actor_pids(w, collecting=True) for w in cluster.workers), "a share", d)
        at_iteration = len(rows(out / "driver")) + 1
        resumed_from = list_checkpoints(out / "driver")[-1][0]
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        t_killed = time.monotonic() - d.started
        r = Driver(["--resume", "--run-dir", str(out / "driver")], out / "driver.log")
        drivers.append(r)
        t_resumed = r.wait()
        driver = dict(killed_during_iteration=at_iteration, resumed_from_checkpoint=resumed_from,
                      killed_after_s=round(t_killed, 2), resume_wall_s=round(t_resumed, 2),
                      iterations=len(rows(out / "driver")), wall_s=round(t_killed + t_resumed, 2),
                      lost_s=round(t_killed + t_resumed - t_ref, 2), collector_log=collector_lines(r.log),
                      **compare(out / "driver", out / "undisturbed"))
        print(f"driver killed during iteration {at_iteration}, resumed from checkpoint {resumed_from}: "
              f"{driver['iterations']} iterations in {t_killed:.1f} + {t_resumed:.1f} s ({driver['lost_s']:+.1f} s); "
              f"rows equal {driver['rows_equal']}, parameters bit-identical {driver['params_bitwise']}", flush=True)
    finally:
        for d in drivers:
            d.stop()
        stragglers = cluster.shutdown()

    # 4. the local backend, for the record
    local_args = TRAIN + ["--set", f"train.iterations={n}", "--run-dir", str(out / "local")]
    t_local = Driver(local_args, out / "local.log").wait()
    local = dict(wall_s=round(t_local, 2), **compare(out / "local", out / "undisturbed"))
    print(f"local backend: {t_local:.1f} s; rows equal {local['rows_equal']}, parameters bit-identical "
          f"{local['params_bitwise']} (max |diff| {local['params_max_abs_diff']:.3g})", flush=True)

    summary = dict(iterations=n, session_dir=session_dir, stragglers_killed=stragglers,
                   undisturbed=dict(iterations=len(rows(out / "undisturbed")), wall_s=round(t_ref, 2)),
                   node=node, driver=driver, local=local)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = (summary["undisturbed"]["iterations"] == n and all(
        s["iterations"] == n and s["rows_equal"] and s["params_bitwise"] for s in (node, driver))
        and node["replacement_back"] and node["replacement_on_new_node"])
    print(f"{'PASS' if ok else 'FAIL'}: wrote {out}/summary.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
