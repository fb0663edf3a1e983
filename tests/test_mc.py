"""Monte Carlo control (book Ch. 5): MC Basic, MC Exploring Starts, MC epsilon-Greedy.

References are independent of the algorithms' code: the book's optimal values, numpy linear
solves of v_pi on the dense model, numpy loops for returns and visit statistics.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.tabular import common, mc_basic, mc_epsilon_greedy, mc_exploring_starts
from conftest import run_updates

GAMMA = 0.9
# The book's optimal state values of the 5x5 grid (Fig. 3.4), rows top to bottom.
BOOK_V_STAR = np.array([
    5.832, 5.580, 6.200, 6.480, 5.832,
    6.480, 7.200, 8.000, 7.200, 6.480,
    7.200, 8.000, 10.000, 8.000, 7.200,
    8.000, 10.000, 10.000, 10.000, 8.000,
    7.200, 9.000, 10.000, 9.000, 8.100])


def np_v_pi(task, policy, gamma=GAMMA):
    """v_pi = (I - gamma P_pi)^-1 r_pi with numpy on the dense model."""
    p, r = (np.asarray(x, np.float64) for x in task.env.tabular_model(task.params))
    policy = np.asarray(policy, np.float64)
    p_pi = np.einsum("sa,sat->st", policy, p)
    r_pi = np.sum(policy * r, axis=1)
    return np.linalg.solve(np.eye(len(r_pi)) - gamma * p_pi, r_pi)


def np_q_pi(task, policy, gamma=GAMMA):
    p, r = (np.asarray(x, np.float64) for x in task.env.tabular_model(task.params))
    return r + gamma * p @ np_v_pi(task, policy, gamma)


def np_gap(task, policy):
    """max_s (v*(s) - v_pi(s)) against the book's v* (rounded to 1e-3 in the book)."""
    return np.max(BOOK_V_STAR - np_v_pi(task, policy))


def run_seeds_vmap_and_loop(algo, config, task, keys, num_updates, extra=None):
    """init + `num_updates` updates for each key, twice in ONE jit (one compilation): vmapped
    over the keys, and as a sequential loop (lax.map) of single-key runs. Asserts both agree
    (vmap over seeds == loop over seeds; equal results from two different programs with the
    same keys also show the key alone determines a run) and returns the vmapped
    (state, metrics[, extra(state)]).
    """
    def one(k):
        s = algo.init(k, config, task)
        s, m = jax.lax.scan(lambda s, _: algo.update(s, config, task), s, None,
                            length=num_updates)
        return (s, m) if extra is None else (s, m, extra(s))

    @jax.jit
    def both(keys):
        return jax.vmap(one)(keys), jax.lax.map(one, keys)

    batched, looped = both(keys)
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(looped)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        # float32 sums of thousands of returns (|sum| ~ 2e3) are added in another order under
        # vmap: allow a few ulps of the leaf's largest magnitude, not of each element.
        scale = max(1.0, float(np.abs(np.asarray(b, dtype=np.float64)).max()))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * scale)
    # different seeds give different results (the key is used)
    assert any(not np.array_equal(np.asarray(m[0]), np.asarray(m[1]))
               for m in jax.tree.leaves(batched[1]))
    return batched, both


# ---------------------------------------------------------------------- returns, statistics
def test_discounted_returns_match_numpy_on_hand_made_trajectory():
    rewards = np.array([1.0, 0.0, -1.0, 2.0, 0.5, -0.5, 1.0], np.float32)
    # The episode ends after step 2 (index); steps 3.. belong to the next episode.
    dones = np.array([False, False, True, False, False, False, False])
    gamma = 0.8
    expected = np.zeros(len(rewards))
    for t in range(len(rewards)):  # forward sums g_t = sum_j gamma^(j-t) r_j up to the episode end
        end = next((j for j in range(t, len(rewards)) if dones[j]), len(rewards) - 1)
        expected[t] = sum(gamma ** (j - t) * rewards[j] for j in range(t, end + 1))
    # By hand: g_2 = -1, g_1 = 0 + 0.8 * -1, g_0 = 1 + 0.8 * -0.8 = 0.36.
    np.testing.assert_allclose(expected[:3], [0.36, -0.8, -1.0], atol=1e-12)
    got = mc_basic.discounted_returns(jnp.asarray(rewards), jnp.asarray(dones), gamma)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("first_visit", [False, True])
