"""A run's experiment: its config tree, and building, loading and evaluating it.

``ExperimentConfig`` is the root of the config tree; every section's dataclass lives beside the code
it configures (``env``/``collector``: metarl/sampling/config.py, ``policy``: metarl/common/policies.py,
``maml``: metarl/algos/maml/config.py, ``promp``: metarl/algos/promp/config.py, ``rl2``: metarl/algos/rl2/config.py,
``pearl``: metarl/algos/pearl/config.py, ``eval``:
metarl/evaluation/config.py, ``train``: here). :func:`build_experiment` turns a config into a
collector, a policy and an algorithm; :func:`load_run` does the same for a run directory and loads
a checkpoint; :func:`evaluate_run` is ``metarl evaluate``. Training itself is :mod:`metarl.train`.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch

from metarl.algos.maml import MAML, MAMLConfig
from metarl.algos.oracle import OracleTrainer
from metarl.algos.pearl import PEARL, PEARLConfig, TanhGaussianPolicy
from metarl.algos.promp import ProMP, ProMPConfig
from metarl.algos.rl2 import RL2, RL2Config
from metarl.common import config, provenance
from metarl.common.adaptation import GradientAdaptation, SharedPrefixes, test_time_inner_lrs
from metarl.common.checkpoint import CheckpointError, list_checkpoints, load_latest_checkpoint
from metarl.common.config import ConfigError, check_range, parse_override, set_by_path, validate_config
from metarl.common.policies import PolicyConfig, RecurrentPolicy, _space_dim, make_policy
from metarl.common.seeding import seed_streams
from metarl.evaluation.config import EvalConfig
from metarl.evaluation.curves import (
    FIT_TASKS,
    FITS_FILE,
    adaptation_curves,
    eval_collector,
    regression_fits,
    step_line,
    supports_regression_fits,
    write_rate_results,
    write_results,
)
from metarl.evaluation.plots import plot_regression_fits
from metarl.sampling.backends import make_collector
from metarl.sampling.collector import Collector
from metarl.sampling.config import CollectorConfig, EnvConfig, torch_device
from metarl.sampling.vector import horizon

# ---------------------------------------------------------------------------------------------------
# The config tree
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """The training loop: length, logging, checkpoints."""

    iterations: int = 500
    """Meta-iterations (RL²: iterations) to train."""
    log_every: int = 1
    """Write scalars every N iterations."""
    eval_every: int = 0
    """Log a meta-test adaptation curve every N iterations; 0 = never."""
    eval_tasks: int = 10
    """Held-out tasks in each periodic evaluation."""
    checkpoint_every: int = 50
    """Save a checkpoint every N iterations; 0 = never."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept on disk."""
    show_progress: bool = True
    """Progress on stderr: a bar on a terminal, else a line per tenth of the run (at least one a minute)."""

    def validate(self) -> None:
        check_range(self, "iterations", ge=0)
        check_range(self, "log_every", ge=1)
        check_range(self, "eval_every", ge=0)
        check_range(self, "eval_tasks", ge=1)
        check_range(self, "checkpoint_every", ge=0)
        check_range(self, "keep_checkpoints", ge=1)


