"""Aggregate scores over runs x tasks with stratified bootstrap CIs, in numpy.

The statistics of Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (NeurIPS), the paper behind the `rliable` library:

    IQM                 mean of the middle 50% of all run x task scores (25% trimmed mean
                        of the pooled runs, so a task with more runs weighs more)
    mean, median        of the per-task mean scores
    optimality gap      gamma - E[min(x, gamma)], E the mean over tasks of each task's mean
                        over runs: how far runs fall short of the target gamma
    score distribution  F(tau) = 1/M sum_m 1/N_m sum_n 1[x_mn > tau] (Sec. 4): the fraction of
                        runs above tau, each task weighted equally; plotted over tau it is the
                        performance profile
    P(X > Y)            1/M sum_m P(X_m > Y_m), with P(X_m > Y_m) the Mann-Whitney statistic
                        1/(N K) sum_i sum_j S(x_mi, y_mj), S = 1 if x > y, 1/2 if equal, else 0

Scores come as one 1-D array per task (runs of that task: seeds, possibly pooled from several
run folders; tasks may hold different numbers of runs). Each statistic maps such a list, or the
same list with a leading batch axis on every array (`[..., N_m]`), to a result with that batch
axis; the bootstrap relies on it to evaluate all resamples at once.

Confidence intervals are the stratified percentile bootstrap (Sec. 4): every resample draws
N_m runs with replacement within each task m, so each task keeps its weight and the CI says how
the aggregate would move under new seeds on the same tasks. The two-algorithm statistic
resamples the runs of X and of Y independently, each within its task.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

INTERVAL_RESAMPLES = 50_000  # rliable's `get_interval_estimates` default
PROFILE_RESAMPLES = 2_000  # rliable's `create_performance_profile` default
_BLOCK_VALUES = 4_000_000  # resampled scores held in memory at once

TaskScores = Sequence[np.ndarray]  # one [..., N_m] array per task m


def _pooled(task_scores: TaskScores) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=float) for x in task_scores], axis=-1)


def _task_means(task_scores: TaskScores) -> np.ndarray:
    """[M, ...]: each task's mean over its runs."""
    return np.stack([np.asarray(x, dtype=float).mean(axis=-1) for x in task_scores])


def interquartile_mean(task_scores: TaskScores) -> np.ndarray:
    """IQM of all runs of all tasks: drop the floor(n/4) lowest and highest of the n pooled
    scores and average the rest (scipy.stats.trim_mean(x, 0.25) on the pooled scores)."""
    pooled = np.sort(_pooled(task_scores), axis=-1)
    n = pooled.shape[-1]
    cut = n // 4
    return pooled[..., cut:n - cut].mean(axis=-1)


def mean_of_task_means(task_scores: TaskScores) -> np.ndarray:
    return _task_means(task_scores).mean(axis=0)


def median_of_task_means(task_scores: TaskScores) -> np.ndarray:
    return np.median(_task_means(task_scores), axis=0)


def optimality_gap(task_scores: TaskScores, *, gamma: float) -> np.ndarray:
    """gamma - mean over tasks of the runs' mean of min(x, gamma); 0 when every run reaches
    gamma (e.g. gamma = 100 for D4RL normalized scores, the reference expert)."""
    clipped = [np.minimum(np.asarray(x, dtype=float), gamma) for x in task_scores]
    return gamma - mean_of_task_means(clipped)


def score_distribution(task_scores: TaskScores, taus: np.ndarray) -> np.ndarray:
    """[..., T]: fraction of runs with score > tau, averaged over tasks, at each tau."""
    taus = np.asarray(taus, dtype=float).ravel()
    tasks = [np.asarray(x, dtype=float) for x in task_scores]
    # one tau at a time: [..., N_m] comparisons, never a [..., T, N_m] block
    return np.stack([np.mean([(x > tau).mean(axis=-1) for x in tasks], axis=0)
                     for tau in taus], axis=-1)


def probability_of_improvement(scores_x: TaskScores, scores_y: TaskScores) -> np.ndarray:
    """P(X > Y) averaged over tasks; scores_x[m] and scores_y[m] are the runs of task m."""
    if len(scores_x) != len(scores_y):
        raise ValueError(f"P(X > Y) needs the same tasks for both: {len(scores_x)} vs "
                         f"{len(scores_y)} score arrays")
    per_task = []
    for x, y in zip(scores_x, scores_y):
        x = np.asarray(x, dtype=float)[..., :, None]  # [..., N, 1]
        y = np.asarray(y, dtype=float)[..., None, :]  # [..., 1, K]
        per_task.append((x > y).mean(axis=(-2, -1)) + 0.5 * (x == y).mean(axis=(-2, -1)))
    return np.mean(per_task, axis=0)


def stratified_bootstrap(statistic: Callable[..., np.ndarray], *groups: TaskScores,
                         reps: int = INTERVAL_RESAMPLES, level: float = 0.95, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point estimate, CI low, CI high) of `statistic(*groups)` by the stratified percentile
    bootstrap: each group (an algorithm's per-task scores) is resampled independently, runs
    drawn with replacement within each task. The statistic must accept a leading resample
    axis; resamples are evaluated in blocks to bound memory."""
    groups = [[np.asarray(x, dtype=float).ravel() for x in g] for g in groups]
    for g in groups:
        empty = [i for i, x in enumerate(g) if x.size == 0]
        if not g or empty:
            raise ValueError(f"stratified bootstrap needs at least one run per task; task "
                             f"indices without runs: {empty or 'no tasks given'}")
    point = np.asarray(statistic(*groups))
    runs = sum(x.size for g in groups for x in g)
    block = max(1, min(reps, _BLOCK_VALUES // max(runs, 1)))
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, reps, block):
        n = min(block, reps - start)
        resampled = [[x[rng.integers(0, x.size, size=(n, x.size))] for x in g] for g in groups]
        values.append(np.asarray(statistic(*resampled)))
    values = np.concatenate(values, axis=0)
    alpha = (1.0 - level) / 2
    return point, np.quantile(values, alpha, axis=0), np.quantile(values, 1 - alpha, axis=0)