def test_episode_statistics_match_numpy(first_visit):
    num_s, num_a, gamma = 4, 2, 0.9
    states = np.array([0, 1, 0, 2, 0, 1, 3])
    actions = np.array([1, 0, 1, 1, 0, 0, 1])
    rewards = np.array([0.0, 1.0, -1.0, 0.5, 2.0, 0.0, 1.0], np.float32)
    dones = np.zeros(len(states), bool)
    traj = common.Transition(jnp.asarray(states, jnp.int32), jnp.asarray(actions, jnp.int32),
                             jnp.asarray(rewards), None, None, jnp.asarray(dones),
                             jnp.asarray(dones))
    ret, cnt, _ = mc_exploring_starts.episode_statistics(traj, num_s, num_a, gamma, first_visit)
    exp_ret, exp_cnt, seen = np.zeros((num_s, num_a)), np.zeros((num_s, num_a), int), set()
    for t in range(len(states)):
        g = sum(gamma ** (j - t) * rewards[j] for j in range(t, len(states)))
        pair = (states[t], actions[t])
        if first_visit and pair in seen:
            continue
        seen.add(pair)
        exp_ret[pair] += g
        exp_cnt[pair] += 1
    np.testing.assert_array_equal(np.asarray(cnt), exp_cnt)
    np.testing.assert_allclose(np.asarray(ret), exp_ret, rtol=1e-6, atol=1e-6)
    if first_visit:  # (0, 1) occurs at t = 0 and 2: only t = 0 counts
        assert exp_cnt[0, 1] == 1
    else:
        assert exp_cnt[0, 1] == 2


def test_mc_q_estimate_of_uniform_policy_matches_exact_q(book_task):
    """The MC Basic evaluation step on a stochastic policy vs q_pi from a numpy solve.

    200 episodes of 50 steps per pair: truncation bias <= 10 * 0.9^50 = 0.05; returns have std
    < ~4, so the standard error is < 0.3 (measured over 3 keys: max error 0.22-0.25, mean
    0.07). Tolerances: max 0.5, mean 0.12.
    """
    config = mc_basic.default_config()
    config.episode_length, config.episodes_per_pair = 50, 200
    policy = common.uniform_policy(25, 5)
    q = jax.jit(lambda k: mc_basic.estimate_q(k, policy, config, book_task))(jax.random.key(3))
    err = np.abs(np.asarray(q) - np_q_pi(book_task, policy))
    assert err.max() < 0.5, err.max()
    assert err.mean() < 0.12, err.mean()


# ---------------------------------------------------------------------- MC Basic
def test_book_optimal_values(book_task):
    v_star = np.asarray(common.optimal_values(common.model_of(book_task), GAMMA))
    np.testing.assert_allclose(v_star, BOOK_V_STAR, atol=1e-3)


def test_mc_basic_reaches_optimal_policy_with_default_episode_length(book_task):
    """Default L = 30: the greedy policy is optimal (v_pi = v* to 1e-3) after 10 updates from
    random initial policies; max_a q is v* up to the truncation 10 * 0.9^30 = 0.42.
    Also: vmap over seeds == loop over seeds, and determinism."""
    config = mc_basic.default_config()
    assert config.episode_length == 30
    keys = jax.random.split(jax.random.key(0), 3)
    (states, metrics), both = run_seeds_vmap_and_loop(mc_basic, config, book_task, keys, 10)
    (again, _), _ = both(keys)  # fixed seeds -> identical results
    np.testing.assert_array_equal(np.asarray(again.q), np.asarray(states.q))
    assert int(again.step[0]) == 10
    for i in range(3):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        assert np.max(np.abs(BOOK_V_STAR - np_v_pi(book_task, state.policy))) < 1e-3
        assert int(metrics["policy_changes"][i, -1]) == 0  # converged: the policy is stable
        values = np.asarray(state.q).max(1)  # what solution() returns as values
        err = BOOK_V_STAR - values
        assert np.all(err > -1e-3) and np.all(err < 10 * 0.9 ** 30 + 1e-3), err


def test_mc_basic_too_short_episodes_do_not_reach_the_target(book_task):
    """Book Ch. 5.2.3: with L = 1 the estimate is the immediate reward; every state not next to
    the target keeps ties and the policy stays far from optimal (measured gap 9.0)."""
    config = mc_basic.default_config()
    config.episode_length = 1
    state, _ = run_updates(mc_basic, config, book_task, jax.random.key(0), 5)
    assert np_gap(book_task, state.policy) > 5.0


