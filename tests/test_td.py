"""Temporal-difference learning (book Ch. 7): TD(0), Sarsa, expected Sarsa, n-step Sarsa,
Q-learning (on- and off-policy).

References are independent of the code under test: single updates are checked against hand-computed
numbers / a numpy formula, convergence against the exact v_pi from a numpy linear solve on the dense
model, and against the book's optimal values (Ch. 3, 5x5 grid, gamma 0.9).
Numbers measured when the tests were written are in the comments next to each tolerance.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.tabular import (expected_sarsa, n_step_sarsa, q_learning,
                                q_learning_off_policy, sarsa, td_zero)
from algorithms.tabular.common import Task

GAMMA = 0.9


def jit_evaluate(algo, config, task):
    """evaluate as one compiled program (eager dispatch of its many small ops is slower)."""
    return jax.jit(lambda state: algo.evaluate(state, None, config, task))
# Book grid (5x5, row-major states): forbidden cells and target, written out by hand.
FORBIDDEN = {6, 7, 12, 16, 18, 21}
TARGET = 17
BOOK_V_STAR = np.array([
    5.832, 5.580, 6.200, 6.480, 5.832, 6.480, 7.200, 8.000, 7.200, 6.480,
    7.200, 8.000, 10.000, 8.000, 7.200, 8.000, 10.000, 10.000, 10.000, 8.000,
    7.200, 9.000, 10.000, 9.000, 8.100])


def np_v_pi_uniform(task):
    """Exact v_pi of the uniform policy: (I - gamma P_pi) v = r_pi in numpy float64."""
    p, r = (np.asarray(x, np.float64) for x in task.env.tabular_model(task.params))
    p_pi, r_pi = p.mean(axis=1), r.mean(axis=1)
    return np.linalg.solve(np.eye(len(r_pi)) - GAMMA * p_pi, r_pi)


def with_time_limit(task, steps):
    return Task(task.env, task.params.replace(max_steps_in_episode=steps))


_RUNNERS = {}


def runner(algo, config, env):
    """(run, vmapped run) for one (algorithm, config, env), jitted once.

    run(params, key, num_updates) -> state after init + num_updates updates. Env params (the time
    limit) and the number of updates are traced, so tests that differ only in those share one
    compilation (compiling the env step dominates the run time of these tests).
    """
    cache_key = (algo.__name__, config.to_json(), id(env))
    if cache_key not in _RUNNERS:  # the closure keeps env alive, so its id stays unique
        def run(params, key, num_updates):
            task = Task(env, params)
            state = algo.init(key, config, task)
            return jax.lax.fori_loop(0, num_updates,
                                     lambda _, st: algo.update(st, config, task)[0], state)
        _RUNNERS[cache_key] = (jax.jit(run), jax.jit(jax.vmap(run, in_axes=(None, 0, None))))
    return _RUNNERS[cache_key]


def run_algo(algo, config, task, key, num_updates):
    return runner(algo, config, task.env)[0](task.params, key, num_updates)


def placed(state, s, **fields):
    """The same algorithm state with the env (and obs) moved to cell s at time 0."""
    env_state = state.env_state.replace(pos=jnp.int32(s), time=jnp.int32(0))
    return state.replace(obs=jnp.int32(s), env_state=env_state, **fields)


def jitted_update(algo, config, task):
    return jax.jit(lambda st: algo.update(st, config, task))


# Cell 11 = (row 2, col 1) 0-based: up 6 (forbidden), right 12 (forbidden), down 16 (forbidden),
# left 10 (free), stay 11 (free). Every action leads to a different cell, so (a, r) follow from s'.
CELL = 11
MOVE_FROM_CELL = {6: (0, -1.0), 12: (1, -1.0), 16: (2, -1.0), 10: (3, 0.0), 11: (4, 0.0)}
Q0 = np.arange(125, dtype=np.float32).reshape(25, 5) / 10.0  # q[11, 1] = 5.6, q[12] = 6.0..6.4


# ---------------------------------------------------------------------------- single updates
def test_td_update_pure_hand_numbers():
    v = jnp.array([0.0, 2.0, -1.0, 4.0])
    # v(3) <- 4 - 0.1 (4 - (-1 + 0.9 * 2)) = 4 - 0.1 * 3.2 = 3.68
    new, delta = td_zero.td_update(v, 3, -1.0, 1, False, 0.1, GAMMA)
    np.testing.assert_allclose(new, [0.0, 2.0, -1.0, 3.68], atol=1e-6)
    np.testing.assert_allclose(delta, 3.2, atol=1e-6)
    # terminated: no bootstrap: 4 - 0.1 (4 - (-1)) = 3.5
    new, _ = td_zero.td_update(v, 3, -1.0, 1, True, 0.1, GAMMA)
    np.testing.assert_allclose(new[3], 3.5, atol=1e-6)


def test_td_zero_single_env_step(book_task):
    config = td_zero.default_config()
    config.num_steps, config.step_size, config.alpha = 1, "constant", 0.1
    v0 = np.linspace(-2.0, 3.0, 25).astype(np.float32)
    step = jitted_update(td_zero, config, book_task)
    for seed in range(3):
        state = placed(td_zero.init(jax.random.key(seed), config, book_task), CELL,
                       values=jnp.asarray(v0))
        new, _ = step(state)
        s_next = int(new.obs)
        _, r = MOVE_FROM_CELL[s_next]
        expected = v0.astype(np.float64).copy()
        expected[CELL] = v0[CELL] - 0.1 * (v0[CELL] - (r + GAMMA * v0[s_next]))
        np.testing.assert_allclose(new.values, expected, atol=1e-5)
        assert int(new.visits[CELL]) == 1 and int(new.visits.sum()) == 1


def test_one_sarsa_step_in_the_env(book_task):
    """From cell 11 take 'right' into forbidden cell 12: r = -1, s' = 12; q(11, right) = 5.6."""
    config = sarsa.default_config()
    config.num_steps = 1
    state = placed(sarsa.init(jax.random.key(0), config, book_task), CELL,
                   q=jnp.asarray(Q0), action=jnp.int32(1))
    new, metrics = jitted_update(sarsa, config, book_task)(state)
    assert int(new.obs) == 12
    a_next = int(new.action)  # a' ~ pi(.|12), the action Sarsa bootstraps with
    target = -1.0 + GAMMA * Q0[12, a_next]
    expected = Q0.astype(np.float64).copy()
    expected[CELL, 1] = 5.6 - 0.1 * (5.6 - target)
    np.testing.assert_allclose(new.q, expected, atol=1e-5)
    np.testing.assert_allclose(metrics["td_error"], abs(5.6 - target), atol=1e-5)
    if a_next == 4:  # the greedy action (probability 0.92): 5.6 - 0.1 (5.6 - (-1 + 0.9 * 6.4))
        np.testing.assert_allclose(new.q[CELL, 1], 5.516, atol=1e-5)


