"""Training algorithms, one package per family (maml, rl2, oracle), each with its config dataclass.

They ask a Collector (metarl.sampling) for episodes and never step environments; they may import
metarl.common and metarl.sampling, never evaluation or the run layer (docs/architecture.md).
"""
