"""metarl: meta-learning for few-shot regression and meta-reinforcement learning in PyTorch.

The public API (everything else is reachable through its package; docs/architecture.md maps them):

- :class:`Collector` / :class:`EpisodeBatch`: batched episodes of many tasks in one policy call per step
- :func:`make_policy`: an MLP policy (or regressor) for an observation / action space
- :class:`MAML` / :class:`MAMLConfig`, :class:`RL2` / :class:`RL2Config`: the algorithms and their settings
- :func:`load_config` / :class:`ExperimentConfig`: a YAML experiment with ``--set``-style overrides;
  :func:`build_experiment` turns it into a collector, a policy and an algorithm

Importing ``metarl`` registers the ``metarl/`` task distributions with Gymnasium.
"""

__version__ = "0.1.0"

import metarl.envs  # noqa: F401  (registers the metarl/ task distributions with Gymnasium)
from metarl.algos.maml import MAML, MAMLConfig
from metarl.algos.rl2 import RL2, RL2Config
from metarl.common.policies import make_policy
from metarl.experiment import ExperimentConfig, build_experiment, load_config
from metarl.sampling.collector import Collector, EpisodeBatch

__all__ = [
    "Collector",
    "EpisodeBatch",
    "make_policy",
    "MAML",
    "MAMLConfig",
    "RL2",
    "RL2Config",
    "ExperimentConfig",
    "load_config",
    "build_experiment",
]