@pytest.mark.parametrize("kind, hand_value", [
    # Sarsa with a' = 2: target -1 + 0.9 * 6.2 = 4.58 -> 5.6 - 0.1 * (5.6 - 4.58) = 5.498
    ("sarsa", 5.498),
    # expected Sarsa: E_pi q(12, .) = 0.92 * 6.4 + 0.02 * (6.0 + 6.1 + 6.2 + 6.3) = 6.38,
    # target -1 + 0.9 * 6.38 = 4.742 -> 5.6 - 0.1 * (5.6 - 4.742) = 5.5142
    ("expected_sarsa", 5.5142),
    # Q-learning: max_a q(12, a) = 6.4, target 4.76 -> 5.6 - 0.1 * 0.84 = 5.516
    ("q_learning", 5.516),
])
def test_one_step_targets_by_hand(kind, hand_value):
    """The update `online_update` applies for each method (same functions, same arguments):
    (s, a) = (11, right), r = -1, s' = 12, a' = 2 (used by Sarsa only), epsilon = 0.1."""
    q = jnp.asarray(Q0)
    target = -1.0 + GAMMA * sarsa.next_value(kind, q, 12, 2, 0.1)
    new, delta = sarsa.q_update(q, CELL, 1, target, 0.1)
    np.testing.assert_allclose(new[CELL, 1], hand_value, atol=1e-5)
    np.testing.assert_allclose(delta, 5.6 - (hand_value - 5.6 * 0.9) / 0.1, atol=1e-4)
    changed = np.argwhere(np.asarray(new) != Q0)
    assert changed.tolist() == [[CELL, 1]]


