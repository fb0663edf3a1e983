"""Stochastic approximation (book Ch. 6): Robbins-Monro and SGD / MBGD / BGD mean estimation.

References are numpy re-implementations of the recursions, sample means, and the asymptotic
variances of the RM iterates.
"""
import jax
import numpy as np
import pytest

from algorithms.tabular import robbins_monro, sgd_mean_estimation


def rm_final(config, keys):
    """w after one update (= config.steps_per_update RM steps) for every key."""
    return np.asarray(jax.jit(jax.vmap(
        lambda k: robbins_monro.update(robbins_monro.init(k, config, None), config, None)[0].w
    ))(keys))


# ---------------------------------------------------------------------- Robbins-Monro
def test_rm_noise_free_matches_numpy_recursion():
    """The book's example: g(w) = tanh(w - 1), w_1 = 3, a_k = 1/k, no noise."""
    config = robbins_monro.default_config()
    config.noise_std, config.steps_per_update = 0.0, 1
    state = robbins_monro.init(jax.random.key(0), config, None)
    step = jax.jit(lambda s: robbins_monro.update(s, config, None))
    w_np, ws = 3.0, []
    for k in range(1, 51):
        state, metrics = step(state)
        w_np = w_np - (1.0 / k) * np.tanh(w_np - 1.0)
        ws.append(float(state.w))
        np.testing.assert_allclose(float(state.w), w_np, rtol=1e-5, atol=1e-6)
    assert int(state.k) == 50 and int(state.step) == 50
    # Monotone approach from above (tanh' > 0, steps never overshoot here), error < 0.05.
    assert np.all(np.diff(ws) <= 1e-7) and min(ws) > 1.0 - 1e-6
    assert abs(ws[-1] - 1.0) < 0.05
    assert float(robbins_monro.evaluate(state, None, config, None)["abs_error"]) < 0.05


def test_rm_converges_with_noise_and_constant_step_keeps_a_noise_floor():
    """1000 noisy steps (eta ~ N(0, 0.5^2)), 64 seeds.

    a_k = 1/k: near the root g'(w*) = 1 and Var(w_k) ~ sigma^2 / k = 2.5e-4 (measured 2.5e-4,
    mean |w - 1| 0.014). Constant a = 0.5 violates sum a_k^2 < inf: the stationary variance
    a sigma^2 / (2 - a) = 0.083 does not shrink (measured 0.083). a_k = 1/k^0.75 (also valid)
    converges too (measured mean |w - 1| 0.023).
    """
    keys = jax.random.split(jax.random.key(0), 64)
    config = robbins_monro.default_config()
    config.steps_per_update = 1000
    assert config.noise_std == 0.5
    w_rm = rm_final(config, keys)
    assert np.mean(np.abs(w_rm - 1.0)) < 0.03
    assert np.max(np.abs(w_rm - 1.0)) < 0.08
    np.testing.assert_allclose(w_rm.var(), 0.25 / 1000, rtol=0.5)

    config.step_power = 0.75
    w_p = rm_final(config, keys)
    assert np.mean(np.abs(w_p - 1.0)) < 0.05

    config.step_power, config.step_scale = 0.0, 0.5
    w_c = rm_final(config, keys)
    np.testing.assert_allclose(w_c.var(), 0.5 * 0.25 / 1.5, rtol=0.5)
    assert w_c.var() > 50 * w_rm.var()


def test_rm_mean_estimation_special_case():
    """problem='mean': g(w) = w - E[X]; with a_k = 1/k, w_{K+1} is the mean of K samples of
    N(E[X], sigma^2), so E[(w - E[X])^2] = sigma^2 / K (64 seeds: within 40%)."""
    config = robbins_monro.default_config()
    config.problem, config.mean, config.noise_std, config.steps_per_update = "mean", -2.0, 2.0, 200
    w = rm_final(config, jax.random.split(jax.random.key(1), 64))
    np.testing.assert_allclose(np.mean((w + 2.0) ** 2), 4.0 / 200, rtol=0.4)
    with pytest.raises(ValueError, match="unknown problem"):
        config.problem = "nope"
        robbins_monro.init(jax.random.key(0), config, None)


# ---------------------------------------------------------------------- SGD / MBGD / BGD
def sgd_run(config, key, num_updates):
    state = sgd_mean_estimation.init(key, config, None)

    @jax.jit
    def run(state):
        return jax.lax.scan(lambda s, _: sgd_mean_estimation.update(s, config, None), state,
                            None, length=num_updates)

    state, metrics = run(state)
    return state, metrics, sgd_mean_estimation.evaluate(state, None, config, None)


def test_data_set_is_the_books_uniform_square():
    config = sgd_mean_estimation.default_config()
    assert (config.num_samples, config.dim, config.half_width, config.mean) == (100, 2, 10.0, 0.0)
    config.num_samples, config.mean = 5000, 3.0
    data = np.asarray(sgd_mean_estimation.init(jax.random.key(0), config, None).data)
    assert data.shape == (5000, 2)
    assert data.min() >= 3.0 - 10.0 and data.max() <= 3.0 + 10.0
    # uniform on [-10, 10] + 3: mean 3 (se 0.08), variance 100/3 (se ~0.8)
    np.testing.assert_allclose(data.mean(0), 3.0, atol=0.3)
    np.testing.assert_allclose(data.var(0), 100.0 / 3.0, rtol=0.1)


