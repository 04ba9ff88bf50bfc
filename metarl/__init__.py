"""metarl: meta-learning for few-shot regression and meta-reinforcement learning in PyTorch."""

__version__ = "0.1.0"

import metarl.envs  # noqa: E402,F401  (registers the metarl/ task distributions with Gymnasium)
