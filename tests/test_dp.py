"""Dynamic programming (book Ch. 2 and Ch. 4): policy evaluation, value iteration, policy
iteration and truncated policy iteration, checked against the book's numbers and against
independent numpy references (dense linear solve for v_pi, dense value iteration for v*).
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.tabular import common
from algorithms.tabular import epsilon_greedy_policy_iteration as egpi
from algorithms.tabular import policy_evaluation as pe
from algorithms.tabular import policy_iteration as pi_algo
from algorithms.tabular import truncated_policy_iteration as tpi
from algorithms.tabular import value_iteration as vi
from envs.tabular import random_mdp
from conftest import run_updates

GAMMA = 0.9
# The book's optimal state values of its 5x5 grid (gamma 0.9), rows top to bottom.
BOOK_V_STAR = np.array([
    [5.832, 5.580, 6.200, 6.480, 5.832],
    [6.480, 7.200, 8.000, 7.200, 6.480],
    [7.200, 8.000, 10.000, 8.000, 7.200],
    [8.000, 10.000, 10.000, 10.000, 8.000],
    [7.200, 9.000, 10.000, 9.000, 8.100],
])


# ----------------------------------------------------------------------------- numpy references
def np_policy_value(p, r, policy, gamma=GAMMA):
    """v_pi = (I - gamma P_pi)^-1 r_pi from dense P[s, a, s'], R[s, a] (float64 numpy)."""
    p, r, policy = (np.asarray(x, np.float64) for x in (p, r, policy))
    p_pi = np.einsum("sa,sat->st", policy, p)
    r_pi = np.einsum("sa,sa->s", policy, r)
    return np.linalg.solve(np.eye(len(r)) - gamma * p_pi, r_pi)


def np_optimal_values(p, r, gamma=GAMMA, tol=1e-14):
    """v* by a plain dense value-iteration loop (float64 numpy)."""
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    v = np.zeros(r.shape[0])
    for _ in range(10_000):
        v_new = (r + gamma * p @ v).max(axis=1)  # p @ v: [S, A]
        if np.max(np.abs(v_new - v)) < tol:
            return v_new
        v = v_new
    raise AssertionError("reference value iteration did not converge")


class ModelEnv:
    """A stand-in env that only offers an exact model: its params *are* the TabularMDP, so one
    compiled program serves every random MDP of the same shape."""

    def tabular_mdp(self, params):
        return params


MODEL_ENV = ModelEnv()


def random_task(seed, num_states=12, num_actions=3):
    """(task, dense P, R) of a random MDP; call inside jax.enable_x64(True) for float64."""
    mdp = random_mdp(jax.random.key(seed), num_states, num_actions)
    # random_mdp wraps a dense P: outcome k of (s, a) is next state k, probability P[s, a, k].
    np.testing.assert_array_equal(np.asarray(mdp.next_states[0, 0]), np.arange(num_states))
    return common.Task(MODEL_ENV, mdp), np.asarray(mdp.probs), np.asarray(mdp.rewards)


def cfg(algo, **kw):
    c = algo.default_config()
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@functools.lru_cache(maxsize=None)
def _runner(algo, overrides, n, env):
    """Jitted (key, env params) -> (states after updates 1..n stacked, metrics [n]), compiled
    once per (algorithm, config, n, env) and reused across seeds and MDPs."""
    config = cfg(algo, **dict(overrides))

    @jax.jit
    def go(key, params):
        task = common.Task(env, params)
        state = algo.init(key, config, task)

        def body(s, _):
            s, m = algo.update(s, config, task)
            return s, (s, m)

        return jax.lax.scan(body, state, None, length=n)[1]

    return go


def run_states(algo, task, n, key=None, **overrides):
    """init + n updates; returns (states stacked over updates 1..n, metrics [n])."""
    key = jax.random.key(0) if key is None else key
    return _runner(algo, tuple(sorted(overrides.items())), n, task.env)(key, task.params)


def run_final(algo, task, n, key=None, **overrides):
    """(state after n updates, metrics [n])."""
    states, metrics = run_states(algo, task, n, key, **overrides)
    return jax.tree.map(lambda x: x[-1], states), metrics


@functools.lru_cache(maxsize=None)
def _evaluator(algo, overrides, env):
    config = cfg(algo, **dict(overrides))
    return jax.jit(lambda state, key, params: algo.evaluate(state, key, config,
                                                            common.Task(env, params)))


def evaluate(algo, state, task, **overrides):
    return _evaluator(algo, tuple(sorted(overrides.items())), task.env)(
        state, jax.random.key(1), task.params)


@pytest.fixture(scope="module")
def book_model(book_task):
    p, r = book_task.env.tabular_model(book_task.params)
    return np.asarray(p, np.float64), np.asarray(r, np.float64)


# ----------------------------------------------------------------------------- the book's numbers
# (name, module, config overrides, updates): enough updates for ||v - v*|| << 1e-3
# (value iteration: 10 * 0.9^150 ~ 1e-6).
BOOK_SOLVERS = [
    ("value_iteration", vi, {}, 150),
    ("policy_iteration", pi_algo, {}, 10),
    ("truncated_policy_iteration", tpi, {"eval_sweeps": 5}, 60),
    ("policy_evaluation", pe, {"method": "closed_form", "policy": "optimal"}, 1),
]


@pytest.mark.parametrize("name,algo,overrides,n", BOOK_SOLVERS, ids=[s[0] for s in BOOK_SOLVERS])
def test_book_optimal_values(book_task, book_model, name, algo, overrides, n):
    state, _ = run_final(algo, book_task, n, **overrides)
    values, policy = algo.solution(state, cfg(algo, **overrides), book_task)
    # The book prints 3 decimals: tolerance 1e-3 (float32 run).
    np.testing.assert_allclose(np.asarray(values).reshape(5, 5), BOOK_V_STAR, atol=1e-3)
    # Optimal policies have ties, so compare by exact value: v_pi of the returned policy,
    # solved in numpy float64, equals v* (numpy value iteration) to 1e-4.
    p, r = book_model
    v_star = np_optimal_values(p, r)
    np.testing.assert_allclose(v_star.reshape(5, 5), BOOK_V_STAR, atol=1e-3)
    np.testing.assert_allclose(np_policy_value(p, r, policy), v_star, atol=1e-4)
    # The policy metrics of evaluate agree: optimality gap ~ 0.
    metrics = evaluate(algo, state, book_task, **overrides)
    assert abs(float(metrics["optimality_gap"])) < 1e-4
    np.testing.assert_allclose(float(metrics["policy_value"]), v_star.mean(), atol=1e-4)


def test_conftest_driver_agrees(book_task):
    """The shared conftest driver (un-jitted init) gives the same policy iteration result."""
    state, _ = run_updates(pi_algo, cfg(pi_algo), book_task, jax.random.key(0), 10)
    np.testing.assert_allclose(np.asarray(state.values).reshape(5, 5), BOOK_V_STAR, atol=1e-3)


# ----------------------------------------------------------------------------- random MDPs, float64
SEEDS = (0, 1, 2)
DP_SOLVERS = {
    # 10 * 0.9^400 ~ 5e-18: value iteration fully converged.
    "vi": (vi, {}, 400),
    "pi": (pi_algo, {}, 30),
    "tpi": (tpi, {"eval_sweeps": 5}, 150),
    "pe": (pe, {"method": "closed_form", "policy": "optimal"}, 1),
}


@pytest.mark.parametrize("seed", SEEDS)
def test_solvers_agree_on_random_mdps_float64(seed):
    """All DP solvers give v* (numpy value iteration) and optimal policies to 1e-8 in float64."""
    with jax.enable_x64(True):
        task, p, r = random_task(seed)
        assert task.params.probs.dtype == jnp.float64
        v_star = np_optimal_values(p, r)
        for name, (algo, overrides, n) in DP_SOLVERS.items():
            state, _ = run_final(algo, task, n, **overrides)
            values, policy = algo.solution(state, cfg(algo, **overrides), task)
            assert values.dtype == jnp.float64, name
            np.testing.assert_allclose(np.asarray(values), v_star, rtol=0, atol=1e-8, err_msg=name)
            np.testing.assert_allclose(np_policy_value(p, r, policy), v_star, rtol=0, atol=1e-8,
                                       err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
def test_policy_evaluation_uniform_random_mdp_float64(seed):
    """Closed form and (converged) iterative evaluation of the uniform policy = numpy solve."""
    with jax.enable_x64(True):
        task, p, r = random_task(seed)
        v_ref = np_policy_value(p, r, np.full(r.shape, 1.0 / r.shape[1]))
        for method, n in (("closed_form", 1), ("iterative", 400)):
            state, _ = run_final(pe, task, n, method=method, policy="uniform")
            np.testing.assert_allclose(np.asarray(state.values), v_ref, rtol=0, atol=1e-8,
                                       err_msg=method)
            err = evaluate(pe, state, task, method=method, policy="uniform")["value_error"]
            assert float(err) < 1e-8, method


@pytest.mark.parametrize("task_name", ["book", "random"])
def test_iterative_evaluation_contracts_to_closed_form(book_task, task_name):
    """||v_k - v_pi||_inf <= gamma^k ||v_0 - v_pi||_inf (v_0 = 0), float64, every k <= 60."""
    with jax.enable_x64(True):
        task = book_task if task_name == "book" else random_task(5)[0]
        n = 60
        closed, _ = run_final(pe, task, 1, method="closed_form", policy="uniform")
        v_pi = np.asarray(closed.values)
        states, metrics = run_states(pe, task, n, method="iterative", policy="uniform")
        errors = np.max(np.abs(np.asarray(states.values) - v_pi), axis=1)  # k = 1..n
        bound = GAMMA ** np.arange(1, n + 1) * np.max(np.abs(v_pi))
        assert np.all(errors <= bound + 1e-12), (errors, bound)
        assert errors[-1] < 1e-2 * errors[0]
        # evaluate's value_error is this sup-norm error.
        last = jax.tree.map(lambda x: x[-1], states)
        err = evaluate(pe, last, task, method="iterative", policy="uniform")["value_error"]
        np.testing.assert_allclose(float(err), errors[-1], rtol=1e-6, atol=1e-12)
        # The residual ||v_k - v_{k-1}|| also contracts by gamma each sweep.
        res = np.asarray(metrics["bellman_residual"])
        assert np.all(res[1:] <= GAMMA * res[:-1] + 1e-12)


def test_policy_evaluation_uniform_book_matches_numpy(book_task, book_model):
    """Ch. 2: values of the uniform random policy on the book grid (float32, 1e-4)."""
    p, r = book_model
    v_ref = np_policy_value(p, r, np.full(r.shape, 0.2))
    state, _ = run_final(pe, book_task, 2, method="closed_form", policy="uniform")
    np.testing.assert_allclose(np.asarray(state.values), v_ref, atol=1e-4)
    np.testing.assert_allclose(np.asarray(state.policy), 0.2)


# ----------------------------------------------------------------------------- policy iteration
@pytest.mark.parametrize("task_name", ["book", "random0", "random1"])
def test_policy_iteration_finite_and_monotone(book_task, task_name):
    with jax.enable_x64(True):
        if task_name == "book":
            task = book_task
            p, r = (np.asarray(x) for x in book_task.env.tabular_model(book_task.params))
        else:
            task, p, r = random_task(int(task_name[-1]) + 10)
        n = 15
        states, metrics = run_states(pi_algo, task, n)
        values = np.asarray(states.values)  # [n, S] = v_{pi_1} .. v_{pi_n}
        # Every stored value is the exact value of the stored policy.
        for k in (0, 1, n - 1):
            np.testing.assert_allclose(values[k], np_policy_value(p, r, states.policy[k]),
                                       atol=1e-10)
        # Improvement lemma: v_{pi_{k+1}} >= v_{pi_k} element-wise (rounding slack 1e-10).
        assert np.all(np.diff(values, axis=0) >= -1e-10)
        # Finite convergence: the greedy policy stops changing after a few iterations
        # (measured: 5 updates on the book grid) and then the values equal v*.
        changes = np.asarray(metrics["policy_changes"])
        converged = int(np.argmax(changes == 0))
        assert changes[converged] == 0 and converged <= 8, changes
        assert np.all(changes[converged:] == 0)
        np.testing.assert_allclose(values[converged], np_optimal_values(p, r), atol=1e-8)
        assert np.all(np.asarray(metrics["bellman_residual"])[converged + 1:] < 1e-8)


# ----------------------------------------------------------------------------- truncated PI
def test_truncated_pi_one_sweep_is_value_iteration(book_task):
    """eval_sweeps = 1 reproduces value iteration update by update (Ch. 4.3): values
    and greedy policies, bit for bit in float64 on the book grid (which has exact ties)."""
    with jax.enable_x64(True):
        n = 40
        s_t, m_t = run_states(tpi, book_task, n, eval_sweeps=1)
        s_v, m_v = run_states(vi, book_task, n)
        np.testing.assert_array_equal(np.asarray(s_t.values), np.asarray(s_v.values))
        np.testing.assert_array_equal(np.asarray(s_t.policy), np.asarray(s_v.policy))
        np.testing.assert_array_equal(np.asarray(m_t["bellman_residual"]),
                                      np.asarray(m_v["bellman_residual"]))


@pytest.mark.parametrize("seed", (20, 21))
def test_truncated_pi_many_sweeps_is_policy_iteration(seed):
    """eval_sweeps -> infinity reproduces policy iteration update by update (float64):
    with 400 sweeps the truncation error is <= 0.9^400 * ||v|| ~ 1e-17."""
    with jax.enable_x64(True):
        task = random_task(seed)[0]
        n = 6
        s_t, _ = run_states(tpi, task, n, eval_sweeps=400)
        s_p, _ = run_states(pi_algo, task, n)
        np.testing.assert_allclose(np.asarray(s_t.values), np.asarray(s_p.values), rtol=0,
                                   atol=1e-10)
        np.testing.assert_array_equal(np.asarray(s_t.policy), np.asarray(s_p.policy))


def test_truncated_pi_interpolates(book_task):
    """More evaluation sweeps -> fewer iterations to reach ||v_k - v*|| < 2e-3 (Ch. 4.3)."""
    v_star = BOOK_V_STAR.ravel()
    iters = {}
    for j in (1, 3, 10):
        states, _ = run_states(tpi, book_task, 120, eval_sweeps=j)
        err = np.max(np.abs(np.asarray(states.values) - v_star), axis=1)
        iters[j] = int(np.argmax(err < 2e-3)) + 1
        assert err[-1] < 2e-3, j
    assert iters[1] > iters[3] > iters[10], iters


# ----------------------------------------------------------------------------- protocol
ALL = [
    ("value_iteration", vi, {}),
    ("policy_iteration", pi_algo, {}),
    ("truncated_policy_iteration", tpi, {"eval_sweeps": 2}),
    ("pe_iterative", pe, {"method": "iterative", "policy": "uniform"}),
    ("pe_closed_form", pe, {"method": "closed_form", "policy": "optimal"}),
    ("pe_text_epsilon", pe, {"method": "closed_form", "epsilon": 0.3,
                             "policy": ">>>>v/^^>>v/^<v>v/^>o<v/^>^<<"}),
    ("epsilon_greedy_pi", egpi, {"epsilon": 0.2}),
]


@pytest.mark.parametrize("name,algo,overrides", ALL, ids=[a[0] for a in ALL])
def test_vmap_equals_loop_and_deterministic(book_task, name, algo, overrides):
    config = cfg(algo, **overrides)
    keys = jax.random.split(jax.random.key(3), 3)
    n = 4

    @jax.jit
    def run_vmapped(keys):
        state = jax.vmap(lambda k: algo.init(k, config, book_task))(keys)
        step = jax.vmap(lambda s: algo.update(s, config, book_task))
        return jax.lax.scan(lambda s, _: step(s), state, None, length=n)

    state_v, metrics_v = run_vmapped(keys)
    for i in range(len(keys)):
        state_i, metrics_i = run_final(algo, book_task, n, keys[i], **overrides)
        for a, b in zip(jax.tree.leaves(state_v), jax.tree.leaves(state_i)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-6, atol=1e-6)
        for k in metrics_i:
            np.testing.assert_allclose(np.asarray(metrics_v[k][:, i]), np.asarray(metrics_i[k]),
                                       rtol=1e-6, atol=1e-6)
    # Fixed seed -> identical results.
    state_again, metrics_again = run_vmapped(keys)
    for a, b in zip(jax.tree.leaves((state_v, metrics_v)),
                    jax.tree.leaves((state_again, metrics_again))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert state_v.step.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(state_v.step), n)
    # Metrics are scalars per update.
    assert all(v.shape == (n, len(keys)) for v in metrics_v.values())


def test_policy_evaluation_bad_config_raises(book_task):
    with pytest.raises(ValueError, match="closed_form, iterative"):
        pe.init(jax.random.key(0), cfg(pe, method="monte_carlo"), book_task)
    with pytest.raises(ValueError, match="uniform, optimal"):
        pe.init(jax.random.key(0), cfg(pe, policy="greedy"), book_task)


def test_truncated_pi_bad_sweeps_raises(book_task):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="eval_sweeps"):
            tpi.init(jax.random.key(0), cfg(tpi, eval_sweeps=bad), book_task)


# ----------------------------------------------------------------------------- given policies
GOOD = ">>>>v/^^>>v/^<v>v/^>o<v/^>^<<"  # Fig. 2.7(a)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_text_policy_and_its_epsilon_greedy_version(book_task, book_model, epsilon):
    """policy_evaluation of arrows per cell (softened by epsilon) = numpy's solve of the same
    policy written as action indices; closed form and converged sweeps agree (float64)."""
    p, r = book_model
    actions = [">^v<o".index(c) for c in GOOD.replace("/", "")]
    moves = [1, 0, 2, 3, 4]  # '>' right, '^' up, 'v' down, '<' left, 'o' stay
    policy = np.eye(5)[[moves[a] for a in actions]]
    v_ref = np_policy_value(p, r, (1 - epsilon) * policy + epsilon / 5)
    with jax.enable_x64(True):
        for method, n in (("closed_form", 1), ("iterative", 400)):
            state, _ = run_final(pe, book_task, n, method=method, policy=GOOD, epsilon=epsilon)
            np.testing.assert_allclose(np.asarray(state.values), v_ref, atol=1e-9)
        indices = ",".join(str(moves[a]) for a in actions)
        state, _ = run_final(pe, book_task, 1, method="closed_form", policy=indices,
                             epsilon=epsilon)
        np.testing.assert_allclose(np.asarray(state.values), v_ref, atol=1e-9)


def test_npy_policies_probabilities_and_actions(book_task, book_model, tmp_path):
    """A .npy of probabilities [S, A] or of actions [S] is evaluated as written."""
    p, r = book_model
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), 25)
    path = str(tmp_path / "pi.npy")
    np.save(path, probs)
    state, _ = run_final(pe, book_task, 1, method="closed_form", policy=path)
    np.testing.assert_allclose(np.asarray(state.values), np_policy_value(p, r, probs), atol=1e-4)
    actions = rng.integers(0, 5, 25)
    path = str(tmp_path / "actions.npy")
    np.save(path, actions)
    state, _ = run_final(pe, book_task, 1, method="closed_form", policy=path, epsilon=0.2)
    np.testing.assert_allclose(np.asarray(state.values),
                               np_policy_value(p, r, 0.8 * np.eye(5)[actions] + 0.04), atol=1e-4)


