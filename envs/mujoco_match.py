r"""Gymnasium's Hopper-v5, HalfCheetah-v5 and Walker2d-v5 re-implemented on MJX, in JAX.

    env = MjxLocomotion("hopper")        # needs the optional extra: pip install -e '.[brax]'
    state = env.reset(jax.random.key(0))
    state = env.step(state, jnp.zeros(env.action_size))   # state.obs, state.reward, state.done

MJX (`mujoco.mjx`) is MuJoCo's own dynamics written in JAX, so batches of robots step jitted
and vmapped on an accelerator. This module loads the very XML files gymnasium ships
(gymnasium/envs/mujoco/assets) and applies gymnasium's v5 rules on top of the physics, so data
made here has the states, observations, rewards and terminations of the gymnasium envs that
D4RL-style policies are evaluated on (`envs.gymnasium_env`). Per step, with the action a
(MuJoCo clamps the control to the actuators' ctrlrange; the cost uses a as given):

    frame_skip physics steps with ctrl = a, dt = frame_skip * timestep
    obs     = concat(qpos[1:], qvel)         qvel clipped to [-10, 10] for hopper and walker2d
    reward  = forward_reward_weight * (x_after - x_before) / dt
              + healthy_reward * is_healthy - ctrl_cost_weight * sum(a^2)
    done    = not is_healthy                 (never for halfcheetah)

is_healthy, with z = qpos[1] and angle = qpos[2], every inequality strict:
  hopper    0.7 < z, -0.2 < angle < 0.2, every entry of concat(qpos[2:], qvel) in (-100, 100)
  walker2d  0.8 < z < 2.0, -1 < angle < 1
The reset draws qpos = qpos0 + U(-c, c) and qvel = U(-c, c) (c = 5e-3; halfcheetah: c = 0.1
and qvel = c N(0, 1)). The time limit (1000 steps, D4RL's) is the caller's
(`envs.brax_envs.BraxEnv` puts it in gymnax's `max_steps_in_episode`).

Where it differs from gymnasium: MJX computes in float32 where MuJoCo's C library uses float64,
so trajectories agree to float32 rounding at first and then drift apart (contact dynamics are
chaotic); `compare_with_gymnasium` measures it. Gymnasium calls `mj_forward` after setting a
reset state; here the reset state's derived quantities are left to the first `mjx.step`, which
computes them from qpos / qvel before integrating (the same numbers). The reset draws use JAX's
random keys, not gymnasium's NumPy generator (same distributions, other samples).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_EXTRA = "pip install -e '.[brax]' (mujoco-mjx for the physics, gymnasium for its XML models)"


@dataclasses.dataclass(frozen=True)
class LocomotionSpec:
    """Gymnasium v5 defaults of one locomotion env (gymnasium/envs/mujoco/<env>_v5.py)."""
    gymnasium_id: str
    xml_file: str                 # in gymnasium/envs/mujoco/assets
    frame_skip: int
    forward_reward_weight: float
    ctrl_cost_weight: float
    healthy_reward: float         # per healthy step (0: no health term)
    terminate_when_unhealthy: bool
    healthy_z_range: tuple[float, float] | None
    healthy_angle_range: tuple[float, float] | None
    healthy_state_range: tuple[float, float] | None  # on concat(qpos[2:], qvel)
    qvel_clip: float | None       # observation clips qvel to [-qvel_clip, qvel_clip]
    reset_noise_scale: float
    qvel_reset_noise: str         # "uniform": U(-c, c); "normal": c N(0, 1)


SPECS = {
    "hopper": LocomotionSpec(
        "Hopper-v5", "hopper.xml", frame_skip=4, forward_reward_weight=1.0,
        ctrl_cost_weight=1e-3, healthy_reward=1.0, terminate_when_unhealthy=True,
        healthy_z_range=(0.7, float("inf")), healthy_angle_range=(-0.2, 0.2),
        healthy_state_range=(-100.0, 100.0), qvel_clip=10.0, reset_noise_scale=5e-3,
        qvel_reset_noise="uniform"),
    "halfcheetah": LocomotionSpec(
        "HalfCheetah-v5", "half_cheetah.xml", frame_skip=5, forward_reward_weight=1.0,
        ctrl_cost_weight=0.1, healthy_reward=0.0, terminate_when_unhealthy=False,
        healthy_z_range=None, healthy_angle_range=None, healthy_state_range=None,
        qvel_clip=None, reset_noise_scale=0.1, qvel_reset_noise="normal"),
    "walker2d": LocomotionSpec(
        "Walker2d-v5", "walker2d_v5.xml", frame_skip=4, forward_reward_weight=1.0,
        ctrl_cost_weight=1e-3, healthy_reward=1.0, terminate_when_unhealthy=True,
        healthy_z_range=(0.8, 2.0), healthy_angle_range=(-1.0, 1.0),
        healthy_state_range=None, qvel_clip=10.0, reset_noise_scale=5e-3,
        qvel_reset_noise="uniform"),
}


def _mujoco_modules():
    """(mujoco, mujoco.mjx, gymnasium's assets folder), or an ImportError naming the extra."""
    try:
        import gymnasium
        import mujoco
        from mujoco import mjx
    except ImportError as e:
        raise ImportError(f"the MJX locomotion envs ({', '.join(SPECS)}) need {_EXTRA}; "
                          f"missing: {e.name}") from e
    assets = pathlib.Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets"
    return mujoco, mjx, assets


@struct.dataclass
class LocomotionState:
    """One env's state, shaped like brax.envs.State for `envs.brax_envs.BraxEnv`."""
    data: Any            # mjx.Data (float32)
    obs: jax.Array       # [observation_size] float32
    reward: jax.Array    # float32 reward of the step that led here (0 after a reset)
    done: jax.Array      # float32, 1.0 when the robot is unhealthy (terminated)


class MjxLocomotion:
    """gymnasium's `SPECS[name].gymnasium_id` on MJX, with brax's env interface (reset(key),
    step(state, action), observation_size, action_size); pure functions, jit / vmap freely.

    Args:
      name: one of SPECS ("hopper", "halfcheetah", "walker2d").
    """

    def __init__(self, name: str):
        if name not in SPECS:
            raise ValueError(f"unknown MJX locomotion env {name!r}; valid: {', '.join(SPECS)}")
        mujoco, mjx, assets = _mujoco_modules()
        self.name, self.spec = name, SPECS[name]
        self._mjx = mjx
        self.mj_model = mujoco.MjModel.from_xml_path(str(assets / self.spec.xml_file))
        # Concrete device arrays even when the env is first built while a jit is tracing
        # (BraxEnv builds it lazily), so no tracer is kept on the instance.
        with jax.ensure_compile_time_eval():
            self.model = mjx.put_model(self.mj_model)
            self._data0 = mjx.make_data(self.model)
        self.dt = float(self.mj_model.opt.timestep) * self.spec.frame_skip
        self.init_qpos = np.asarray(self.mj_model.qpos0, np.float32)
        self.observation_size = int(self.mj_model.nq - 1 + self.mj_model.nv)
        self.action_size = int(self.mj_model.nu)

    def observe(self, data) -> jax.Array:
        """concat(qpos[1:], qvel) with gymnasium's velocity clip; float32 [observation_size]."""
        qvel = data.qvel
        if self.spec.qvel_clip is not None:
            qvel = jnp.clip(qvel, -self.spec.qvel_clip, self.spec.qvel_clip)
        return jnp.concatenate([data.qpos[1:], qvel]).astype(jnp.float32)

    def is_healthy(self, data) -> jax.Array:
        """Gymnasium's health check (module docstring); a bool scalar (True for halfcheetah)."""
        s = self.spec
        ok = jnp.bool_(True)
        z, angle = data.qpos[1], data.qpos[2]
        for value, bounds in ((z, s.healthy_z_range), (angle, s.healthy_angle_range)):
            if bounds is not None:
                ok &= (bounds[0] < value) & (value < bounds[1])
        if s.healthy_state_range is not None:
            state = jnp.concatenate([data.qpos[2:], data.qvel])
            lo, hi = s.healthy_state_range
            ok &= jnp.all((lo < state) & (state < hi))
        return ok

    def state_at(self, qpos, qvel) -> LocomotionState:
        """The state with these joint positions [nq] and velocities [nv] (gymnasium's
        `set_state` after `mj_resetData`): zero controls, no warm start."""
        data = self._data0.replace(qpos=jnp.asarray(qpos, jnp.float32),
                                   qvel=jnp.asarray(qvel, jnp.float32))
        zero = jnp.float32(0.0)
        return LocomotionState(data, self.observe(data), zero, zero)

    def reset(self, key) -> LocomotionState:
        """gymnasium's `reset_model` distribution (module docstring), drawn from `key`."""
        c = self.spec.reset_noise_scale
        k_pos, k_vel = jax.random.split(key)
        nq, nv = self.mj_model.nq, self.mj_model.nv
        qpos = self.init_qpos + jax.random.uniform(k_pos, (nq,), minval=-c, maxval=c)
        if self.spec.qvel_reset_noise == "normal":
            qvel = c * jax.random.normal(k_vel, (nv,))
        else:
            qvel = jax.random.uniform(k_vel, (nv,), minval=-c, maxval=c)
        return self.state_at(qpos, qvel)

    def step(self, state: LocomotionState, action) -> LocomotionState:
        """frame_skip MuJoCo steps with ctrl = action, then gymnasium's reward and termination."""
        s = self.spec
        action = jnp.asarray(action, jnp.float32)
        data = state.data.replace(ctrl=action)
        x_before = data.qpos[0]
        data = jax.lax.fori_loop(0, s.frame_skip,
                                 lambda _, d: self._mjx.step(self.model, d), data)
        x_velocity = (data.qpos[0] - x_before) / self.dt
        healthy = self.is_healthy(data)
        reward = (s.forward_reward_weight * x_velocity + s.healthy_reward * healthy
                  - s.ctrl_cost_weight * jnp.sum(jnp.square(action)))
        done = ~healthy if s.terminate_when_unhealthy else jnp.bool_(False)
        return LocomotionState(data, self.observe(data), reward.astype(jnp.float32),
                               done.astype(jnp.float32))


@functools.lru_cache(maxsize=3)
def _jitted_step(name: str):
    env = MjxLocomotion(name)
    return env, jax.jit(env.step)


def compare_with_gymnasium(name: str, num_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Steps gymnasium's env (MuJoCo's C library, float64) and `MjxLocomotion(name)` side by
    side: both from the state of gymnasium's `reset(seed=seed)`, with the same uniform random
    actions in [-1, 1] (NumPy seed `seed`), for `num_steps` steps, neither reset on
    termination (the physics goes on after a fall).

    Returns per step t = 1..num_steps, arrays [num_steps]: "obs_diff" (max |obs_gym - obs_mjx|
    over the observation), "reward_diff" (|r_gym - r_mjx|), "terminated_gym",
    "terminated_mjx" (bool), "qpos_diff" (max |qpos_gym - qpos_mjx|, x included); and "obs0_diff"
    (the reset observations', a float).
    """
    import gymnasium

    env, step = _jitted_step(name)
    gym_env = gymnasium.make(env.spec.gymnasium_id).unwrapped
    try:
        gym_obs, _ = gym_env.reset(seed=seed)
        state = env.state_at(gym_env.data.qpos, gym_env.data.qvel)
        out = {"obs0_diff": float(np.max(np.abs(gym_obs - np.asarray(state.obs))))}
        actions = np.random.default_rng(seed).uniform(-1.0, 1.0, (num_steps, env.action_size))
        rows = []
        for action in actions.astype(np.float32):
            gym_obs, gym_reward, gym_terminated, _, _ = gym_env.step(action.astype(np.float64))
            state = step(state, action)
            rows.append((np.max(np.abs(gym_obs - np.asarray(state.obs))),
                         abs(gym_reward - float(state.reward)), bool(gym_terminated),
                         bool(state.done > 0.5),
                         np.max(np.abs(gym_env.data.qpos - np.asarray(state.data.qpos)))))
    finally:
        gym_env.close()
    for i, key in enumerate(("obs_diff", "reward_diff", "terminated_gym", "terminated_mjx",
                             "qpos_diff")):
        out[key] = np.asarray([r[i] for r in rows])
    return out