@dataclass
class ExperimentConfig:
    """One experiment: which algorithm, on what, with which settings."""

    algo: Literal["maml", "promp", "rl2", "pearl", "pretrain", "oracle"] = "maml"
    """Which algorithm trains."""
    seed: int = 0
    """Master seed; every RNG stream of the run derives from it."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The task distribution."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy (or regressor) network."""
    maml: MAMLConfig = field(default_factory=MAMLConfig)
    """MAML inner loop and meta-optimiser (also the inner loop of promp and the fine-tuning loop of the pretrain/oracle baselines)."""
    promp: ProMPConfig = field(default_factory=ProMPConfig)
    """ProMP's outer update (its inner loop is maml:'s; maml.outer and the TRPO keys are unused)."""
    rl2: RL2Config = field(default_factory=RL2Config)
    """RL² settings."""
    pearl: PEARLConfig = field(default_factory=PEARLConfig)
    """PEARL settings (context encoder, replay buffers, SAC in the twin-Q form with a learned temperature rather than the paper's V-function form); defaults are the paper's cheetah-vel settings."""
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    """Experience collection."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop, logging and checkpoints."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Meta-test evaluation."""

    def validate(self) -> None:
        # numpy's SeedSequence rejects negative seeds.
        check_range(self, "seed", ge=0)
        if self.algo == "promp" and self.maml.estimator != "reinforce":
            raise ConfigError(f"maml.estimator = {self.maml.estimator} is MAML's choice; algo promp's inner step is "
                              "always its LVC objective (leave maml.estimator unset)")
        if self.algo == "promp" and self.maml.learn_inner_lr:
            raise ConfigError("maml.learn_inner_lr: true (Meta-SGD) needs algo maml; promp adapts with maml.inner_lr")
        if self.maml.learn_inner_lr:
            if self.algo == "pretrain":
                raise ConfigError("maml.learn_inner_lr: true needs algo maml; pretrain takes no inner step to learn rates from")
            for key in ("inner_lr", "inner_lr_after_first"):
                value = getattr(self.eval, key)
                if value is not None:
                    raise ConfigError(
                        f"eval.{key} = {value} is set for a Meta-SGD run (maml.learn_inner_lr: true), which adapts "
                        f"with its learned per-parameter rates at test time; unset it (--set eval.{key}=null)")


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults ← YAML file at ``path`` (None: defaults only) ← ``key.path=value`` overrides; validated.

    The experiment tree's loader (:func:`metarl.common.config.load_config` with this root).
    """
    return config.load_config(path, overrides, base=ExperimentConfig)


def config_from_dict(d: Mapping[str, Any], *, validate: bool = True) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a nested mapping (missing keys keep their defaults)."""
    return config.config_from_dict(d, ExperimentConfig, validate=validate)


# ---------------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------------


class RunError(RuntimeError):
    """A problem with the run directory or the run itself, reported as one line by the CLI."""


@dataclass
class Experiment:
    cfg: ExperimentConfig
    collector: Collector
    policy: torch.nn.Module
    algo: object
    task_rng: np.random.Generator