@pytest.mark.parametrize("policy,match", [
    ("0,1", "2 action indices for 25 states"),
    (",".join(["7"] * 25), "action indices must be in 0..4"),
    (">>>>v/^^>>v", "2 rows"),
])
def test_bad_given_policies_raise(book_task, policy, match):
    with pytest.raises(ValueError, match=match):
        pe.init(jax.random.key(0), cfg(pe, policy=policy), book_task)


def test_bad_npy_policies_raise(book_task, tmp_path):
    for name, arr, match in [("rows.npy", np.full((25, 5), 0.3), "summing to 1"),
                             ("shape.npy", np.full((5, 25), 0.2), "expected probabilities"),
                             ("neg.npy", np.tile([1.5, -0.5, 0, 0, 0], (25, 1)), ">= 0")]:
        np.save(tmp_path / name, arr)
        with pytest.raises(ValueError, match=match):
            pe.init(jax.random.key(0), cfg(pe, policy=str(tmp_path / name)), book_task)


# ----------------------------------------------------------------------------- float resolution
@pytest.mark.parametrize("task_name", ["book", "random0", "random1", "random2"])
def test_gap_resolution_covers_float32_rounding(book_task, task_name):
    """An optimal policy's float32 optimality_gap lies within +-gap_resolution, for gamma up to
    0.99; in float64 the resolution is about 5e8 times smaller."""
    for gamma in (0.5, 0.9, 0.99):
        if task_name == "book":
            task = book_task
        else:
            task = random_task(int(task_name[-1]) + 30, num_states=30, num_actions=4)[0]
        state, _ = run_final(pe, task, 1, method="closed_form", policy="optimal", gamma=gamma)
        m = evaluate(pe, state, task, method="closed_form", policy="optimal", gamma=gamma)
        assert abs(float(m["optimality_gap"])) <= float(m["gap_resolution"]), (gamma, m)
    with jax.enable_x64(True):
        state, _ = run_final(vi, book_task, 400)
        m = evaluate(vi, state, book_task)
        assert float(m["gap_resolution"]) < 1e-12
        assert abs(float(m["optimality_gap"])) <= float(m["gap_resolution"])


