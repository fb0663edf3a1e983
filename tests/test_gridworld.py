"""The book's grid world (envs/gridworld.py) against its rules written out independently in
plain python (S. Zhao, Mathematical Foundations of RL, Ch. 1): every state and action of the
5x5 example, the walls / terminal-target / slip options, text layouts and the gymnax API.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.gridworld import GridWorld

H = W = 5
# The book's 5x5 example, 1-based (row, col): forbidden cells and the target.
BOOK_FORBIDDEN = {(2, 2), (2, 3), (3, 3), (4, 2), (4, 4), (5, 2)}
BOOK_TARGET = (4, 3)
# a1..a5 = up, right, down, left, stay as (d_row, d_col).
ACTIONS = [(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)]
# Distinct reward values so a wrong reward kind cannot pass by coincidence.
REWARDS = dict(r_boundary=-2.0, r_forbidden=-3.0, r_target=5.0, r_other=0.5)


def rule(row, col, action, rewards, walls=False, terminal_target=False,
         forbidden=BOOK_FORBIDDEN, target=BOOK_TARGET, height=H, width=W):
    """(next (row, col), reward) by the book's rules, 1-based coordinates."""
    if terminal_target and (row, col) == target:
        return (row, col), 0.0
    dr, dc = ACTIONS[action]
    aim = (row + dr, col + dc)
    if not (1 <= aim[0] <= height and 1 <= aim[1] <= width):
        return (row, col), rewards["r_boundary"]
    if aim in forbidden:
        return ((row, col) if walls else aim), rewards["r_forbidden"]
    if aim == target:
        return aim, rewards["r_target"]
    return aim, rewards["r_other"]


def index(cell, width=W):
    return (cell[0] - 1) * width + (cell[1] - 1)


def all_outcomes(env, params):
    """env.outcome for every (s, a): (next [S, A], reward [S, A]) as numpy."""
    s = jnp.arange(env.num_states)
    a = jnp.arange(env.num_actions)
    nxt, rew = jax.jit(jax.vmap(lambda si: jax.vmap(
        lambda ai: env.outcome(si, ai, params))(a)))(s)
    return np.asarray(nxt), np.asarray(rew)


@pytest.mark.parametrize("walls", [False, True])
@pytest.mark.parametrize("terminal_target", [False, True])
def test_every_state_action_follows_the_rules(walls, terminal_target):
    env = GridWorld("book", walls=walls, terminal_target=terminal_target)
    params = env.default_params.replace(**REWARDS)
    nxt, rew = all_outcomes(env, params)
    p, r = (np.asarray(x) for x in env.tabular_model(params))
    assert p.shape == (25, 5, 25) and r.shape == (25, 5)
    for row in range(1, H + 1):
        for col in range(1, W + 1):
            s = index((row, col))
            for a in range(5):
                cell, reward = rule(row, col, a, REWARDS, walls, terminal_target)
                assert nxt[s, a] == index(cell), ((row, col), a)
                assert rew[s, a] == pytest.approx(reward), ((row, col), a)
                # Deterministic exact model (no slip): P is one-hot on the rule's next cell.
                expected = np.zeros(25)
                expected[index(cell)] = 1.0
                np.testing.assert_allclose(p[s, a], expected, atol=1e-7)
                assert r[s, a] == pytest.approx(reward)


def test_book_layout_and_default_rewards():
    env, params = envs.make("gridworld")
    assert (env.height, env.width) == (5, 5)
    assert {env.coords(i) for i in np.flatnonzero(env.forbidden)} == BOOK_FORBIDDEN
    assert [env.coords(i) for i in np.flatnonzero(env.target)] == [BOOK_TARGET]
    # The book's rewards: r_boundary = r_forbidden = -1, r_target = 1, r_other = 0.
    book = dict(r_boundary=-1.0, r_forbidden=-1.0, r_target=1.0, r_other=0.0)
    for k, v in book.items():
        assert getattr(params, k) == v
    assert params.slip_prob == 0.0 and not env.walls and not env.terminal_target
    _, rew = all_outcomes(env, params)
    for s in range(25):
        for a in range(5):
            assert rew[s, a] == pytest.approx(rule(*env.coords(s), a, book)[1])


