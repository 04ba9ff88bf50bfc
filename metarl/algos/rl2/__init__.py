"""RL²: a recurrent policy trained across trials of several episodes (PPO or TRPO), and its config section."""

from metarl.algos.rl2.config import RL2Config
from metarl.algos.rl2.rl2 import RL2

__all__ = ["RL2", "RL2Config"]
