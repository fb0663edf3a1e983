"""A finite MDP from arrays (envs/mdp.py, `--env=mdp:path.npz`): validation with one clear error
per bad input, the file round trip, sampling that follows P, and dynamic programming on it
against independent numpy solutions.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.tabular import common
from algorithms.tabular import policy_iteration as pi_algo
from algorithms.tabular import value_iteration as vi
from envs import mdp
from envs.gridworld import GridWorld
from conftest import run_updates


def random_arrays(seed=0, num_states=6, num_actions=3):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(num_states), (num_states, num_actions))
    r = rng.normal(size=(num_states, num_actions))
    return p, r


def np_optimal_values(p, r, gamma=0.9):
    v = np.zeros(r.shape[0])
    for _ in range(2000):
        v = (r + gamma * p @ v).max(axis=1)
    return v


def test_save_load_and_make_round_trip(tmp_path):
    p, r = random_arrays()
    path = str(tmp_path / "m.npz")
    mdp.save(path, p, r)
    env, params = envs.make(f"mdp:{path}", max_steps_in_episode=7)
    assert (env.num_states, env.num_actions, params.max_steps_in_episode) == (6, 3, 7)
    np.testing.assert_array_equal(env.transition, p)
    np.testing.assert_array_equal(env.rewards, r)
    assert envs.env_options(f"mdp:{path}") == {"max_steps_in_episode": 100}
    dense_p, dense_r = env.tabular_model(params)
    np.testing.assert_allclose(np.asarray(dense_p), p, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dense_r), r, atol=1e-6)
    assert "mdp:<file.npz>" in envs.list_envs()


def test_one_by_two_example_matches_the_grid_world(tmp_path):
    """The book's 1x2 example written as arrays equals the grid world with three actions."""
    grid, params = envs.make("gridworld", layout=".T", actions="left,stay,right")
    p, r = (np.asarray(x, np.float64) for x in grid.tabular_model(params))
    path = str(tmp_path / "one_by_two.npz")
    mdp.save(path, p, r)
    env, _ = envs.make(f"mdp:{path}")
    np.testing.assert_array_equal(env.transition, p)
    np.testing.assert_array_equal(env.rewards, r)


P_OK, R_OK = random_arrays(1, 3, 2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(transition=P_OK[:, :, :2], rewards=R_OK), "P must have shape \\[S, A, S\\]"),
    (dict(transition=P_OK[0], rewards=R_OK), "P must have shape"),
    (dict(transition=P_OK, rewards=R_OK[:2]), "R must have shape \\[S, A\\] = \\(3, 2\\)"),
    (dict(transition=P_OK * 0.9, rewards=R_OK), "row P\\[0, 0, :\\] sums to 0.9"),
    (dict(transition=np.where(np.arange(3) == 0, 1.5, -0.25) * np.ones((3, 2, 1)),
          rewards=R_OK), "P\\[0, 0, 1\\] = -0.25 is negative"),
    (dict(transition=np.where(P_OK > 0.5, np.nan, P_OK), rewards=R_OK), "non-finite entry"),
    (dict(transition=P_OK, rewards=np.full((3, 2), np.inf)), "R has a non-finite entry"),
    (dict(transition=P_OK, rewards=[["a", "b"]] * 3), "R is not a numeric array"),
    (dict(transition=P_OK, rewards=R_OK, start=[0.5, 0.2, 0.2]), "start must be a distribution"),
    (dict(transition=P_OK, rewards=R_OK, start=[1.0, 0.0]), "start must be a distribution"),
    (dict(transition=P_OK, rewards=R_OK, terminal=[True, False, False]),
     "terminal state 0 must be absorbing with zero reward"),
    (dict(transition=P_OK, rewards=R_OK, terminal=[1.5, 0, 0]), "terminal must be a bool array"),
])
def test_bad_arrays_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mdp.ArrayMDP(**kwargs)


