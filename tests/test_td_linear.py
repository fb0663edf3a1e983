"""TD-linear policy evaluation (book Ch. 8): features, the single update, the TD fixed point.

References: features written out by hand, the TD fixed point A w = b solved in numpy float64 from
the dense model (A = Phi^T D (I - gamma P_pi) Phi, b = Phi^T D r_pi, D = diag(d_pi) with d_pi the
stationary distribution of the uniform policy from an eigen-decomposition), and v_pi from a numpy
linear solve. Numbers measured when the tests were written are in the comments.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.tabular import td_linear
from algorithms.tabular.common import Task
from conftest import run_updates

GAMMA = 0.9


def jit_evaluate(algo, config, task):
    """evaluate as one compiled program (eager dispatch of its many small ops is slower)."""
    return jax.jit(lambda state: algo.evaluate(state, None, config, task))


def np_features(kind, order, h=5, w=5):
    """Features from the book's recipe, written independently of the module."""
    rows = []
    for s in range(h * w):
        y, x = (s // w) / (h - 1), (s % w) / (w - 1)
        if kind == "polynomial":
            rows.append([x ** i * y ** j for i in range(order + 1) for j in range(order + 1)
                         if i + j <= order])
        else:
            rows.append([np.cos(np.pi * (c1 * x + c2 * y))
                         for c1, c2 in itertools.product(range(order + 1), repeat=2)])
    return np.array(rows)


def np_uniform_model(task):
    p, r = (np.asarray(x, np.float64) for x in task.env.tabular_model(task.params))
    p_pi, r_pi = p.mean(axis=1), r.mean(axis=1)
    v_pi = np.linalg.solve(np.eye(len(r_pi)) - GAMMA * p_pi, r_pi)
    evals, evecs = np.linalg.eig(p_pi.T)
    d = np.real(evecs[:, np.argmin(np.abs(evals - 1.0))])
    return p_pi, r_pi, v_pi, d / d.sum()


def np_td_fixed_point(phi, p_pi, r_pi, d):
    a = phi.T @ np.diag(d) @ (np.eye(len(d)) - GAMMA * p_pi) @ phi
    b = phi.T @ np.diag(d) @ r_pi
    return np.linalg.solve(a, b)


def rmse(v, v_pi):
    return float(np.sqrt(np.mean((v - v_pi) ** 2)))


def test_features_match_the_book_recipe():
    phi = td_linear.feature_matrix("polynomial", 1, 5, 5)
    # cell 7 = (row 1, col 2): x = 2/4, y = 1/4 -> [1, x, y]
    np.testing.assert_allclose(phi[7], [1.0, 0.5, 0.25])
    phi2 = td_linear.feature_matrix("polynomial", 2, 5, 5)
    np.testing.assert_allclose(phi2[7], [1.0, 0.5, 0.25, 0.25, 0.125, 0.0625])
    assert td_linear.feature_matrix("polynomial", 3, 5, 5).shape == (25, 10)
    # c in {0,1}^2: 1, cos(pi y), cos(pi x), cos(pi (x + y))
    four = td_linear.feature_matrix("fourier", 1, 5, 5)
    np.testing.assert_allclose(four[7], [1.0, np.cos(np.pi / 4), 0.0, np.cos(0.75 * np.pi)],
                               atol=1e-12)
    for kind, order in [("polynomial", 2), ("polynomial", 3), ("fourier", 2)]:
        ours = td_linear.feature_matrix(kind, order, 5, 5)
        ref = np_features(kind, order)
        # same span (column order may differ): projections onto each other's columns agree
        proj = ours @ np.linalg.lstsq(ours, ref, rcond=None)[0]
        np.testing.assert_allclose(proj, ref, atol=1e-9)
        assert ours.shape == ref.shape


def test_single_td_linear_update_by_hand():
    w = jnp.array([1.0, -2.0, 0.5])
    phi_s, phi_n = jnp.array([1.0, 0.5, 0.25]), jnp.array([1.0, 0.75, 0.25])
    # v(s) = 1 - 1 + 0.125 = 0.125; v(s') = 1 - 1.5 + 0.125 = -0.375
    # delta = -1 + 0.9 * (-0.375) - 0.125 = -1.4625; w += 0.1 * delta * phi(s)
    new, delta = td_linear.td_linear_update(w, phi_s, -1.0, phi_n, False, 0.1, GAMMA)
    np.testing.assert_allclose(delta, -1.4625, atol=1e-6)
    np.testing.assert_allclose(new, [1.0 - 0.14625, -2.0 - 0.073125, 0.5 - 0.0365625], atol=1e-6)
    new, delta = td_linear.td_linear_update(w, phi_s, -1.0, phi_n, True, 0.1, GAMMA)
    np.testing.assert_allclose(delta, -1.125, atol=1e-6)  # terminated: no bootstrap


def test_evaluate_references_match_numpy(book_task):
    """best_rmse (unweighted least squares) and the TD fixed point of `evaluate` vs numpy."""
    p_pi, r_pi, v_pi, d = np_uniform_model(book_task)
    config = td_linear.default_config()
    config.features, config.order = "fourier", 2
    state = td_linear.init(jax.random.key(0), config, book_task)
    ev = jit_evaluate(td_linear, config, book_task)(state)
    phi = np_features("fourier", 2)
    w_ls = np.linalg.lstsq(phi, v_pi, rcond=None)[0]
    w_td = np_td_fixed_point(phi, p_pi, r_pi, d)
    np.testing.assert_allclose(ev["best_rmse"], rmse(phi @ w_ls, v_pi), atol=1e-4)
    np.testing.assert_allclose(ev["td_fixed_point_rmse"], rmse(phi @ w_td, v_pi), atol=1e-4)
    np.testing.assert_allclose(ev["rmse"], rmse(0.0 * v_pi, v_pi), atol=1e-4)  # w = 0
    # The best fit is at most as far from v_pi as the TD fixed point.
    assert float(ev["best_rmse"]) <= float(ev["td_fixed_point_rmse"]) + 1e-6


def test_best_rmse_decreases_with_order(book_task):
    """Nested feature sets: best achievable RMSE is non-increasing and reaches 0 for a full basis
    (Fourier order 4 on 5x5 cells = 25 independent cosines)."""
    _, _, v_pi, _ = np_uniform_model(book_task)
    for kind in ("polynomial", "fourier"):
        best = []
        for k in range(5):
            phi = td_linear.feature_matrix(kind, k, 5, 5)
            best.append(rmse(phi @ np.linalg.lstsq(phi, v_pi, rcond=None)[0], v_pi))
        assert all(b1 <= b0 + 1e-9 for b0, b1 in zip(best, best[1:])), best
    full = td_linear.feature_matrix("fourier", 4, 5, 5)
    assert np.linalg.matrix_rank(full) == 25


@pytest.fixture(scope="module")
def long_episode_task(book_task):
    """One long episode (no truncation inside the run): states follow d_pi as the theory needs."""
    return Task(book_task.env, book_task.params.replace(max_steps_in_episode=2 ** 30))


@pytest.mark.parametrize("kind, order, tol", [
    # The uniform random walk mixes slowly, so the sample path wanders around w_TD for a long time.
    # Measured max_s |v_hat - v_TD| after 3e5 steps, 4 seeds: 0.04-0.07
    ("polynomial", 1, 0.15),
    ("fourier", 2, 0.25),  # measured 0.09-0.15 (values are around -3.5)
])
def test_td_linear_approaches_td_fixed_point(long_episode_task, kind, order, tol):
    task = long_episode_task
    p_pi, r_pi, v_pi, d = np_uniform_model(task)
    phi = np_features(kind, order)
    config = td_linear.default_config()
    config.features, config.order = kind, order
    config.step_size, config.alpha, config.alpha_tau = "decaying", 0.005, 2e4
    config.num_steps = 500
    state, _ = run_updates(td_linear, config, task, jax.random.key(0), 600)
    v_hat = np.asarray(td_linear.solution(state, config, task)[0], np.float64)
    v_td = phi @ np_td_fixed_point(phi, p_pi, r_pi, d)  # compare values: column order free
    assert np.max(np.abs(v_hat - v_td)) < tol, np.max(np.abs(v_hat - v_td))
    # Learned RMSE close to the fixed point's (which is >= the best achievable RMSE).
    assert abs(rmse(v_hat, v_pi) - rmse(v_td, v_pi)) < 0.05
    ev = jit_evaluate(td_linear, config, task)(state)
    assert float(ev["weight_error_td"]) < tol


def test_higher_order_features_give_lower_rmse(book_task):
    """Book Ch. 8 example (uniform policy, default episodes with random restarts): Fourier order 3
    fits much better than order 1. 5e4 steps, alpha 0.002; measured learned RMSE over 3 seeds:
    0.21-0.22 (order 1; best possible 0.206) vs 0.12-0.14 (order 3; best possible 0.093)."""
    results = {}
    for order in (1, 3):
        config = td_linear.default_config()
        config.features, config.order = "fourier", order
        config.alpha, config.num_steps = 0.002, 500
        state, _ = run_updates(td_linear, config, book_task, jax.random.key(1), 100)
        results[order] = jit_evaluate(td_linear, config, book_task)(state)
    assert float(results[3]["rmse"]) < float(results[1]["rmse"]) - 0.05, results
    assert float(results[3]["best_rmse"]) < float(results[1]["best_rmse"])


def test_vmap_over_seeds_equals_loop_and_determinism(book_task):
    config = td_linear.default_config()
    config.num_steps = 50

    def run(key):
        state = td_linear.init(key, config, book_task)
        return jax.lax.scan(lambda s, _: td_linear.update(s, config, book_task), state, None,
                            length=3)[0]

    keys = jax.random.split(jax.random.key(5), 3)
    batched = jax.jit(jax.vmap(run))(keys)
    single = jax.jit(run)
    for i, key in enumerate(keys):
        np.testing.assert_allclose(single(key).w, batched.w[i], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(single(keys[0]).w, single(keys[0]).w)
    assert not np.array_equal(batched.w[0], batched.w[1])


def test_unknown_features_raise(book_task):
    config = td_linear.default_config()
    config.features = "tile"
    with pytest.raises(ValueError, match="polynomial, fourier"):
        td_linear.init(jax.random.key(0), config, book_task)
    config = td_linear.default_config()
    config.policy = "random"
    with pytest.raises(ValueError, match="uniform, optimal"):
        td_linear.init(jax.random.key(0), config, book_task)
