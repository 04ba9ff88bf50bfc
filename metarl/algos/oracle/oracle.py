"""``algo: oracle``: a PPO policy that sees the task in its observation (the MAML paper's oracle).

The oracle is the upper reference of an adaptation plot: it is told the task (goal position, target
velocity, direction) and therefore needs no adaptation. It is trained with stable-baselines3 PPO
(``MlpPolicy``) on :func:`metarl.sampling.oracle_env.make_oracle_env` environments that draw a fresh task at
every reset, so one policy is trained across the whole task distribution.

Settings. The network is ``policy.hidden_sizes`` / ``policy.activation`` / ``policy.init_log_std``
for both the actor and the critic. PPO uses the ``rl2`` section's PPO settings: ``lr``, ``gamma``,
``gae_lambda``, ``ppo_epochs``, ``minibatches`` (minibatches per epoch), ``clip_range``,
``entropy_coef``, ``value_coef``, ``max_grad_norm``. One training iteration is one PPO rollout of
:data:`EPISODES_PER_ENV` horizons in each of :data:`NUM_ENVS` environments followed by one PPO
update, i.e. ``NUM_ENVS * EPISODES_PER_ENV * H`` environment steps; the budget is
``train.iterations`` times that.

Reproducibility and exact resume. SB3 draws actions from torch's global generator and minibatch
orders from numpy's global generator, and its environments keep episodes running across ``learn``
calls. To make an iteration a function of the saved state only:

* every iteration starts with a seeded reset of all environments (the seed is drawn from the
  training task stream ``rng`` that ``metarl train`` checkpoints), so no episode state crosses an
  iteration boundary; the rollout ends on whole horizons, so only episodes that ended early leave a
  partial episode to be dropped, and PPO bootstraps the value of the last observation as usual;
* the trainer keeps private torch / numpy generator states, swaps them in around ``learn`` (and
  around model construction) and puts the caller's global states back, so training neither uses
  nor disturbs anyone else's global random state; these private states are checkpointed.

Actions. The PPO environments are wrapped with the run collector's :meth:`~metarl.sampling.collector.Collector.env_action`,
the one function that maps and clips every method's actions, so the oracle's env sees exactly what
the meta-learners' envs see (SB3 also clips to the wrapper's bounds first, which changes nothing).

Evaluation. The oracle's adaptation "curve" is its performance on each test task, repeated at every
step: it is measured with metarl's own :class:`~metarl.sampling.collector.Collector` on the
task-in-observation environment (``oracle=True``, same seed and settings as the evaluation
collector it is given), scored like every other method: with sampled actions, or with the mean
action for every method when ``eval.deterministic`` is true.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.sampling.backends import make_evaluation_collector
from metarl.sampling.collector import Collector
from metarl.common.distributions import Categorical, DiagGaussian

#: Parallel training environments (SB3 DummyVecEnv).
NUM_ENVS = 8
#: Horizons of rollout per environment per iteration (PPO's n_steps = EPISODES_PER_ENV * H).
EPISODES_PER_ENV = 2

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
#: PPO statistics reported every iteration (SB3 logger key -> our key).
_PPO_STATS = {
    "train/approx_kl": "ppo/approx_kl",
    "train/clip_fraction": "ppo/clip_fraction",
    "train/entropy_loss": "ppo/entropy_loss",
    "train/policy_gradient_loss": "ppo/policy_gradient_loss",
    "train/value_loss": "ppo/value_loss",
    "train/explained_variance": "ppo/explained_variance",
}


class OracleError(ValueError):
    """A configuration the oracle cannot train (reported as one line by the CLI)."""


class SB3PolicyModule(nn.Module):
    """An SB3 ``ActorCriticPolicy`` seen as a metarl policy, so the Collector can run it.

    ``forward(obs)`` returns ``(mean, log_std)`` for Box actions (SB3's own Gaussian; the collector
    clips what is sampled from it, as SB3 clips before stepping) or the logits for Discrete
    actions; ``distribution(out)`` builds the matching metarl distribution. The SB3 module's
    parameters are shared, not copied: the wrapper always acts with the current policy.
    """

    is_recurrent = False

    def __init__(self, sb3_policy, action_space: gym.Space):
        super().__init__()
        self.sb3_policy = sb3_policy
        self.discrete = isinstance(action_space, gym.spaces.Discrete)

    def forward(self, obs: torch.Tensor):
        p = self.sb3_policy
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, obs.shape[-1]).to(p.device)
        features = p.extract_features(flat)
        if not p.share_features_extractor:
            features = features[0]
        out = p.action_net(p.mlp_extractor.forward_actor(features))
        out = out.reshape(*lead, out.shape[-1]).to(obs.device)
        if self.discrete:
            return out
        return out, p.log_std.to(obs.device).expand_as(out)

    def distribution(self, out):
        return Categorical(out) if self.discrete else DiagGaussian(*out)


class OracleTrainer:
    """SB3 PPO on the task-in-observation environments; implements metarl.algos.base.Algorithm.

    ``collector`` is the run's (non-oracle) collector; it only tells whether the task distribution
    is supervised. ``num_envs`` / ``episodes_per_env`` default to the module constants (tests use
    smaller values).
    """

    metric = "return"
    curve_x_label = "gradient steps on the new task"

    def __init__(self, cfg, collector: Collector, num_envs: int | None = None, episodes_per_env: int | None = None):
        from stable_baselines3 import PPO
        from stable_baselines3.common.logger import Logger
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        from metarl.sampling.oracle_env import make_oracle_env
        from metarl.common.seeding import seed_streams

        if collector.supervised:
            raise OracleError(
                f"algo: oracle is for RL task distributions; {cfg.env.id} is a supervised (H=1) task"
            )
        self.cfg = cfg
        self.num_envs = int(num_envs or NUM_ENVS)
        self.episodes_per_env = int(episodes_per_env or EPISODES_PER_ENV)
        if self.num_envs < 1 or self.episodes_per_env < 1:
            raise OracleError(
                f"oracle needs num_envs >= 1 and episodes_per_env >= 1, got {self.num_envs} and {self.episodes_per_env}"
            )
        if cfg.policy.activation not in _ACTIVATIONS:
            raise OracleError(f"policy.activation must be one of {sorted(_ACTIVATIONS)}, got {cfg.policy.activation!r}")
        self.horizon = collector.horizon
        make_kwargs = dict(cfg.env.kwargs)
        if cfg.env.horizon is not None:
            make_kwargs["max_episode_steps"] = int(cfg.env.horizon)

        def make_env():
            env = make_oracle_env(cfg.env.id, resample_tasks_on_reset=True, **make_kwargs)
            if isinstance(env.action_space, gym.spaces.Box):
                # The collector's own mapping and clipping (Collector.env_action): with rescaling PPO
                # acts in [-1, 1] like the meta-learners, and in every case its env is stepped with
                # exactly the actions the meta-learners' envs would get.
                space = (gym.spaces.Box(-1.0, 1.0, shape=env.action_space.shape, dtype=np.float32)
                         if collector.rescale_actions else env.action_space)
                env = gym.wrappers.TransformAction(
                    env, lambda a: collector.env_action(np.asarray(a, dtype=np.float32)), space)
            # allow_early_resets: every iteration starts with a seeded reset, mid-episode included.
            return Monitor(env, allow_early_resets=True)

        self.venv = DummyVecEnv([make_env] * self.num_envs)
        self.action_space = self.venv.action_space

        # One seed for weights, torch sampling and numpy minibatch shuffles: the run's "init" stream.
        init = seed_streams(cfg.seed)["init"].generate_state(2)
        n_steps = self.episodes_per_env * self.horizon
        rollout = n_steps * self.num_envs
        rc = cfg.rl2
        # The largest minibatch size that splits the rollout into rl2.minibatches (nearly) equal parts.
        batch_size = max(2, rollout // max(1, rc.minibatches))  # SB3 requires minibatches of 2 or more
        with self._global_rng(torch_seed=int(init[0]), numpy_seed=int(init[1])):
            self.model = PPO(
                "MlpPolicy",
                self.venv,
                learning_rate=rc.lr,
                n_steps=n_steps,
                batch_size=batch_size,
                n_epochs=rc.ppo_epochs,
                gamma=rc.gamma,
                gae_lambda=rc.gae_lambda,
                clip_range=rc.clip_range,
                ent_coef=rc.entropy_coef,
                vf_coef=rc.value_coef,
                max_grad_norm=rc.max_grad_norm,
                policy_kwargs=dict(
                    net_arch=dict(pi=list(cfg.policy.hidden_sizes), vf=list(cfg.policy.hidden_sizes)),
                    activation_fn=_ACTIVATIONS[cfg.policy.activation],
                    log_std_init=cfg.policy.init_log_std,
                ),
                device=cfg.collector.device,
                verbose=0,
                seed=None,  # seeding is ours (see _global_rng): SB3's set_random_seed would reseed the globals
            )
        # No output formats: the statistics are read from the logger and returned to metarl's logger.
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.policy = SB3PolicyModule(self.model.policy, self.action_space)

    # ------------------------------------------------------------------ private random state
    @contextlib.contextmanager
    def _global_rng(self, torch_seed: int | None = None, numpy_seed: int | None = None):
        """Run the block on the trainer's own torch / numpy global states, then restore the caller's."""
        saved_torch, saved_np = torch.get_rng_state(), np.random.get_state()
        try:
            if torch_seed is not None:
                torch.manual_seed(torch_seed)
                np.random.seed(numpy_seed % 2**32)
            else:
                torch.set_rng_state(self._torch_rng)
                np.random.set_state(self._numpy_rng)
            yield
        finally:
            self._torch_rng = torch.get_rng_state()
            self._numpy_rng = np.random.get_state()
            torch.set_rng_state(saved_torch)
            np.random.set_state(saved_np)

    # ------------------------------------------------------------------ training
    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.episodes_per_env * self.horizon

    def train_iteration(self, rng: np.random.Generator) -> dict[str, float]:
        """One PPO rollout (``steps_per_iteration`` env steps) and one PPO update."""
        t0 = time.perf_counter()
        model = self.model
        # A seeded reset of every env (the seed from the checkpointed task stream): the iteration
        # depends only on saved state, so resumed runs continue exactly.
        self.venv.seed(int(rng.integers(0, 2**31 - self.num_envs)))
        model._last_obs = None  # makes learn() reset the envs (with the seeds above)
        model.ep_info_buffer = deque()  # only this iteration's episodes
        model.ep_success_buffer = deque()
        before = model.num_timesteps
        with self._global_rng():
            model.learn(self.steps_per_iteration, reset_num_timesteps=False, log_interval=None)
        returns = [info["r"] for info in model.ep_info_buffer]
        lengths = [info["l"] for info in model.ep_info_buffer]
        stats: dict[str, float] = {
            "train/return": float(np.mean(returns)) if returns else None,
            "train/episode_length": float(np.mean(lengths)) if lengths else None,
            "train/episodes": float(len(returns)),
        }
        values = model.logger.name_to_value
        for sb3_key, key in _PPO_STATS.items():
            v = values.get(sb3_key)
            stats[key] = float(v) if v is not None and np.isfinite(v) else None
        if not self.policy.discrete:
            stats["ppo/std"] = float(model.policy.log_std.detach().exp().mean())
        stats["time/iteration_s"] = time.perf_counter() - t0
        stats["env_steps"] = float(model.num_timesteps - before)
        return stats

    # ------------------------------------------------------------------ evaluation
    def oracle_collector(self, collector: Collector) -> Collector:
        """The task-in-observation twin of ``collector`` (same env, seed, horizon and backend: a process
        pool's twin is a pool of as many workers and threads; Ray's is in this process, as for every
        evaluation collector)."""
        return make_evaluation_collector(
            collector.env_id, backend=collector.backend, num_workers=collector.num_workers,
            num_threads=collector.num_threads, seed=collector.seed, env_kwargs=collector.env_kwargs,
            horizon=collector.horizon, oracle=True, rescale_actions=collector.rescale_actions,
        )

    def adaptation_curve(self, tasks: Sequence, collector: Collector, ev) -> np.ndarray:
        """Mean return on each task, repeated for steps 0..ev.steps: [steps+1, n_tasks]. Actions are
        sampled, as for every other method, or the mean action with ``ev.deterministic``."""
        episodes = ev.episodes_per_task or self.cfg.maml.episodes_per_task
        oc = collector if collector.oracle else self.oracle_collector(collector)
        try:
            with torch.no_grad():
                batch = oc.collect(self.policy, tasks, episodes, deterministic=ev.deterministic)
        finally:
            if oc is not collector:
                oc.close()
        per_task = batch.mean_return_per_task().cpu().numpy()
        return np.tile(per_task, (ev.steps + 1, 1))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        m = self.model
        return {
            "policy": {k: v.detach().clone() for k, v in m.policy.state_dict().items()},
            "optimizer": m.policy.optimizer.state_dict(),
            "num_timesteps": int(m.num_timesteps),
            "n_updates": int(m._n_updates),
            "torch_rng": self._torch_rng.clone(),
            "numpy_rng": self._numpy_rng,
        }

    def load_state_dict(self, state: dict) -> None:
        m = self.model
        m.policy.load_state_dict(state["policy"])
        m.policy.optimizer.load_state_dict(state["optimizer"])
        m.num_timesteps = int(state["num_timesteps"])
        m._n_updates = int(state.get("n_updates", 0))
        self._torch_rng = state["torch_rng"].clone()
        self._numpy_rng = state["numpy_rng"]

    def close(self) -> None:
        self.venv.close()
