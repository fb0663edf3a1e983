"""launch/aggregates.py against the published formulas, computed independently here:
scipy's trimmed mean, scipy's Mann-Whitney U, brute-force pair counts, hand-counted score
distributions, and normal-theory intervals / coverage for the stratified bootstrap."""
import itertools

import numpy as np
import pytest
import scipy.stats

from launch import aggregates


def ragged_tasks(rng, sizes):
    return [rng.normal(loc=i, size=n) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("sizes", [(1,), (4,), (5,), (3, 4), (2, 5, 6), (7, 7, 7)])
def test_iqm_is_scipys_25_percent_trimmed_mean_of_all_runs(sizes):
    tasks = ragged_tasks(np.random.default_rng(len(sizes)), sizes)
    expected = scipy.stats.trim_mean(np.concatenate(tasks), 0.25)
    np.testing.assert_allclose(aggregates.interquartile_mean(tasks), expected, rtol=1e-12)


def test_iqm_by_hand_and_batched():
    # 8 pooled scores: drop the 2 lowest and 2 highest, average 3, 4, 5, 6
    tasks = [np.array([8.0, 1.0, 3.0]), np.array([2.0, 7.0, 4.0, 6.0, 5.0])]
    assert aggregates.interquartile_mean(tasks) == 4.5
    batch = [np.stack([t, t + 10.0]) for t in tasks]  # a leading axis of 2 "resamples"
    np.testing.assert_allclose(aggregates.interquartile_mean(batch), [4.5, 14.5])


def test_mean_median_and_optimality_gap_by_hand():
    tasks = [np.array([0.0, 100.0]), np.array([50.0]), np.array([120.0, 80.0, 100.0])]
    # task means 50, 50, 100
    assert aggregates.mean_of_task_means(tasks) == pytest.approx(200.0 / 3)
    assert aggregates.median_of_task_means(tasks) == 50.0
    # min(x, 100) task means: 50, 50, 280/3; gap = 100 - their mean
    assert aggregates.optimality_gap(tasks, gamma=100.0) == pytest.approx(
        100.0 - (50.0 + 50.0 + 280.0 / 3) / 3)
    assert aggregates.optimality_gap([np.array([1.5, 2.0])], gamma=1.0) == 0.0


def brute_force_improvement(xs, ys):
    per_task = []
    for x, y in zip(xs, ys):
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y))
        per_task.append(wins / (len(x) * len(y)))
    return float(np.mean(per_task))


def test_probability_of_improvement_is_the_pairwise_count_and_mann_whitney():
    rng = np.random.default_rng(3)
    # integer scores so that ties occur; different run counts for X and Y
    xs = [rng.integers(0, 6, size=n).astype(float) for n in (5, 3, 8)]
    ys = [rng.integers(0, 6, size=n).astype(float) for n in (4, 6, 8)]
    value = aggregates.probability_of_improvement(xs, ys)
    assert value == pytest.approx(brute_force_improvement(xs, ys), abs=1e-12)
    u_stats = [scipy.stats.mannwhitneyu(x, y, alternative="greater").statistic / (x.size * y.size)
               for x, y in zip(xs, ys)]
    assert value == pytest.approx(np.mean(u_stats), abs=1e-12)
    assert aggregates.probability_of_improvement(ys, xs) == pytest.approx(1.0 - value)
    assert aggregates.probability_of_improvement(xs, xs) == pytest.approx(0.5)


def test_probability_of_improvement_batched_rows_match_unbatched():
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(3, 5)), rng.normal(size=(3, 2))]
    ys = [rng.normal(size=(3, 4)), rng.normal(size=(3, 6))]
    batched = aggregates.probability_of_improvement(xs, ys)
    rows = [aggregates.probability_of_improvement([x[i] for x in xs], [y[i] for y in ys])
            for i in range(3)]
    np.testing.assert_allclose(batched, rows)
    with pytest.raises(ValueError, match="same tasks"):
        aggregates.probability_of_improvement(xs, ys[:1])