def test_bad_files_raise_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="missing.npz.*no such file"):
        envs.make(f"mdp:{missing}")
    with pytest.raises(ValueError, match="needs the path"):
        envs.make("mdp:")
    wrong_keys = str(tmp_path / "keys.npz")
    np.savez(wrong_keys, P=P_OK, rewards=R_OK)
    with pytest.raises(ValueError, match="keys.npz.*missing \\['R'\\], unknown \\['rewards'\\]"):
        envs.make(f"mdp:{wrong_keys}")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="garbage.npz.*not a readable .npz"):
        envs.make(f"mdp:{garbage}")
    bad_rows = str(tmp_path / "rows.npz")
    np.savez(bad_rows, P=P_OK * 2, R=R_OK)
    with pytest.raises(ValueError, match="rows.npz.*sums to 2, not 1"):
        envs.make(f"mdp:{bad_rows}")
    path = str(tmp_path / "ok.npz")
    mdp.save(path, P_OK, R_OK)
    with pytest.raises(ValueError, match="valid options: max_steps_in_episode"):
        envs.make(f"mdp:{path}", slip_prob=0.1)
    with pytest.raises(ValueError, match="start must be a distribution"):
        mdp.save(path, P_OK, R_OK, start=[1, 1, 1])


def test_sampled_transitions_follow_p():
    """Next-state frequencies of env.step from (s, a) = (2, 1) match P[2, 1, :] (3 std errors);
    the reward is R[2, 1]; start states follow `start`; terminal states end episodes."""
    p, r = random_arrays(3, 4, 2)
    p[3] = 0.0
    p[3, :, 3] = 1.0
    r[3] = 0.0
    start = np.array([0.5, 0.5, 0.0, 0.0])
    env = mdp.ArrayMDP(p, r, start=start, terminal=[False, False, False, True])
    params = env.default_params
    n = 4000
    _, state = env.reset_to(2)
    step = jax.jit(jax.vmap(lambda k: env.step(k, state, 1, params)))
    obs, _, reward, terminated, _, info = step(jax.random.split(jax.random.key(0), n))
    final = np.asarray(info["final_observation"])
    freq = np.bincount(final, minlength=4) / n
    se = np.sqrt(p[2, 1] * (1 - p[2, 1]) / n)
    assert np.all(np.abs(freq - p[2, 1]) <= 3 * se + 1e-12), (freq, p[2, 1])
    np.testing.assert_allclose(np.asarray(reward), r[2, 1], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(terminated), final == 3)
    # After a terminal step the env restarts from `start` (states 0 and 1 only).
    assert set(np.asarray(obs)[final == 3].tolist()) <= {0, 1}
    starts = jax.vmap(lambda k: env.reset(k, params)[0])(jax.random.split(jax.random.key(1), 200))
    assert set(np.asarray(starts).tolist()) == {0, 1}


@pytest.mark.parametrize("seed", [0, 1])
def test_dynamic_programming_on_arrays_float64(tmp_path, seed):
    """value_iteration and policy_iteration on `mdp:file` give numpy's v* to 1e-9 in float64."""
    p, r = random_arrays(seed, 8, 3)
    path = str(tmp_path / "m.npz")
    mdp.save(path, p, r)
    v_star = np_optimal_values(p, r)
    with jax.enable_x64(True):
        for algo, n in ((vi, 400), (pi_algo, 20)):
            config = algo.default_config()
            task = algo.make_task(f"mdp:{path}", config)
            assert common.model_of(task).probs.dtype == jnp.float64
            state, _ = run_updates(algo, config, task, jax.random.key(0), n)
            np.testing.assert_allclose(np.asarray(state.values), v_star, atol=1e-9,
                                       err_msg=algo.__name__)


def test_grid_world_is_an_array_mdp_too():
    """The book grid's dense model as arrays: the same v* and greedy-policy quality (float32)."""
    grid = GridWorld("book")
    p, r = (np.asarray(x, np.float64) for x in grid.tabular_model(grid.default_params))
    env = mdp.ArrayMDP(p, r)
    task = common.Task(env, env.default_params)
    state, _ = run_updates(vi, vi.default_config(), task, jax.random.key(0), 200)
    np.testing.assert_allclose(np.asarray(state.values), np_optimal_values(p, r), atol=1e-4)
    metrics = vi.evaluate(state, None, vi.default_config(), task)
    assert abs(float(metrics["optimality_gap"])) <= float(metrics["gap_resolution"])