def test_off_policy_q_learning_single_step(book_task):
    config = q_learning_off_policy.default_config()
    config.num_steps = 1
    step = jitted_update(q_learning_off_policy, config, book_task)
    for seed in range(3):
        state = placed(q_learning_off_policy.init(jax.random.key(seed), config, book_task),
                       CELL, q=jnp.asarray(Q0))
        new, _ = step(state)
        s_next = int(new.obs)
        a, r = MOVE_FROM_CELL[s_next]
        expected = Q0.astype(np.float64).copy()
        expected[CELL, a] = Q0[CELL, a] - 0.1 * (Q0[CELL, a] - (r + GAMMA * Q0[s_next].max()))
        np.testing.assert_allclose(new.q, expected, atol=1e-5)


def test_n_step_buffer_returns_and_episode_end():
    """n = 2 by hand: pairs (0,0) (1,1) (2,2), rewards 1, 2, 3; the episode ends after the third."""
    n, alpha = 2, 0.5
    q = jnp.zeros((5, 3)).at[3, 0].set(10.0)  # the bootstrap pair (s', a') = (3, 0)
    buf = (jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.int32), jnp.zeros(n), jnp.zeros(n, jnp.int32),
           jnp.zeros(n, bool))
    step = jax.jit(n_step_sarsa.process_step, static_argnums=(10,))
    # t = 0: (0, 0), r = 1, s' = 1 a' = 1: only one reward collected, nothing updated yet
    q, buf, _, n_upd = step(q, buf, 0, 0, 0, 1.0, 1, 1, False, False, n, alpha, GAMMA)
    assert int(n_upd) == 0 and float(jnp.abs(q).sum()) == 10.0
    # t = 1: (1, 1), r = 2, s' = 3 a' = 0: G(0,0) = 1 + 0.9 * 2 + 0.81 * q(3, 0) = 10.9
    q, buf, _, n_upd = step(q, buf, 1, 1, 1, 2.0, 3, 0, False, False, n, alpha, GAMMA)
    assert int(n_upd) == 1
    np.testing.assert_allclose(q[0, 0], 0.5 * 10.9, atol=1e-5)
    # t = 2: (2, 2), r = 3, terminated at s' = 3: flush (1,1): 2 + 0.9 * 3 = 4.7 and (2,2): 3
    trunc = step(q, buf, 0, 2, 2, 3.0, 3, 0, False, True, n, alpha, GAMMA)
    q_t, buf_t, _, n_upd = step(q, buf, 0, 2, 2, 3.0, 3, 0, True, True, n, alpha, GAMMA)
    assert int(n_upd) == 2 and not bool(buf_t[4].any())
    np.testing.assert_allclose([q_t[1, 1], q_t[2, 2]], [0.5 * 4.7, 0.5 * 3.0], atol=1e-5)
    # truncated instead: bootstrap with the true next pair: (1,1): 4.7 + 0.81 * 10; (2,2): 3 + 9
    q_tr = trunc[0]
    np.testing.assert_allclose([q_tr[1, 1], q_tr[2, 2]], [0.5 * 12.8, 0.5 * 12.0], atol=1e-5)


def test_n_step_sarsa_with_n_1_is_sarsa(book_task):
    task = with_time_limit(book_task, 7)  # several episode ends within the run
    s_ref = run_algo(sarsa, online_config(sarsa), task, jax.random.key(3), 2)
    s_n = run_algo(n_step_sarsa, online_config(n_step_sarsa, n=1), task, jax.random.key(3), 2)
    np.testing.assert_allclose(s_n.q, s_ref.q, atol=1e-6)
    assert float(jnp.abs(s_ref.q).sum()) > 1.0


# ---------------------------------------------------------------------------- convergence
def td_config():
    config = td_zero.default_config()  # decaying step size 0.1 / (1 + n(s)/500)^0.75
    config.num_steps = 200
    return config


@pytest.fixture(scope="module")
def episodic_task():
    env, params = envs.make("gridworld-episodic")
    return Task(env, params)


@pytest.mark.parametrize("episodic, time_limit", [
    # measured over 4 seeds (5e4 steps): mean |err| 0.07-0.12, max 0.23-0.48
    (False, 100),
    # every step truncated (random restart each step): still bootstraps from the true next state;
    # measured mean 0.07, max 0.16-0.27
    (False, 1),
    # terminal target (absorbing, v = 0 in the model): no bootstrap there;
    # measured mean 0.10-0.11, max 0.4-0.56
    (True, 100),
])
def test_td_zero_converges_to_v_pi(book_task, episodic_task, episodic, time_limit):
    task = with_time_limit(episodic_task if episodic else book_task, time_limit)
    config = td_config()
    state = run_algo(td_zero, config, task, jax.random.key(0), 250)  # 5e4 steps
    v_pi = np_v_pi_uniform(task)  # values between -4.5 and 0
    err = np.abs(np.asarray(state.values, np.float64) - v_pi)
    assert err.mean() < 0.2, err.mean()
    assert err.max() < 0.75, err.max()
    if time_limit == 100 and not episodic:
        metrics = jit_evaluate(td_zero, config, task)(state)
        np.testing.assert_allclose(metrics["value_error"], err.max(), atol=1e-4)


