"""The oracle reference: SB3 PPO on task-in-observation environments (configured by the maml/policy sections)."""

from metarl.algos.oracle.oracle import OracleTrainer

__all__ = ["OracleTrainer"]