def configure_threads(num_threads: int | None) -> int:
    n = num_threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def build_experiment(cfg: ExperimentConfig) -> Experiment:
    """Collector, policy and algorithm for ``cfg`` (no files touched)."""
    torch_device(cfg.collector.device)  # one clear line if this machine lacks the device
    streams = seed_streams(cfg.seed)
    collector_kwargs = dict(
        seed=int(streams["collector"].generate_state(1)[0]),
        env_kwargs=cfg.env.kwargs,
        horizon=cfg.env.horizon,
        num_threads=cfg.collector.num_threads,
        rescale_actions=cfg.env.rescale_actions,
    )
    collector = make_collector(cfg.env.id, backend=cfg.collector.backend, num_workers=cfg.collector.num_workers,
                               address=cfg.collector.address, **collector_kwargs)
    init_seed = int(streams["init"].generate_state(1)[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        policy = build_policy(cfg, collector)
    policy.to(cfg.collector.device)
    algo = build_algorithm(cfg, collector, policy)
    task_rng = np.random.default_rng(streams["tasks"])
    return Experiment(cfg, collector, policy, algo, task_rng)


def build_algorithm(cfg: ExperimentConfig, collector: Collector, policy: torch.nn.Module):
    """The training algorithm named by ``cfg.algo`` (see metarl.algos.base.Algorithm)."""
    if cfg.algo in ("maml", "pretrain"):

        mc = cfg.maml
        if cfg.algo == "pretrain":
            # Pretraining = the same outer optimiser on the task mixture with no inner step, and the
            # same environment-step budget per iteration (inner + query episodes as one batch).
            # (supervised MAML reuses its K support samples for every inner step).
            support = mc.episodes_per_task * (min(mc.inner_steps, 1) if collector.supervised else mc.inner_steps)
            mc = replace(mc, inner_steps=0, query_episodes_per_task=(mc.query_episodes_per_task or mc.episodes_per_task) + support)
        return MAML(policy, collector, mc, device=cfg.collector.device)
    if cfg.algo == "promp":
        return ProMP(policy, collector, cfg.maml, cfg.promp, device=cfg.collector.device)
    if cfg.algo == "rl2":

        return RL2(policy, collector, cfg.rl2, device=cfg.collector.device)
    if cfg.algo == "pearl":
        return PEARL(policy, collector, cfg.pearl, device=cfg.collector.device)
    if cfg.algo == "oracle":

        return OracleTrainer(cfg, collector)
    raise RunError(f"unknown algo {cfg.algo!r}; expected maml, promp, pretrain, rl2, pearl or oracle")


def build_policy(cfg: ExperimentConfig, collector: Collector) -> torch.nn.Module:
    p = cfg.policy
    if cfg.algo == "rl2":
        return RecurrentPolicy(_space_dim(collector.observation_space), collector.action_space,
                               hidden_size=p.recurrent_hidden_size, init_log_std=p.init_log_std)
    if cfg.algo == "pearl":
        # PEARL's policy sees [obs, z] and lives in its own section (pearl.hidden_sizes)
        space = collector.action_space
        if collector.supervised or not isinstance(space, gym.spaces.Box):
            raise RunError(f"algo pearl (SAC) needs a continuous (Box) action space; {cfg.env.id} has "
                           f"{'a supervised task' if collector.supervised else space}")
        return TanhGaussianPolicy(_space_dim(collector.observation_space), cfg.pearl.latent_dim, _space_dim(space),
                                  cfg.pearl.hidden_sizes)
    return make_policy(
        collector.observation_space,
        collector.action_space,
        supervised=collector.supervised,
        hidden_sizes=p.hidden_sizes,
        activation=p.activation,
        init_log_std=p.init_log_std,
    )


def load_run_config(run_dir: str | Path, overrides=()) -> ExperimentConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise RunError(f"{run_dir} is not a run directory (no config.yaml)")
    return load_config(path, list(overrides))  # errors name the file and line


def load_run(run_dir: Path, checkpoint: int | None, overrides: Sequence[str] = ()):
    """(config, experiment with the checkpoint's state loaded, iteration) of a run directory."""
    cfg = load_run_config(run_dir)
    for item in overrides:
        cfg = set_by_path(cfg, *parse_override(item))
    validate_config(cfg)
    # The loaded run's own collector never collects: evaluate, tune and the diagnostics build their own
    # evaluation collectors (evaluation.curves.eval_collector, from cfg as it is). So it is built in this
    # process: a Ray run does not start actors, nor a process_pool run fork idle workers, to be evaluated.
    local = cfg.collector.backend in ("ray", "process_pool")
    exp = build_experiment(replace(cfg, collector=replace(cfg.collector, backend="auto")) if local else cfg)
    try:
        state = load_latest_checkpoint(run_dir, checkpoint)
    except CheckpointError as err:
        if checkpoint is not None or list_checkpoints(run_dir):
            raise RunError(str(err)) from None  # checkpoints exist but none is usable: never pretend iteration 0
        state = None  # no checkpoint yet (iteration 0): evaluating the initial meta-parameters is allowed
    if state is not None:
        exp.algo.load_state_dict(state["algo"])
    return cfg, exp, 0 if state is None else state["iteration"]


# ---------------------------------------------------------------------------------------------------
# metarl evaluate
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _closing(collector: Collector):
    """A collector closed after use (its vector envs hold MuJoCo threads and buffers)."""
    try:
        yield collector
    finally:
        collector.close()


def method_name(cfg) -> str:
    """The name of a run's curve in an evaluation: its algo, or ``metasgd`` for MAML with learned
    per-parameter inner rates (a method of its own in every comparison)."""
    return "metasgd" if cfg.algo == "maml" and cfg.maml.learn_inner_lr else cfg.algo


#: algorithms whose curve is gradient steps from a meta-learned initialisation (compared with a random one)
GRADIENT_BASED = ("maml", "pretrain", "promp")


def _horizon(cfg) -> int:
    return cfg.env.horizon if cfg.env.horizon is not None else horizon(cfg.env.id)


def evaluate_run(
    run_dir: str | Path,
    steps: int | None = None,
    tasks: int | None = None,
    seed: int | None = None,
    checkpoint: int | None = None,
    overrides: Sequence[str] = (),
    compare: Sequence[str | Path] = (),
    out_dir: str | Path | None = None,
) -> dict:
    """``metarl evaluate``: the run's curve, a random initialisation adapted the same way (for
    gradient-based runs), and the curves of the ``compare`` runs, all on the same test tasks."""
    run_dir = Path(run_dir)
    cfg, exp, iteration = load_run(run_dir, checkpoint, overrides)
    # One episode count (H = 1: K support samples) for every method scored: the evaluated run's.
    ev = replace(cfg.eval, steps=cfg.eval.steps if steps is None else steps,
                 tasks=cfg.eval.tasks if tasks is None else tasks, seed=cfg.eval.seed if seed is None else seed,
                 episodes_per_task=cfg.eval.episodes_per_task or cfg.maml.episodes_per_task)
    if ev.steps < 0 or ev.tasks < 1:
        raise RunError(f"evaluate needs --steps >= 0 and --tasks >= 1, got steps={ev.steps}, tasks={ev.tasks}")
    with _closing(eval_collector(cfg, ev)) as collector:
        # held-out tasks: the env's test set where it has one (Meta-World), else the eval stream's draws
        test_tasks = collector.sample_test_tasks(ev.tasks, np.random.default_rng(ev.seed))
        groups = collector.task_groups(test_tasks)
    #: rate curves beside the metric's (e.g. success_rate, from the same episodes): {key: {method: curve}}
    rates: dict[str, dict[str, np.ndarray]] = {}

    def curve(algo, run_cfg, run_ev, name: str) -> np.ndarray:
        # Every method gets a fresh collector with the evaluation seed (common random numbers), closed after;
        # with eval.task_batch, one per batch of test tasks, batch i > 0 seeded from (eval.seed, i).
        size = ev.task_batch or len(test_tasks)
        parts = []
        for i, start in enumerate(range(0, len(test_tasks), size)):
            part_ev = run_ev if i == 0 else replace(
                run_ev, seed=int(np.random.SeedSequence([run_ev.seed, i]).generate_state(1)[0]))
            with _closing(eval_collector(run_cfg, part_ev)) as collector:
                parts.append(adaptation_curves(algo, test_tasks[start:start + size], collector, part_ev))
        found = {key: np.concatenate([p[key] for p in parts], axis=1) for key in parts[0]}
        metric = getattr(algo, "metric", "return")
        for key, values in found.items():
            if key != metric:
                rates.setdefault(key, {})[name] = values
        return found[metric]

    curves: dict[str, np.ndarray] = {method_name(cfg): curve(exp.algo, cfg, ev, method_name(cfg))}
    if cfg.algo in GRADIENT_BASED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ev.seed + 1)
            random_policy = build_policy(cfg, exp.collector)
        # A random initialisation has no learned rates: it adapts with the scalar step sizes
        # (eval.inner_lr*, else maml.inner_lr), also when the run is Meta-SGD.
        random_algo = MAML(random_policy, exp.collector, replace(cfg.maml, learn_inner_lr=False))
        curves["random"] = curve(random_algo, cfg, ev, "random")
    gradient_based = {method_name(cfg): exp.algo} if cfg.algo in GRADIENT_BASED else {}
    scored_runs = [(run_dir, iteration)]  # for provenance.json
    for other in compare:
        other = Path(other)
        ocfg, oexp, oiteration = load_run(other, None)
        scored_runs.append((other, oiteration))
        if ocfg.env.id != cfg.env.id:
            raise RunError(f"--compare {other}: its environment is {ocfg.env.id}, not {cfg.env.id}")
        if (_horizon(ocfg), ocfg.env.kwargs) != (_horizon(cfg), cfg.env.kwargs):
            raise RunError(f"--compare {other}: its horizon and env.kwargs ({_horizon(ocfg)}, {ocfg.env.kwargs}) "
                           f"differ from {run_dir}'s ({_horizon(cfg)}, {cfg.env.kwargs}): not the same tasks")
        name = method_name(ocfg) if method_name(ocfg) not in curves else f"{method_name(ocfg)} ({other.name})"
        oev = ev
        if getattr(oexp.algo, "inner_lrs", None) is not None and (ev.inner_lr, ev.inner_lr_after_first) != (None, None):
            oev = replace(ev, inner_lr=None, inner_lr_after_first=None)
            print(f"{name}: a Meta-SGD run, adapts with its learned per-parameter rates, not eval.inner_lr*")
        curves[name] = curve(oexp.algo, ocfg, oev, name)
        if ocfg.algo in GRADIENT_BASED:
            gradient_based[name] = oexp.algo

    metric = getattr(exp.algo, "metric", "return")
    title = f"{cfg.env.id} (iteration {iteration})"
    out = Path(out_dir) if out_dir is not None else run_dir / "eval"
    summary = write_results(out, curves, metric, title, getattr(exp.algo, "curve_x_label", "gradient steps"),
                            actions="mean" if ev.deterministic else "sampled")
    written = "adaptation.csv, adaptation_per_task.csv, summary.json, adaptation.png"
    x_label = getattr(exp.algo, "curve_x_label", "gradient steps")
    for key, rate_curves in rates.items():
        summary.update(write_rate_results(out, key, rate_curves, title, x_label, groups))
        written += f", {key}.csv, {key}_per_task.csv, {key}.png" + (f", {key}_by_group.csv/png" if groups else "")
    if rates:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "provenance.json").write_text(json.dumps(provenance.evaluation_record(scored_runs), indent=2))
    written += ", provenance.json"
    if gradient_based and supports_regression_fits(exp.collector):
        fit_tasks = test_tasks[:FIT_TASKS]
        # Same seed for every method: the same support and query points in every row of the figure.
        fits = {name: regression_fits(algo, fit_tasks, eval_collector(cfg, ev),
                                      replace(ev, inner_lr=None, inner_lr_after_first=None) if algo.inner_lrs is not None else ev)
                for name, algo in gradient_based.items()}
        plot_regression_fits(fits, out / FITS_FILE, title)
        written += ", " + FITS_FILE
    for method, rows in summary["curves"].items():
        print(step_line(method, metric, [r["mean"] for r in rows], digits=3))
    for key in rates:
        for method, rows in summary[key].items():
            print(step_line(method, key, [r["mean"] for r in rows], digits=3))
    for key, what in (("gap_closed", "pretrain_k"), ("gap_closed_vs_pretrain_step0", "pretrain_0")):
        for method, fractions in summary.get(key, {}).items():
            print(step_line(method, f"{what}->oracle gap closed", fractions, digits=2))
    print(f"wrote {out}/: {written}")
    return summary