# Short episodes (truncated after 3 steps, random restart; TD bootstraps through truncation) so
# that every state is visited often; with the default 100-step episodes the agent spends most of
# its time at the target and far cells need several times more steps.
ONLINE_TASK_STEPS = 3


def online_config(algo, **extra):
    config = algo.default_config()  # alpha = 0.1, epsilon = 0.1 (book)
    config.update(extra)
    config.num_steps = 300
    return config


# Measured optimality gaps of the greedy policy, 1.5e5 steps, 4 seeds (split of key 0):
@pytest.mark.parametrize("algo, extra", [
    (sarsa, {}),  # 0, 0.37, 0.37, 0.37
    (expected_sarsa, {}),  # 0.1, 0, 0, 0
    (n_step_sarsa, {"n": 3}),  # 0.37, 0.33, 0.37, 0.37
    (q_learning, {}),  # 0.1, 0, 0, 0
])
def test_online_control_reaches_near_optimal_policy(book_task, algo, extra):
    """Book settings alpha = 0.1, epsilon = 0.1; 3e5 steps. For epsilon = 0.1 the greedy policy of
    the optimal epsilon-greedy q is optimal on this grid (checked by exact policy iteration over
    epsilon-greedy policies), so the greedy policy of the learned q can get close to optimal.
    1.5e5 steps."""
    task = with_time_limit(book_task, ONLINE_TASK_STEPS)
    config = online_config(algo, **extra)
    state = run_algo(algo, config, task, jax.random.key(0), 500)
    # Independent check of the gap: exact v of the greedy policy vs the book's v*.
    greedy = np.asarray(state.q).argmax(axis=1)
    p, r = (np.asarray(x, np.float64) for x in task.env.tabular_model(task.params))
    idx = np.arange(25)
    v_greedy = np.linalg.solve(np.eye(25) - GAMMA * p[idx, greedy], r[idx, greedy])
    gap = np.max(BOOK_V_STAR - v_greedy)
    assert gap < 0.5, gap
    if algo in (sarsa, q_learning):  # the shared metric code (one compile each is enough)
        ev = jit_evaluate(algo, config, task)(state)
        np.testing.assert_allclose(ev["optimality_gap"], gap, atol=2e-3)  # book v*: 3 decimals


def test_off_policy_q_learning_finds_q_star(book_task):
    """Book example: one uniform-random behaviour stream of 1e5 steps, alpha = 0.1.
    Measured: q_error 0.003-0.005 over 4 seeds; greedy policy exactly optimal."""
    config = q_learning_off_policy.default_config()  # 100 updates x 1000 steps
    state = run_algo(q_learning_off_policy, config, book_task, jax.random.key(0),
                     config.num_updates)
    p, r = (np.asarray(x, np.float64) for x in book_task.env.tabular_model(book_task.params))
    q_star = r + GAMMA * p @ BOOK_V_STAR  # q* from the book's v*
    assert np.max(np.abs(np.asarray(state.q) - q_star)) < 0.03
    ev = jit_evaluate(q_learning_off_policy, config, book_task)(state)
    assert float(ev["optimality_gap"]) < 1e-4
    assert float(ev["q_error"]) < 0.03
    np.testing.assert_allclose(np.asarray(state.q).max(axis=1), BOOK_V_STAR, atol=0.03)


# ---------------------------------------------------------------------------- vmap, determinism
def _leaves_as_float(tree):
    out = []
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf, np.float64))
    return out