# ---------------------------------------------------------------------- MC Exploring Starts
def test_mc_exploring_starts_near_optimal(book_task):
    """Default config (first visit, 64 episodes of 30 steps per update), 400 updates, 3 seeds.

    Measured gaps after 400 updates, two sets of 16 seeds: mean 0.41 / 0.43, max 1.37 / 1.23
    (start: ~9-18); the mean state value of the policy was within 0.08 of v*'s. Tolerances:
    every seed gap < 2.0 and mean value within 0.25 of v*'s, mean gap over seeds < 1.0. Also
    vmap == loop over seeds.
    """
    config = mc_exploring_starts.default_config()
    keys = jax.random.split(jax.random.key(0), 3)
    (states, _), _ = run_seeds_vmap_and_loop(mc_exploring_starts, config, book_task, keys, 400)
    gaps, mean_vals = [], []
    for i in range(len(keys)):
        policy = np.asarray(states.policy[i])
        assert np.all(policy.sum(1) == 1) and set(np.unique(policy)) <= {0.0, 1.0}
        gaps.append(np_gap(book_task, policy))
        mean_vals.append(np_v_pi(book_task, policy).mean())
    gaps = np.array(gaps)
    assert np.all(gaps < 2.0), gaps
    assert gaps.mean() < 1.0, gaps
    assert np.all(np.array(mean_vals) > BOOK_V_STAR.mean() - 0.25), mean_vals
    # q is the average of the recorded returns.
    s0 = jax.tree.map(lambda x: x[0], states)
    counts = np.asarray(s0.counts)
    np.testing.assert_allclose(np.asarray(s0.q)[counts > 0],
                               (np.asarray(s0.returns_sum) / np.maximum(counts, 1))[counts > 0],
                               rtol=1e-5, atol=1e-5)
    assert counts.min() > 0  # exploring starts reach every pair


# ---------------------------------------------------------------------- MC epsilon-greedy
def best_eps_greedy_value(task, eps):
    """Mean value of the best eps-greedy policy: policy iteration within the eps-greedy class
    (numpy, exact)."""
    q = np.zeros((25, 5))
    for _ in range(50):
        pi = np.full((25, 5), eps / 5)
        pi[np.arange(25), q.argmax(1)] += 1 - eps
        q = np_q_pi(task, pi)
    return np_v_pi(task, pi).mean()


def test_mc_epsilon_greedy_near_optimal(book_task):
    """Default config (eps 0.1, 16 x 100-step episodes per update), 300 updates, 3 seeds.

    Measured (8 seeds): greedy policy mean value 7.35-7.74 (v*: 7.80; start -8.5), optimality
    gap 0.7-3.75 (start ~18; slow for far states, see the module doc), eps-greedy policy mean
    value 5.9-6.3 vs 6.40 for the best eps-greedy policy. Tolerances: greedy mean value > 7.1,
    gap < 4.5 per seed; eps-greedy mean value within 0.7 of the best. Also vmap == loop.
    """
    config = mc_epsilon_greedy.default_config()
    assert config.epsilon == 0.1
    keys = jax.random.split(jax.random.key(0), 3)
    ev0 = jax.jit(jax.vmap(lambda k: mc_epsilon_greedy.evaluate(
        mc_epsilon_greedy.init(k, config, book_task), None, config, book_task)))(keys)
    (states, _, ev), _ = run_seeds_vmap_and_loop(
        mc_epsilon_greedy, config, book_task, keys, 300,
        extra=lambda s: mc_epsilon_greedy.evaluate(s, None, config, book_task))
    best_eps = best_eps_greedy_value(book_task, config.epsilon)
    assert 6.3 < best_eps < 6.5  # computed: 6.399
    for i in range(len(keys)):
        q = np.asarray(states.q[i])
        greedy = np.eye(5)[q.argmax(1)]
        eps_pi = 0.1 / 5 + 0.9 * greedy
        v_greedy, v_eps = np_v_pi(book_task, greedy), np_v_pi(book_task, eps_pi)
        # evaluate's numbers agree with the numpy solve
        np.testing.assert_allclose(float(ev["policy_value"][i]), v_greedy.mean(), atol=1e-3)
        np.testing.assert_allclose(float(ev["eps_policy_value"][i]), v_eps.mean(), atol=1e-3)
        assert v_greedy.mean() > 7.1
        assert np.max(BOOK_V_STAR - v_greedy) < 4.5
        assert v_eps.mean() > best_eps - 0.7
        assert float(ev["policy_value"][i]) > float(ev0["policy_value"][i]) + 10.0