@pytest.mark.parametrize("task_name", ["book", "random"])
def test_value_error_bound_holds_in_float32(book_task, book_model, task_name):
    """value_iteration's value_error_bound is >= ||v_k - v*|| (float64 reference) at every
    update, also after the float32 sweeps stop at a rounding fixed point (residual 0)."""
    if task_name == "book":
        task, (p, r) = book_task, book_model
    else:
        task, p, r = random_task(40, num_states=30, num_actions=4)
    v_star = np_optimal_values(p, r)
    states, metrics = run_states(vi, task, 300)
    errors = np.max(np.abs(np.asarray(states.values, np.float64) - v_star), axis=1)
    bound = np.asarray(metrics["value_error_bound"], np.float64)
    assert np.all(errors <= bound), np.max(errors - bound)
    if task_name == "book":  # the case: residual 0 while v_k != v*
        assert float(metrics["bellman_residual"][-1]) == 0.0 and errors[-1] > 0


def test_policy_evaluation_error_bound_holds(book_task, book_model):
    """Iterative evaluation: value_error_bound >= ||v_k - v_pi|| at every sweep (float32)."""
    p, r = book_model
    v_pi = np_policy_value(p, r, np.full((25, 5), 0.2))
    states, metrics = run_states(pe, book_task, 100, method="iterative", policy="uniform")
    errors = np.max(np.abs(np.asarray(states.values, np.float64) - v_pi), axis=1)
    assert np.all(errors <= np.asarray(metrics["value_error_bound"]))


