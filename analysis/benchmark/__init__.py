"""A weight-space benchmark shipped with every zoo, OGB-style: fixed tasks (test accuracy,
generalisation gap, phase, the grid's hyperparameters), seeded split schemes that hold out
whole cells, the largest widths or whole seeds (stored as benchmark/splits.json), an
evaluator (R², Kendall τ, balanced accuracy with 95 % intervals over folds) and baselines
(`zoo benchmark DIR`): the hyperparameters alone as the control, per-layer statistics with
gradient boosting and a linear probe, and a small permutation-equivariant network (NP-NFN).
"""

from analysis.benchmark.run import Benchmark, BenchmarkResult, run_benchmark

__all__ = ["Benchmark", "BenchmarkResult", "run_benchmark"]