def test_sgd_with_one_over_k_is_the_incremental_sample_mean():
    """Sequential SGD, a_k = 1/k: w_{K+1} = mean of data[0 .. K-1] (cyclic past n), exactly."""
    config = sgd_mean_estimation.default_config()
    config.sampling = "sequential"
    state, _, ev = sgd_run(config, jax.random.key(0), 250)
    data = np.asarray(state.data, np.float64)
    expected = data[np.arange(250) % 100].mean(0)
    np.testing.assert_allclose(np.asarray(state.w), expected, atol=1e-5)
    # Random sampling (the book): equal to the mean of the samples actually drawn.
    config.sampling = "random"
    state, _, ev = sgd_run(config, jax.random.key(0), 250)
    assert float(ev["drawn_mean_error"]) < 1e-5
    assert int(state.drawn_count) == 250
    # 250 draws with replacement: ||w - sample mean|| ~ 5.8 * sqrt(2 / 250) = 0.5
    assert float(ev["sample_mean_error"]) < 1.5
    assert float(ev["abs_error"]) < 3.0  # from ||w_1 - E[X]|| = 70.7


def test_mbgd_matches_numpy_recursion():
    """MBGD m = 5, sequential batches, a_k = 1/k, w_1 = (50, 50): numpy loop."""
    config = sgd_mean_estimation.default_config()
    config.method, config.sampling = "mbgd", "sequential"
    state, metrics, _ = sgd_run(config, jax.random.key(3), 60)
    data = np.asarray(state.data, np.float64)
    w = np.array([50.0, 50.0])
    for k in range(1, 61):
        batch = data[(5 * (k - 1) + np.arange(5)) % 100]
        w = w - (1.0 / k) * (w - batch.mean(0))
    np.testing.assert_allclose(np.asarray(state.w), w, atol=1e-4)
    # with a_k = 1/k it is again the running mean of everything used
    np.testing.assert_allclose(np.asarray(state.w), data[np.arange(300) % 100].mean(0), atol=1e-4)


@pytest.mark.parametrize("step_scale,step_power", [(1.0, 0.0), (0.1, 0.0), (1.0, 1.0)])
def test_mbgd_with_full_batch_equals_bgd(step_scale, step_power):
    """MBGD with m = n and sequential batches uses every sample once per step: it is BGD.
    With a_k = 1 (or a_1 = 1) one step lands on the sample mean."""
    ws = {}
    for method in ("mbgd", "bgd"):
        config = sgd_mean_estimation.default_config()
        config.method, config.sampling, config.batch_size = method, "sequential", 100
        config.step_scale, config.step_power = step_scale, step_power
        state, _, ev = sgd_run(config, jax.random.key(5), 30)
        ws[method] = np.asarray(state.w)
    np.testing.assert_allclose(ws["mbgd"], ws["bgd"], atol=1e-5)
    data_mean = np.asarray(state.data, np.float64).mean(0)
    if step_scale == 1.0:
        np.testing.assert_allclose(ws["bgd"], data_mean, atol=1e-4)
        assert float(ev["sample_mean_error"]) < 1e-4
    else:  # w_{k+1} - xbar = (1 - a)^k (w_1 - xbar)
        np.testing.assert_allclose(ws["bgd"], data_mean + 0.9 ** 30 * (50.0 - data_mean),
                                   rtol=1e-4, atol=1e-4)


def test_bad_method_is_rejected():
    config = sgd_mean_estimation.default_config()
    config.method = "adam"
    with pytest.raises(ValueError, match="unknown method"):
        sgd_mean_estimation.init(jax.random.key(0), config, None)


# ---------------------------------------------------------------------- vmap / determinism
@pytest.mark.parametrize("algo", [robbins_monro, sgd_mean_estimation],
                         ids=lambda m: m.__name__.split(".")[-1])
def test_vmap_over_seeds_equals_loop_and_is_deterministic(algo):
    config = algo.default_config()
    if algo is robbins_monro:
        config.steps_per_update = 7
    keys = jax.random.split(jax.random.key(11), 3)

    def one(k):
        s = algo.init(k, config, None)
        s, m = jax.lax.scan(lambda s, _: algo.update(s, config, None), s, None, length=20)
        return s.w, m, algo.evaluate(s, None, config, None)

    batched = jax.jit(jax.vmap(one))(keys)
    single = jax.jit(one)
    for i, k in enumerate(keys):
        for a, b in zip(jax.tree.leaves(single(k)), jax.tree.leaves(batched)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[i]), rtol=1e-6, atol=1e-6)
    again = jax.jit(jax.vmap(one))(keys)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(batched)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(batched[0][0]), np.asarray(batched[0][1]))