def test_step_matches_outcome_without_slip():
    """env.step (slip 0) gives the rule's next state and reward for every (s, a)."""
    env = GridWorld("book")
    params = env.default_params.replace(**REWARDS)
    s, a = np.meshgrid(np.arange(25), np.arange(5), indexing="ij")
    s, a = jnp.asarray(s.ravel(), jnp.int32), jnp.asarray(a.ravel(), jnp.int32)
    keys = jax.random.split(jax.random.key(0), s.shape[0])

    def one(key, si, ai):
        _, state = env.reset_to(si)
        obs, _, reward, term, trunc, _ = env.step(key, state, ai, params)
        return obs, reward, term, trunc

    obs, reward, term, trunc = jax.jit(jax.vmap(one))(keys, s, a)
    for i in range(s.shape[0]):
        cell, rwd = rule(*env.coords(int(s[i])), int(a[i]), REWARDS)
        assert int(obs[i]) == index(cell)
        assert float(reward[i]) == pytest.approx(rwd)
    assert not np.any(term) and not np.any(trunc)


def test_terminal_target_step_terminates_and_resets():
    env, params = envs.make("gridworld-episodic")
    assert env.terminal_target
    above_target = index((3, 3))  # (3,3) is forbidden but can be entered; down leads to target
    _, state = env.reset_to(above_target)
    obs, state2, reward, term, trunc, info = env.step(jax.random.key(0), state, 2, params)
    assert bool(term) and not bool(trunc)
    assert float(reward) == 1.0
    assert int(info["final_observation"]) == index(BOOK_TARGET)
    assert int(obs) != index(BOOK_TARGET)  # gymnax auto-reset to a start cell
    # Episodes never start on the terminal target.
    starts = jax.vmap(lambda k: env.reset(k, params)[0])(jax.random.split(jax.random.key(1), 400))
    assert index(BOOK_TARGET) not in set(np.asarray(starts).tolist())
    # Absorbing in the exact model, reward 0.
    p, r = env.tabular_model(params)
    t = index(BOOK_TARGET)
    np.testing.assert_allclose(np.asarray(p)[t, :, t], 1.0)
    np.testing.assert_allclose(np.asarray(r)[t], 0.0)


def test_walls_block_and_never_start():
    env, params = envs.make("gridworld-walls")
    assert env.walls
    starts = np.asarray(jax.vmap(lambda k: env.reset(k, params)[0])(
        jax.random.split(jax.random.key(2), 600)))
    walls = {index(c) for c in BOOK_FORBIDDEN}
    assert not walls & set(starts.tolist())
    # Without an 'S', every non-wall cell can be a start (600 draws over 19 cells).
    assert set(starts.tolist()) == set(range(25)) - walls


SLIP = 0.3


def test_slip_model_rows_and_formula():
    env = GridWorld("book")
    params = env.default_params.replace(slip_prob=SLIP, **REWARDS)
    p, r = (np.asarray(x, np.float64) for x in env.tabular_model(params))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    # Independent formula: chosen action with prob 1 - p, any of the 5 with prob p / 5.
    for s in range(25):
        outs = [rule(*env.coords(s), b, REWARDS) for b in range(5)]
        for a in range(5):
            expected_p = np.zeros(25)
            expected_r = 0.0
            for b, (cell, rwd) in enumerate(outs):
                w = (1 - SLIP) * (a == b) + SLIP / 5
                expected_p[index(cell)] += w
                expected_r += w * rwd
            np.testing.assert_allclose(p[s, a], expected_p, atol=1e-6)
            assert r[s, a] == pytest.approx(expected_r, abs=1e-5)


@pytest.mark.parametrize("cell,action", [((1, 1), 0), ((3, 3), 2), ((4, 3), 4), ((2, 5), 1)])
def test_slip_empirical_frequencies_match_model(cell, action):
    """Frequencies of env.step outcomes agree with P[s, a, :] within 3 standard errors."""
    env = GridWorld("book")
    params = env.default_params.replace(slip_prob=SLIP, **REWARDS)
    p, r = (np.asarray(x, np.float64) for x in env.tabular_model(params))
    s = index(cell)
    n = 4000
    _, state = env.reset_to(s)
    step = jax.jit(jax.vmap(lambda k: env.step(k, state, action, params)[0:3:2]))
    obs, reward = step(jax.random.split(jax.random.key(7), n))
    freq = np.bincount(np.asarray(obs), minlength=25) / n
    se = np.sqrt(p[s, action] * (1 - p[s, action]) / n)
    assert np.all(np.abs(freq - p[s, action]) <= 3 * se + 1e-12), (freq, p[s, action])
    reward = np.asarray(reward, np.float64)
    assert abs(reward.mean() - r[s, action]) <= 3 * reward.std() / np.sqrt(n) + 1e-12


