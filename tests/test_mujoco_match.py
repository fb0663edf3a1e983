"""envs.mujoco_match: gymnasium's Hopper-v5 / HalfCheetah-v5 / Walker2d-v5 on MJX, checked
against gymnasium's own envs (MuJoCo's C library) step by step.

Skipped without the brax extra (mujoco-mjx and gymnasium). The tests that step the physics
compile MJX's dynamics (1-3 minutes per env on a loaded 2-core CPU): they are marked slow
(`pytest -m slow tests/test_mujoco_match.py`). Tolerances: MJX runs in float32, MuJoCo in
float64, so the first steps agree to float32 rounding of values of size ~10 (measured, seed 0:
max |obs diff| after one step 2e-7 hopper, 1e-6 halfcheetah, 5e-5 walker2d; over the first 5
steps below 1e-4), then contacts amplify it (halfcheetah: 0.3 within 30 steps): after step 5
only the termination flags are compared.
"""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.brax_envs import BraxEnv


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


HAVE_EXTRA = _have("mujoco.mjx") and _have("gymnasium") and _have("brax")
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the optional brax extra (mujoco-mjx, "
                                 "gymnasium) is not installed")
STEPS = 30


def test_gymnasium_model_needs_the_mjx_backend_and_a_known_model():
    with pytest.raises(ValueError, match="backend must be 'mjx', got 'generalized'"):
        BraxEnv("hopper", backend="generalized", model="gymnasium")
    with pytest.raises(ValueError, match="unknown locomotion model 'mujoco'.*brax, gymnasium"):
        BraxEnv("hopper", backend="mjx", model="mujoco")


@needs_extra
@pytest.mark.parametrize("name", ["hopper", "halfcheetah", "walker2d"])
def test_specs_are_gymnasiums_defaults(name):
    import gymnasium

    from envs.mujoco_match import SPECS

    spec = SPECS[name]
    gym_env = gymnasium.make(spec.gymnasium_id).unwrapped
    try:
        assert gym_env.fullpath.endswith(spec.xml_file)
        assert gym_env.frame_skip == spec.frame_skip
        assert gym_env._forward_reward_weight == spec.forward_reward_weight
        assert gym_env._ctrl_cost_weight == spec.ctrl_cost_weight
        assert gym_env._reset_noise_scale == spec.reset_noise_scale
        assert getattr(gym_env, "_healthy_reward", 0.0) == spec.healthy_reward
        assert getattr(gym_env, "_terminate_when_unhealthy", False) == \
            spec.terminate_when_unhealthy
        for attr in ("healthy_z_range", "healthy_angle_range", "healthy_state_range"):
            assert getattr(gym_env, f"_{attr}", None) == getattr(spec, attr), attr
        env, params = envs.make(f"brax-{name}", backend="mjx", model="gymnasium")
        assert env.observation_space(params).shape == gym_env.observation_space.shape
        assert env.action_space(params).shape == gym_env.action_space.shape
        assert params.max_steps_in_episode == 1000
    finally:
        gym_env.close()


@needs_extra
def test_reset_draws_gymnasiums_distribution():
    from envs.mujoco_match import MjxLocomotion

    keys = jax.random.split(jax.random.key(0), 2000)
    for name, c in (("hopper", 5e-3), ("halfcheetah", 0.1)):
        env = MjxLocomotion(name)
        states = jax.jit(jax.vmap(env.reset))(keys)
        dq = np.asarray(states.data.qpos) - env.init_qpos
        qvel = np.asarray(states.data.qvel)
        assert np.all(np.abs(dq) <= c) and abs(dq.std() - c / np.sqrt(3)) < 0.05 * c
        if name == "halfcheetah":  # c N(0, 1)
            assert abs(qvel.std() - c) < 0.05 * c and np.abs(qvel).max() > c
        else:  # U(-c, c)
            assert np.all(np.abs(qvel) <= c) and abs(qvel.std() - c / np.sqrt(3)) < 0.05 * c
        np.testing.assert_array_equal(np.asarray(states.obs)[:, :env.mj_model.nq - 1],
                                      np.asarray(states.data.qpos)[:, 1:])
        assert not np.any(np.asarray(states.done))


@needs_extra
@pytest.mark.slow
@pytest.mark.parametrize("name", ["hopper", "halfcheetah", "walker2d"])
def test_steps_match_gymnasium(name):
    from envs.mujoco_match import compare_with_gymnasium

    out = compare_with_gymnasium(name, STEPS, seed=0)
    assert out["obs0_diff"] < 1e-6  # the same state, rounded to float32
    assert out["obs_diff"][0] < 1e-4 and out["reward_diff"][0] < 1e-5
    assert np.max(out["obs_diff"][:5]) < 1e-3 and np.max(out["reward_diff"][:5]) < 1e-4
    np.testing.assert_array_equal(out["terminated_gym"], out["terminated_mjx"])
    if name == "hopper":  # random torques topple the hopper: both terminate at the same step
        assert out["terminated_gym"].any()


@needs_extra
@pytest.mark.slow
def test_gymnax_view_terminates_and_auto_resets():
    env, params = envs.make("brax-hopper", backend="mjx", model="gymnasium",
                            max_steps_in_episode=STEPS)
    obs, state = env.reset(jax.random.key(0), params)

    def step(carry, a):
        nobs, state, r, term, trunc, info = env.step(jax.random.key(1), carry, a, params)
        return state, (r, term, trunc, info["final_observation"])

    # Full negative torques topple the hopper within a few dozen steps: terminated, then a
    # fresh reset state (time 0).
    state, (r, term, trunc, final) = jax.jit(
        lambda s: jax.lax.scan(step, s, -jnp.ones((STEPS, 3))))(state)
    falls = np.flatnonzero(np.asarray(term))
    assert obs.shape == (11,) and np.all(np.isfinite(np.asarray(r)))
    assert falls.size >= 1 and not np.asarray(trunc)[: falls[0] + 1].any()
    fallen = np.asarray(final)[falls[0]]  # qpos[1:3] = z, angle of the fallen robot
    assert not (fallen[0] > 0.7 and abs(fallen[1]) < 0.2 and np.all(np.abs(fallen[1:]) < 100))