def test_score_distribution_at_given_taus_by_hand():
    tasks = [np.array([0.0, 50.0, 100.0]), np.array([20.0, 80.0])]
    taus = np.array([-1.0, 0.0, 50.0, 80.0, 100.0])
    # tau=-1: all; tau=0: 2/3 and 1; tau=50: 1/3 and 1/2 (strictly above); 80: 1/3, 0; 100: 0
    expected = [1.0, (2 / 3 + 1) / 2, (1 / 3 + 1 / 2) / 2, (1 / 3) / 2, 0.0]
    np.testing.assert_allclose(aggregates.score_distribution(tasks, taus), expected)
    batch = [np.stack([t, t - 1000.0]) for t in tasks]
    out = aggregates.score_distribution(batch, taus)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[1], [0.0] * 5)


def test_stratified_bootstrap_resamples_within_tasks():
    # task A scores 0, task B scores 1: every within-task resample keeps 4 zeros and 4 ones,
    # so the mean of task means and the IQM are exactly 0.5 in every resample (a bootstrap
    # pooling the 8 runs would spread them over [0, 1])
    tasks = [np.zeros(4), np.ones(4)]
    for statistic in (aggregates.mean_of_task_means, aggregates.interquartile_mean):
        point, lo, hi = aggregates.stratified_bootstrap(statistic, tasks, reps=500)
        assert (point, lo, hi) == (0.5, 0.5, 0.5)
    # X beats Y in every pair of every task: P(X > Y) = 1 in every resample
    point, lo, hi = aggregates.stratified_bootstrap(
        aggregates.probability_of_improvement, [np.array([2.0, 3.0]), np.array([9.0])],
        [np.array([0.0, 1.0, 1.5]), np.array([5.0, 8.0])], reps=300)
    assert (point, lo, hi) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_of_a_large_sample_mean_is_the_normal_interval():
    x = np.random.default_rng(5).normal(3.0, 2.0, size=400)
    point, lo, hi = aggregates.stratified_bootstrap(aggregates.mean_of_task_means, [x],
                                                    reps=20_000, seed=1)
    half = 1.959964 * x.std() / np.sqrt(x.size)  # the bootstrap's sd uses the plug-in variance
    assert point == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - half, abs=0.06 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.06 * half)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    trials, covered = 400, 0
    for t in range(trials):
        tasks = [rng.normal(m, 1.0, size=10) for m in (0.0, 1.0, 2.0)]  # true value 1.0
        _, lo, hi = aggregates.stratified_bootstrap(aggregates.mean_of_task_means, tasks,
                                                    reps=1000, seed=t)
        covered += lo <= 1.0 <= hi
    # percentile intervals from 10 runs per task under-cover slightly (about 0.93); a
    # binomial sd of the rate over 400 trials is about 0.012
    assert 0.89 <= covered / trials <= 0.98


def test_bootstrap_blocks_bound_memory_without_changing_the_interval(monkeypatch):
    tasks = [np.random.default_rng(7).normal(size=50)]
    one_block = aggregates.stratified_bootstrap(aggregates.interquartile_mean, tasks,
                                                reps=4000, seed=2)
    monkeypatch.setattr(aggregates, "_BLOCK_VALUES", 50 * 7)  # 7 resamples per block
    blocks = aggregates.stratified_bootstrap(aggregates.interquartile_mean, tasks,
                                             reps=4000, seed=2)
    assert blocks[0] == one_block[0]
    np.testing.assert_allclose(blocks[1:], one_block[1:], atol=0.03)  # Monte Carlo error only


def test_bootstrap_profile_bands_have_one_value_per_tau():
    tasks = [np.array([10.0, 20.0, 30.0]), np.array([15.0, 25.0])]
    taus = np.linspace(0.0, 40.0, 9)
    point, lo, hi = aggregates.stratified_bootstrap(
        lambda s: aggregates.score_distribution(s, taus), tasks, reps=200)
    assert point.shape == lo.shape == hi.shape == (9,)
    assert np.all(lo <= point + 1e-12) and np.all(point <= hi + 1e-12)
    assert point[0] == 1.0 and point[-1] == 0.0


def test_bootstrap_rejects_a_task_without_runs():
    with pytest.raises(ValueError, match="task indices without runs: \\[1\\]"):
        aggregates.stratified_bootstrap(aggregates.interquartile_mean,
                                        [np.ones(3), np.zeros(0)], reps=10)