def test_text_layout_with_start():
    env, params = envs.make("gridworld", layout="S.#/..T")
    assert (env.height, env.width, env.start_state) == (2, 3, 0)
    np.testing.assert_array_equal(env.forbidden, [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(env.target, [0, 0, 0, 0, 0, 1])
    starts = jax.vmap(lambda k: env.reset(k, params)[0])(jax.random.split(jax.random.key(0), 50))
    np.testing.assert_array_equal(np.asarray(starts), 0)
    # The 'S' cell is an ordinary free cell; rules hold on this grid too.
    rewards = {k: getattr(params, k) for k in REWARDS}
    nxt, rew = all_outcomes(env, params)
    for s in range(6):
        for a in range(5):
            cell, rwd = rule(*env.coords(s), a, rewards, forbidden={(1, 3)}, target=(2, 3),
                             height=2, width=3)
            assert nxt[s, a] == index(cell, width=3)
            assert rew[s, a] == pytest.approx(rwd)
    # Newline-separated maps and named layouts parse the same way.
    assert GridWorld("S.#\n..T").layout == env.layout == "S.#/..T"
    assert GridWorld("book_3x3").height == 3


@pytest.mark.parametrize("layout,kwargs,match", [
    ("", {}, "empty"),
    ("../.", {}, "different lengths"),
    ("..X/..T", {}, "unknown layout characters"),
    ("S.S/..T", {}, "at most one start"),
    ("##/##", {"walls": True}, "no cell to start"),
    ("T", {"terminal_target": True}, "no cell to start"),
])
def test_bad_layouts_raise(layout, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridWorld(layout, **kwargs)


def test_make_rejects_unknown_env_and_option():
    with pytest.raises(ValueError, match="valid choices") as err:
        envs.make("gridwrold")
    assert "gridworld" in str(err.value) and "CartPole-v1" in str(err.value)
    with pytest.raises(ValueError, match="valid options") as err:
        envs.make("gridworld", slip=0.1)
    assert "slip_prob" in str(err.value) and "layout" in str(err.value)
    env, params = envs.make("gridworld", layout="book_3x3", slip_prob=0.1, walls=True)
    assert env.height == 3 and env.walls and params.slip_prob == pytest.approx(0.1)
    opts = envs.env_options("gridworld")
    assert opts["layout"] == "book" and opts["walls"] is False and opts["r_target"] == 1.0


def test_gymnax_six_value_step_api():
    env, params = envs.make("gridworld", max_steps_in_episode=3)
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.dtype == jnp.int32 and obs.shape == ()
    assert env.action_space(params).n == 5 and env.observation_space(params).n == 25
    truncs = []
    for t in range(3):
        out = env.step(jax.random.key(t + 1), state, 4, params)  # stay
        assert len(out) == 6
        obs, state, reward, terminated, truncated, info = out
        assert reward.shape == () and jnp.issubdtype(reward.dtype, jnp.floating)
        assert terminated.dtype == jnp.bool_ and truncated.dtype == jnp.bool_
        assert {"final_observation", "terminated", "truncated"} <= set(info)
        truncs.append(bool(truncated))
    # Truncated at the time limit, then auto-reset (time back to 0).
    assert truncs == [False, False, True]
    assert int(state.time) == 0


# ---------------------------------------------------------------------------- action sets
def test_action_set_three_actions_one_by_two():
    """The book's 1x2 example of Ch. 4.2 (Fig. 4.3): actions left, stay, right; target s2."""
    env, params = envs.make("gridworld", layout=".T", actions="left,stay,right")
    assert env.num_actions == 3 and env.action_names == ("left", "stay", "right")
    assert env.action_space(params).n == 3
    p, r = (np.asarray(x) for x in env.tabular_model(params))
    assert p.shape == (2, 3, 2)
    # (next state, reward) of (s1, s2) x (left, stay, right), by the book's rules.
    expected = {(0, 0): (0, -1.0), (0, 1): (0, 0.0), (0, 2): (1, 1.0),
                (1, 0): (0, 0.0), (1, 1): (1, 1.0), (1, 2): (1, -1.0)}
    for (s, a), (nxt, rwd) in expected.items():
        assert p[s, a, nxt] == 1.0 and r[s, a] == rwd, (s, a)
    # Slips draw from the env's own action set: P = (1 - p) I + p / 3 over executed actions.
    p_slip, _ = env.tabular_model(params.replace(slip_prob=0.3))
    np.testing.assert_allclose(np.asarray(p_slip)[0, 2], [0.2, 0.8], atol=1e-6)


def test_default_action_set_is_the_books_five():
    env = GridWorld("book")
    assert env.action_names == ("up", "right", "down", "left", "stay")
    np.testing.assert_array_equal(env.moves, ACTIONS)
    assert envs.env_options("gridworld")["actions"] == "up,right,down,left,stay"


@pytest.mark.parametrize("actions", ["", "up,up", "north,stay", "left,,jump"])
def test_bad_action_sets_raise(actions):
    with pytest.raises(ValueError, match="actions=.*distinct names from up, right, down"):
        GridWorld("book", actions=actions)


# ---------------------------------------------------------------------------- Ch. 5 reward rule
def test_bump_in_forbidden_pays_both_rewards():
    """'boundary+forbidden': a move off the grid from a forbidden cell pays r_boundary +
    r_forbidden (the book's Ch. 5 figures); every other (s, a) is unchanged, and the default
    rule is the aimed-at cell's reward alone."""
    env = GridWorld("book", bump_in_forbidden="boundary+forbidden")
    base = GridWorld("book")
    params = env.default_params.replace(**REWARDS)
    nxt, rew = all_outcomes(env, params)
    nxt0, rew0 = all_outcomes(base, params)
    np.testing.assert_array_equal(nxt, nxt0)
    changed = np.argwhere(rew != rew0)
    # Only (5,2) is a forbidden cell on the border: its down move.
    assert [tuple(x) for x in changed] == [(index((5, 2)), 2)]
    assert rew[index((5, 2)), 2] == pytest.approx(REWARDS["r_boundary"] + REWARDS["r_forbidden"])
    assert rew0[index((5, 2)), 2] == pytest.approx(REWARDS["r_boundary"])
    with pytest.raises(ValueError, match="boundary, boundary\\+forbidden"):
        GridWorld("book", bump_in_forbidden="both")


# ---------------------------------------------------------------------------- text policies
def test_policy_from_text():
    env = GridWorld("book")
    policy = env.policy_from_text(">>>>v/^^>>v/^<v>v/^>o<v/^>^<<")
    assert policy.shape == (25, 5)
    np.testing.assert_array_equal(policy.sum(1), 1.0)
    assert policy[index((1, 1)), 1] == 1 and policy[index((4, 3)), 4] == 1
    assert policy[index((3, 2)), 3] == 1 and policy[index((1, 5)), 2] == 1
    # Newlines, spaces around rows and the book's unicode arrows and circle parse the same way.
    unicode = "\u2192\u2192\u2192\u2192\u2193\n^^>>v\n^<v>v\n^>\u25cb<v\n ^>^<< "
    np.testing.assert_array_equal(env.policy_from_text(unicode), policy)
    # On a three-action env the symbols map to that env's indices.
    small = GridWorld(".T", actions="left,stay,right")
    np.testing.assert_array_equal(small.policy_from_text(">o"), [[0, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize("text,match", [
    (">>>>v/^^>>v", "2 rows"),
    (">>>>v/^^>>v/^<v>v/^>o<v/^>^<", "5 rows of 5 symbols"),
    (">>>>v/^^>>v/^<v>v/^>o<v/^>^<x", "unknown symbols \\['x'\\]"),
])
def test_bad_policy_text_raises(text, match):
    with pytest.raises(ValueError, match=match):
        GridWorld("book").policy_from_text(text)
    with pytest.raises(ValueError, match="unknown symbols \\['\\^'\\].*'<' left"):
        GridWorld(".T", actions="left,stay,right").policy_from_text("^o")
