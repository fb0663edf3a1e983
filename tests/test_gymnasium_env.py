"""envs.gymnasium_env: gymnasium MuJoCo envs behind the gymnax interface (the mujoco extra).

Checked against gymnasium itself: the same seed and actions give bit-identical observations,
rewards and terminations; batching over seeds x episodes changes nothing; the evaluation
protocol's mean return is the one a plain gymnasium loop measures. Skipped without the extra,
except the error that names it.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.core import tasks
from algorithms.core.evaluation import evaluate_episodes
from envs import gymnasium_env


def _needs_mujoco():
    pytest.importorskip("mujoco")
    return pytest.importorskip("gymnasium")


def _seed(key) -> int:
    return int(jax.random.bits(key, (), jnp.uint32))


def _actions(n, dim, seed=0, size=0.3):
    return np.random.default_rng(seed).uniform(-size, size, (n, dim)).astype(np.float32)


def test_steps_are_bit_identical_to_gymnasium():
    gym = _needs_mujoco()
    env, params = tasks.make_env("gymnasium:Hopper-v5")
    key = jax.random.key(3)
    obs, state = jax.jit(env.reset)(key, params)
    reference = gym.make("Hopper-v5").unwrapped
    ref_obs, _ = reference.reset(seed=_seed(key))
    np.testing.assert_array_equal(obs, ref_obs.astype(np.float32))
    step = jax.jit(env.step)
    for t, action in enumerate(_actions(40, 3)):
        obs, state, reward, terminated, truncated, info = step(key, state, action, params)
        ref_obs, ref_reward, ref_terminated, _, _ = reference.step(action.astype(np.float64))
        np.testing.assert_array_equal(info["final_observation"], ref_obs.astype(np.float32))
        assert float(reward) == np.float32(ref_reward)
        assert bool(terminated) == ref_terminated and not bool(truncated)
        if ref_terminated:
            break
        assert int(state.time) == t + 1


def test_vmap_over_seeds_and_episodes_equals_one_at_a_time():
    _needs_mujoco()
    env, params = gymnasium_env.make("gymnasium:Hopper-v5")
    keys = jax.random.split(jax.random.key(0), 6).reshape(2, 3)  # [seeds, episodes]
    actions = jnp.asarray(_actions(6, 3, seed=1)).reshape(2, 3, 3)

    def reset_and_step(key, action):
        obs, state = env.reset(key, params)
        return env.step(key, state, action, params)

    batched = jax.jit(jax.vmap(jax.vmap(reset_and_step)))(keys, actions)
    for i in range(2):
        for j in range(3):
            single = reset_and_step(keys[i, j], actions[i, j])
            for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
                np.testing.assert_array_equal(np.asarray(got)[i, j], np.asarray(want))


def test_time_limit_truncates_and_auto_resets_like_gymnax():
    _needs_mujoco()
    env, params = gymnasium_env.make("gymnasium:Hopper-v5", max_steps_in_episode=3)
    assert params.max_steps_in_episode == 3
    assert gymnasium_env.make("gymnasium:Hopper-v5")[1].max_steps_in_episode == 1000
    key = jax.random.key(1)
    obs, state = env.reset(key, params)
    zero = jnp.zeros(3)
    for t in range(3):
        step_key = jax.random.fold_in(key, t)
        obs, state, reward, terminated, truncated, info = env.step(step_key, state, zero, params)
    assert bool(truncated) and not bool(terminated) and int(state.time) == 0
    fresh, _ = env.reset(step_key, params)  # the step's key seeds the next episode
    np.testing.assert_array_equal(obs, fresh)
    assert not np.array_equal(info["final_observation"], obs)


def test_evaluation_protocol_matches_a_gymnasium_loop():
    """evaluate_episodes' mean return (each episode's first completion) on the host env equals
    the return a plain gymnasium loop measures with the same reset seeds and actions."""
    gym = _needs_mujoco()
    env, params = gymnasium_env.make("gymnasium:Hopper-v5", max_steps_in_episode=60)
    action = np.array([0.2, -0.3, 0.1], np.float32)
    key = jax.random.key(7)
    out = jax.jit(lambda k: evaluate_episodes(
        k, env, params, lambda obs, _: jnp.broadcast_to(action, (obs.shape[0], 3)), 3))(key)
    k_reset, _ = jax.random.split(key)
    reference = gym.make("Hopper-v5").unwrapped
    returns, lengths = [], []
    for k in jax.random.split(k_reset, 3):
        reference.reset(seed=_seed(k))
        total, length = 0.0, 0
        while length < 60:
            _, reward, terminated, _, _ = reference.step(action.astype(np.float64))
            total += np.float32(reward)
            length += 1
            if terminated:
                break
        returns.append(total)
        lengths.append(length)
    np.testing.assert_allclose(float(out["return"]), np.mean(returns), rtol=1e-5)
    assert float(out["length"]) == pytest.approx(np.mean(lengths))


def test_unknown_gymnasium_id_names_the_close_ones():
    _needs_mujoco()
    with pytest.raises(ValueError, match=r"unknown gymnasium environment 'gymnasium:Hoper-v5' "
                                         r"\(did you mean gymnasium:Hopper-v5"):
        tasks.make_env("gymnasium:Hoper-v5")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gravity'\]"):
        gymnasium_env.make("gymnasium:Hopper-v5", gravity=1.0)


@pytest.mark.parametrize("module", ["mujoco", "gymnasium"])
def test_missing_extra_names_the_install_command(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[mujoco\]'"):
        tasks.make_env("gymnasium:Hopper-v5")