# ----------------------------------------------------------------------------- best eps-greedy
def test_epsilon_zero_is_policy_iteration(book_task):
    """epsilon = 0 performs policy iteration's operations: identical states and metrics."""
    s_e, m_e = run_states(egpi, book_task, 8, epsilon=0.0)
    s_p, m_p = run_states(pi_algo, book_task, 8)
    for a, b in zip(jax.tree.leaves(s_e), jax.tree.leaves(s_p)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for k in m_p:
        np.testing.assert_array_equal(np.asarray(m_e[k]), np.asarray(m_p[k]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("epsilon", [0.1, 0.5])
def test_best_epsilon_greedy_policy_by_brute_force(seed, epsilon):
    """On small random MDPs (5 states, 3 actions: 243 epsilon-greedy policies) the solver's
    values equal the element-wise maximum of v_pi over all epsilon-greedy policies, and its
    values improve monotonically (float64)."""
    with jax.enable_x64(True):
        task, p, r = random_task(seed + 50, num_states=5, num_actions=3)
        best = np.full(5, -np.inf)
        for actions in itertools.product(range(3), repeat=5):
            pi = (1 - epsilon) * np.eye(3)[list(actions)] + epsilon / 3
            best = np.maximum(best, np_policy_value(p, r, pi))
        states, metrics = run_states(egpi, task, 12, epsilon=epsilon)
        values = np.asarray(states.values)
        np.testing.assert_allclose(values[-1], best, atol=1e-10)
        assert np.all(np.diff(values, axis=0) >= -1e-10)
        assert float(metrics["bellman_residual"][-1]) < 1e-10
        last = jax.tree.map(lambda x: x[-1], states)
        m = evaluate(egpi, last, task, epsilon=epsilon)
        assert float(m["optimality_gap"]) > 0  # exploring costs value


def test_best_epsilon_greedy_leaves_the_target_when_exploring_is_costly(book_task):
    """The book's Fig. 5.7 point: with r_forbidden = -10 and eps = 0.5 the best epsilon-greedy
    policy does not stay at the target; with eps = 0.1 it does (Ch. 5 reward rule)."""
    env, params = envs.make("gridworld", bump_in_forbidden="boundary+forbidden",
                            r_forbidden=-10.0)
    task = common.Task(env, params)
    target = int(np.flatnonzero(env.target)[0])
    for epsilon, stays in ((0.1, True), (0.5, False)):
        state, _ = run_final(egpi, task, 20, epsilon=epsilon)
        assert (int(np.argmax(np.asarray(state.policy)[target])) == 4) == stays, epsilon
