"""Adaptation curves on held-out tasks, their statistics and plots, gap fractions, bandit baselines.

Takes algorithm objects (metarl.algos) and collectors; knows nothing of run directories (metarl.experiment).
"""
