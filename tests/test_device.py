"""Device plumbing (collector.device), checked on the CPU: every tensor the collector and the updates make
goes on the policy's device by construction, and host transfers in the step loop are one per step each way.

No GPU is needed: :class:`DeviceAudit` records every tensor factory call (torch.zeros, arange, ...) made from
metarl's code without an explicit ``device=``, which on a GPU run would put that tensor on the CPU and fail
(or copy) when it meets the policy's tensors; and it counts the device -> host reads (.cpu(), .numpy(),
.item(), float(), bool(), .tolist()) by the function that made them.
"""

import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from metarl.experiment import build_experiment, load_config
from metarl.sampling.config import torch_device

FACTORIES = {"zeros", "ones", "full", "empty", "arange", "eye", "tensor", "as_tensor", "rand", "randn",
             "randint", "linspace"}
READS = {"cpu", "numpy", "item", "__float__", "__bool__", "__int__", "tolist"}
METARL = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH = os.path.dirname(torch.__file__)
OPTIM = os.path.join(TORCH, "optim")


class DeviceAudit(TorchFunctionMode):
    def __init__(self, roots=(os.path.join(METARL, "metarl"), os.path.join(METARL, "envs"))):
        super().__init__()
        self.roots = tuple(roots)
        self.undevice: list[str] = []  # "file:line function" of factory calls without device=
        self.reads: Counter = Counter()  # (function, read) -> count

    def _caller(self):
        f = sys._getframe(2)
        if f.f_code.co_filename.startswith(OPTIM):
            return None  # torch's optimizers read their step counters, which live on the CPU on every device
        while f is not None and f.f_code.co_filename.startswith(TORCH):
            f = f.f_back
        return f

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in FACTORIES or name in READS:
            f = self._caller()
            if f is not None and f.f_code.co_filename.startswith(self.roots):
                where = f"{os.path.relpath(f.f_code.co_filename, METARL)}:{f.f_lineno} {f.f_code.co_name}"
                if name in FACTORIES and "device" not in kwargs:
                    self.undevice.append(f"torch.{name} at {where}")
                if name in READS:
                    self.reads[(f.f_code.co_name, name)] += 1
        return func(*args, **kwargs)


def _iteration(config, *overrides):
    exp = build_experiment(load_config(config, list(overrides)))
    exp.algo.train_iteration(np.random.default_rng(0))  # warm-up: vector envs built
    with DeviceAudit() as audit:
        exp.algo.train_iteration(np.random.default_rng(1))
    exp.collector.close()
    return exp, audit


def test_audit_catches_a_tensor_made_without_device():
    with DeviceAudit(roots=(os.path.abspath(__file__),)) as audit:
        torch.zeros(3)
        torch.zeros(3, device="cpu")
        torch.zeros(3).numpy()
    assert len(audit.undevice) == 2 and all("torch.zeros" in u for u in audit.undevice)
    assert audit.reads[("test_audit_catches_a_tensor_made_without_device", "numpy")] == 1


NAV = ("maml.meta_batch_size=4", "maml.episodes_per_task=2", "env.horizon=10", "maml.cg_iters=2",
       "policy.hidden_sizes=[8,8]")


@pytest.mark.parametrize("config,overrides", [
    ("experiments/navigation2d_maml.yaml", NAV),  # exact Gauss-Newton TRPO
    ("experiments/navigation2d_maml.yaml", NAV + ("maml.estimator=dice",)),  # autograd TRPO
    ("experiments/sinusoid_maml.yaml", ()),  # Adam through the second-order graph
    ("experiments/tabular_mdp_rl2.yaml", ("rl2.trials_per_iteration=4", "rl2.minibatches=2")),
])
def test_updates_make_every_tensor_on_the_policy_device(config, overrides):
    exp, audit = _iteration(config, *overrides)
    assert audit.undevice == []
    # the step loop reads the device once per step: the actions (.cpu().numpy()), nothing else
    steps = exp.collector.horizon * getattr(getattr(exp.cfg, "rl2", None), "episodes_per_trial", 1)
    rollout = {read: n for (fn, read), n in audit.reads.items() if fn in ("_rollout", "_step_loop")}
    collections = rollout.get("cpu", 0) // steps
    assert collections >= 1 and rollout == {"cpu": collections * steps, "numpy": collections * steps}


def test_cuda_unavailable_is_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=r"collector.device = 'cuda' .*no CUDA device"):
        build_experiment(load_config("experiments/sinusoid_maml.yaml", ["collector.device=cuda"]))
    with pytest.raises(ValueError, match=r"collector.device = 'gpu0' .*'cpu', 'cuda' or 'cuda:0'"):
        torch_device("gpu0")
    assert torch_device("cpu") == torch.device("cpu")


def test_update_reads_do_not_grow_with_minibatches():
    # PPO's statistics are summed on the device: the host reads of an update are per iteration, not per minibatch
    def update_reads(minibatches):
        _, audit = _iteration("experiments/tabular_mdp_rl2.yaml", "rl2.trials_per_iteration=4",
                              f"rl2.minibatches={minibatches}")
        return {k: n for k, n in audit.reads.items() if k[0] not in ("_rollout", "_step_loop")}

    one, four = update_reads(1), update_reads(4)
    assert one == four and sum(one.values()) < 30


def test_oracle_makes_every_tensor_on_the_policy_device():
    from metarl.algos.oracle.oracle import OracleTrainer
    from metarl.evaluation.config import EvalConfig
    from metarl.sampling.collector import Collector

    cfg = load_config("experiments/navigation2d_oracle.yaml", ["env.horizon=10", "rl2.ppo_epochs=1",
                                                               "policy.hidden_sizes=[8,8]"])
    trainer = OracleTrainer(cfg, Collector(cfg.env.id, seed=0, horizon=10), num_envs=2, episodes_per_env=1)
    tasks = Collector(cfg.env.id, seed=1).sample_tasks(3, np.random.default_rng(1))
    with DeviceAudit() as audit:
        trainer.train_iteration(np.random.default_rng(0))
        trainer.adaptation_curve(tasks, Collector(cfg.env.id, seed=1, horizon=10), EvalConfig(tasks=3, steps=1))
    assert audit.undevice == []
    rollout = {read: n for (fn, read), n in audit.reads.items() if fn in ("_rollout", "_step_loop")}
    assert rollout and rollout["cpu"] == rollout["numpy"] and rollout["cpu"] % 10 == 0