# ---------------------------------------------------------------------------------------------------
# metarl tune
# ---------------------------------------------------------------------------------------------------

TUNE_FILE = "tune.csv"
#: the test-time settings ``metarl tune`` chooses; the task count, steps, seed and episode count define
#: the validation protocol itself and eval.deterministic the scoring, so none of those is tuned
TUNABLE = ("eval.inner_lr", "eval.inner_lr_after_first")


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """``"eval.inner_lr=0.01,0.02"`` -> ``("eval.inner_lr", [0.01, 0.02])`` (each value read as YAML)."""
    key, _ = parse_override(text)
    raw_values = text.split("=", 1)[1].split(",")
    if key not in TUNABLE or any(not v.strip() for v in raw_values):
        raise ConfigError(f"--grid expects KEY=V1,V2,... with KEY one of {', '.join(TUNABLE)}, got {text!r}")
    return key, [parse_override(f"{key}={v}")[1] for v in raw_values]


def tune_run(
    run_dir: str | Path,
    grid: Sequence[str],
    seed: int,
    tasks: int | None = None,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
) -> dict:
    """``metarl tune``: every combination of the ``grid``'s test-time settings (``eval.*``), scored on
    validation tasks drawn from ``seed``, which must not be the test stream's ``eval.seed``; the chosen
    one has the best mean after the last step (highest return, lowest loss). Running it with the same
    grid for every method of a comparison is what "test-time settings chosen the same way" means.
    Writes ``tune.csv`` (one row per combination: its settings, the mean after every step, ``chosen``)."""
    run_dir = Path(run_dir)
    axes = [parse_grid(g) for g in grid]
    if not axes:
        raise RunError("tune needs at least one --grid eval.KEY=V1,V2,...")
    cfg, exp, iteration = load_run(run_dir, None, overrides)
    if seed == cfg.eval.seed:
        raise RunError(f"--seed {seed} is the test-task stream (eval.seed); choose settings on another stream, "
                       "e.g. --seed 2000")
    base = replace(cfg.eval, steps=cfg.eval.steps if steps is None else steps,
                   tasks=cfg.eval.tasks if tasks is None else tasks, seed=seed,
                   episodes_per_task=cfg.eval.episodes_per_task or cfg.maml.episodes_per_task)
    if base.steps < 1 or base.tasks < 1:
        raise RunError(f"tune needs --steps >= 1 and --tasks >= 1, got steps={base.steps}, tasks={base.tasks}")
    # Every combination is checked before any is scored (e.g. eval.inner_lr is refused for a Meta-SGD run).
    trials = []
    for combo in itertools.product(*(values for _, values in axes)):
        settings = [f"{key}={value}" for (key, _), value in zip(axes, combo)]
        trial = cfg
        for item in settings:
            trial = set_by_path(trial, *parse_override(item))
        validate_config(trial)
        trials.append((settings, replace(base, **{k.split(".", 1)[1]: getattr(trial.eval, k.split(".", 1)[1])
                                                  for k in TUNABLE})))
    with _closing(eval_collector(cfg, base)) as collector:
        val_tasks = collector.sample_tasks(base.tasks, np.random.default_rng(seed))
    metric = getattr(exp.algo, "metric", "return")
    # Gradient methods: combinations with the same first step sizes share those steps (data, adapted
    # parameters, random streams), computed once; a 7 x 5 grid over 3 steps collects 78 batches, not 140.
    prefixes = None
    if isinstance(exp.algo, GradientAdaptation) and not exp.collector.supervised:
        learned = exp.algo.inner_lrs is not None
        prefixes = SharedPrefixes([test_time_inner_lrs(cfg, ev, ev.steps, learned=learned) for _, ev in trials])
    rows = []
    for settings, ev in trials:
        # A fresh collector with the validation seed for every combination: common random numbers.
        with _closing(eval_collector(cfg, ev)) as collector:
            if prefixes is None:
                curve = exp.algo.adaptation_curve(val_tasks, collector, ev)
            else:
                curve = exp.algo.adaptation_curves(val_tasks, collector, ev, prefixes=prefixes)[metric]
        rows.append({"settings": settings, "means": [float(m) for m in curve.mean(axis=1)]})
        print(step_line(" ".join(s.split(".", 1)[1] for s in settings), metric, rows[-1]["means"], digits=3),
              flush=True)
    # Higher return / lower loss is better; a diverged combination (inf or nan) is never chosen.
    sign = -1.0 if metric == "loss" else 1.0
    score = np.array([sign * r["means"][-1] for r in rows])
    if not np.isfinite(score).any():
        raise RunError(f"every combination of the grid diverged on the validation tasks (no finite {metric} "
                       f"after step {base.steps}); try smaller step sizes")
    best = int(np.argmax(np.where(np.isfinite(score), score, -np.inf)))
    out = Path(out_dir) if out_dir is not None else run_dir / "tune"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TUNE_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([key for key, _ in axes] + [f"step{k}" for k in range(base.steps + 1)] + ["chosen"])
        for i, r in enumerate(rows):
            w.writerow([s.split("=", 1)[1] for s in r["settings"]] + [repr(m) for m in r["means"]] + [int(i == best)])
    chosen = rows[best]["settings"]
    print(f"chosen on {base.tasks} validation tasks (seed {seed}, iteration {iteration}, best {metric} after "
          f"step {base.steps}): " + " ".join(f"--set {s}" for s in chosen))
    print(f"wrote {out / TUNE_FILE}")
    return {"chosen": chosen, "rows": rows, "metric": metric}