# Sarsa's engine also runs expected Sarsa and Q-learning; off-policy Q-learning follows td_zero's
# pattern (env stream + table). The configs are those of the convergence tests, so the per-seed
# runs reuse their compiled programs.
@pytest.mark.parametrize("algo, config_fn, time_limit", [
    (td_zero, td_config, 100),
    (sarsa, lambda: online_config(sarsa), ONLINE_TASK_STEPS),
    (n_step_sarsa, lambda: online_config(n_step_sarsa, n=3), ONLINE_TASK_STEPS),
])
def test_vmap_over_seeds_equals_loop_and_is_deterministic(book_task, algo, config_fn, time_limit):
    task = with_time_limit(book_task, time_limit)  # episode ends inside the run
    single_run, batched_run = runner(algo, config_fn(), task.env)
    keys = jax.random.split(jax.random.key(42), 3)
    batched = batched_run(task.params, keys, 2)
    singles = [single_run(task.params, key, 2) for key in keys]
    for i, single in enumerate(singles):
        for a, b in zip(_leaves_as_float(single), _leaves_as_float(batched)):
            np.testing.assert_allclose(a, b[i], rtol=1e-6, atol=1e-6)
    # Same seed -> bit-identical; another seed -> different estimates.
    again = single_run(task.params, keys[0], 2)
    for a, b in zip(_leaves_as_float(again), _leaves_as_float(singles[0])):
        np.testing.assert_array_equal(a, b)
    table = "values" if algo is td_zero else "q"
    assert not np.array_equal(getattr(singles[0], table), getattr(singles[1], table))


# ---------------------------------------------------------------------------- config errors
def test_unknown_choices_raise(book_task):
    config = td_zero.default_config()
    config.policy = "greedy"
    with pytest.raises(ValueError, match="uniform, optimal"):
        td_zero.init(jax.random.key(0), config, book_task)
    config = td_zero.default_config()
    config.step_size = "harmonic"
    with pytest.raises(ValueError, match="constant, decaying"):
        td_zero.init(jax.random.key(0), config, book_task)
    config = q_learning_off_policy.default_config()
    config.behavior_policy = "greedy"
    with pytest.raises(ValueError, match="uniform, epsilon_optimal"):
        q_learning_off_policy.init(jax.random.key(0), config, book_task)
    with pytest.raises(ValueError, match="sarsa, expected_sarsa, q_learning"):
        sarsa.online_update("double_q", None, sarsa.default_config(), book_task)
    config = n_step_sarsa.default_config()
    config.n = 0
    with pytest.raises(ValueError, match="n >= 1"):
        n_step_sarsa.init(jax.random.key(0), config, book_task)


def test_td_zero_follows_a_written_policy_and_its_epsilon_version(book_task):
    """td_zero with arrows per cell and epsilon follows (1 - eps) pi + eps/|A| (the stored
    policy and the action frequencies of its stream) and is evaluated against that policy."""
    config = td_zero.default_config()
    config.policy = ">>>>>/>>>>>/>>>>>/>>>>>/>>>>>"  # "always right", the book's Fig. 2.7(b)
    config.epsilon = 0.5
    state = td_zero.init(jax.random.key(0), config, book_task)
    expected = np.full((25, 5), 0.1)
    expected[:, 1] = 0.6
    np.testing.assert_allclose(np.asarray(state.policy), expected, atol=1e-7)
    obs = jnp.repeat(jnp.arange(25, dtype=jnp.int32), 400)
    actions = td_zero.act(state, obs, config, book_task, jax.random.key(1))
    freq = np.bincount(np.asarray(actions), minlength=5) / actions.size
    np.testing.assert_allclose(freq, expected[0], atol=0.02)


# ---------------------------------------------------------------------------- protocol
TABULAR = ["policy_evaluation", "value_iteration", "policy_iteration",
           "truncated_policy_iteration", "epsilon_greedy_policy_iteration", "mc_basic",
           "mc_exploring_starts", "mc_epsilon_greedy",
           "robbins_monro", "sgd_mean_estimation", "td_zero", "sarsa", "expected_sarsa",
           "n_step_sarsa", "q_learning", "q_learning_off_policy", "td_linear"]
NO_ENV = ("robbins_monro", "sgd_mean_estimation")
WITH_ENV = [name for name in TABULAR if name not in NO_ENV]
# Agents whose behaviour policy is epsilon-greedy in their q (the others sample a stored policy).
EPS_GREEDY = ("mc_epsilon_greedy", "sarsa", "expected_sarsa", "n_step_sarsa", "q_learning")


def tabular_module(name):
    return importlib.import_module(f"algorithms.tabular.{name}")


@pytest.mark.parametrize("name", TABULAR)
def test_protocol_members_and_primary_metric(book_task, name):
    """Task members, and PRIMARY_METRIC is one of the runner's final metrics (the last training
    row's keys and the evaluation keys prefixed with "eval/")."""
    algo = tabular_module(name)
    config = algo.default_config()
    if name in NO_ENV:
        assert (algo.TASK_FLAG, algo.DEFAULT_TASK) == (None, None)
        assert algo.make_task(None, config) is None
        assert not hasattr(algo, "act") and not hasattr(algo, "artifacts")
        task = None
    else:
        assert (algo.TASK_FLAG, algo.DEFAULT_TASK) == ("env", "gridworld")
        made = algo.make_task("gridworld", config)
        assert made.env.layout == book_task.env.layout
        task = book_task
    state = jax.eval_shape(lambda k: algo.init(k, config, task), jax.random.key(0))
    _, metrics = jax.eval_shape(lambda s: algo.update(s, config, task), state)
    evals = jax.eval_shape(lambda s: algo.evaluate(s, jax.random.key(1), config, task), state)
    assert algo.PRIMARY_METRIC in set(metrics) | {f"eval/{k}" for k in evals}
    assert state.step.dtype == jnp.int32


def randomized(state, rng):
    """`state` with random q [S, A] and random stochastic policy [S, A] (no ties)."""
    fields = {}
    if hasattr(state, "q"):
        fields["q"] = jnp.asarray(rng.normal(size=state.q.shape), state.q.dtype)
    if hasattr(state, "policy"):
        fields["policy"] = jnp.asarray(rng.dirichlet(np.ones(5), 25), state.policy.dtype)
    return state.replace(**fields)


@pytest.mark.parametrize("name", WITH_ENV)
def test_act_greedy_and_behaviour(book_task, name):
    """act(key=None) is the argmax of the policy `solution` reports; with a key, the action
    frequencies of 400 draws per state follow the behaviour policy (std <= 0.025)."""
    algo = tabular_module(name)
    config = algo.default_config()
    state = randomized(algo.init(jax.random.key(0), config, book_task), np.random.default_rng(0))
    values, policy = algo.solution(state, config, book_task)
    assert values.shape == (25,) and policy.shape == (25, 5)
    np.testing.assert_allclose(np.asarray(policy).sum(axis=1), 1.0, atol=1e-6)

    greedy = algo.act(state, jnp.arange(25), config, book_task)
    assert greedy.dtype == jnp.int32 and greedy.shape == (25,)
    np.testing.assert_array_equal(np.asarray(greedy), np.argmax(np.asarray(policy), axis=1))

    if name in EPS_GREEDY:
        q = np.asarray(state.q, np.float64)
        behaviour = np.full(q.shape, config.epsilon / 5)
        behaviour[np.arange(25), q.argmax(1)] += 1 - config.epsilon
    elif name == "q_learning_off_policy":
        behaviour = np.asarray(state.behavior)
    else:
        behaviour = np.asarray(state.policy)
    obs = jnp.repeat(jnp.arange(25, dtype=jnp.int32), 400)
    actions = algo.act(state, obs, config, book_task, jax.random.key(5))
    assert actions.dtype == jnp.int32 and actions.shape == obs.shape
    freq = np.zeros((25, 5))
    np.add.at(freq, (np.asarray(obs), np.asarray(actions)), 1.0 / 400)
    assert np.max(np.abs(freq - behaviour)) < 0.12, np.max(np.abs(freq - behaviour))
    again = algo.act(state, obs, config, book_task, jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(actions))


def test_artifacts_write_values_policy_and_picture(book_task, tmp_path):
    """artifacts writes every seed's solution (values.npy [seeds, S], policy.npy [seeds, S, A])
    and seed 0's picture, and names the files."""
    config = q_learning.default_config()
    state = jax.vmap(lambda k: q_learning.init(k, config, book_task))(
        jax.random.split(jax.random.key(0), 2))
    q = np.random.default_rng(1).normal(size=(2, 25, 5)).astype(np.float32)
    state = state.replace(q=jnp.asarray(q))
    written = q_learning.artifacts(state, config, book_task, str(tmp_path))
    assert written == ["values.npy", "policy.npy", "gridworld.png"]
    np.testing.assert_array_equal(np.load(tmp_path / "values.npy"), q.max(axis=-1))
    np.testing.assert_array_equal(np.load(tmp_path / "policy.npy"), np.eye(5)[q.argmax(-1)])
    assert (tmp_path / "gridworld.png").stat().st_size > 0
