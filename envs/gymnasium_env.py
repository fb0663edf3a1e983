"""Gymnasium MuJoCo environments behind the gymnax interface, simulated on the host.

    env, params = make("gymnasium:Hopper-v5")      # the optional mujoco extra
    obs, state = env.reset(key, params)             # jittable, vmappable
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

The simulator state lives in the JAX state, not on the host: `state.physics` holds MuJoCo's
integration state (`mj_getState(..., mjSTATE_INTEGRATION)`: time, qpos, qvel, actuator
activations, controls, the solver's warm start; float64) as its raw bits in uint32 words, so
nothing is rounded to float32 between steps. `reset` and `step` are `jax.pure_callback`s of
pure host functions: step restores that state into one host `gymnasium` env
(`mj_setState`), calls the unwrapped env's own `step` (its reward, termination and
observation code, unchanged) and reads the new state back. A result depends only on the
callback's inputs, so the callbacks batch under `vmap` (`vmap_method="broadcast_all"`: the host
function receives every batch axis at once, seeds x episodes, and loops over them) and no host
bookkeeping ties an env instance to a seed or an episode. Restoring the integration state
reproduces uninterrupted stepping bit for bit (tests/test_gymnasium_env.py checks it against
the gymnasium env stepped on its own).

gymnax conventions: `step` auto-resets (the returned observation and state are a fresh
episode's when the episode ended; `info["final_observation"]` is the last one); `truncated` is
`state.time >= params.max_steps_in_episode`, the gymnasium spec's `max_episode_steps` (its
TimeLimit wrapper, not used here). Reset seeds come from the key: gymnasium's
`reset(seed=bits(key))`, so an episode is a function of its key, as in gymnax.
"""
from __future__ import annotations

import difflib
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

PREFIX = "gymnasium:"
INSTALL = "pip install -e '.[mujoco]' (mujoco and gymnasium[mujoco])"


def is_gymnasium_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


@struct.dataclass
class EnvState:
    physics: jax.Array  # uint32 [2 * state size]: the float64 integration state's bits
    time: jax.Array  # int32: steps taken in this episode


@struct.dataclass
class EnvParams:
    max_steps_in_episode: int = struct.field(pytree_node=False, default=1000)


def _import_gymnasium():
    try:
        import gymnasium
        import mujoco  # noqa: F401 - gymnasium's MuJoCo envs need it
    except ImportError as e:
        raise ImportError(f"gymnasium MuJoCo environments need the optional mujoco extra "
                          f"({e.name} is not installed): {INSTALL}") from None
    return gymnasium


def _registered_ids(gymnasium) -> list[str]:
    return sorted(gymnasium.registry)


class _HostSimulator:
    """One gymnasium env on the host; every call restores the state it is given."""

    def __init__(self, env_id: str):
        import mujoco

        gymnasium = _import_gymnasium()
        self.env = gymnasium.make(env_id).unwrapped
        self.model, self.data = self.env.model, self.env.data
        self.spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self.state_size = int(mujoco.mj_stateSize(self.model, self.spec))
        self._state = np.empty(self.state_size, np.float64)
        self._lock = threading.Lock()  # one env: calls from several XLA threads take turns

    def _get(self) -> np.ndarray:
        import mujoco

        mujoco.mj_getState(self.model, self.data, self._state, self.spec)
        return self._state.view(np.uint32).copy()

    def _set(self, words: np.ndarray) -> None:
        import mujoco

        state = np.ascontiguousarray(words, np.uint32).view(np.float64)
        mujoco.mj_setState(self.model, self.data, state, self.spec)

    def _reset_one(self, seed: int):
        obs, _ = self.env.reset(seed=int(seed))
        return np.asarray(obs, np.float32), self._get()

    def reset(self, seeds: np.ndarray):
        """seeds uint32 [...] -> (obs float32 [..., obs_dim], physics uint32 [..., 2n])."""
        with self._lock:
            flat = np.asarray(seeds).reshape(-1)
            out = [self._reset_one(s) for s in flat]
        obs = np.stack([o for o, _ in out]).reshape(seeds.shape + out[0][0].shape)
        physics = np.stack([p for _, p in out]).reshape(seeds.shape + (-1,))
        return obs, physics

    def step(self, physics, time, action, reset_seed, max_steps):
        """One step of every batch element (auto-reset as gymnax does); see `GymnasiumEnv.step`."""
        batch = np.shape(time)
        n = int(np.prod(batch, dtype=np.int64))
        physics = np.asarray(physics).reshape(n, -1)
        action = np.asarray(action, np.float64).reshape(n, -1)
        time = np.asarray(time).reshape(n)
        reset_seed = np.asarray(reset_seed).reshape(n)
        results = []
        with self._lock:
            for i in range(n):
                self._set(physics[i])
                obs, reward, terminated, _, _ = self.env.step(action[i])
                final = np.asarray(obs, np.float32)
                truncated = time[i] + 1 >= max_steps
                if terminated or truncated:
                    obs, words = self._reset_one(reset_seed[i])
                    t = 0
                else:
                    obs, words, t = final, self._get(), time[i] + 1
                results.append((obs, words, t, reward, terminated, truncated, final))
        cols = list(zip(*results))
        obs_shape = results[0][0].shape
        return (np.stack(cols[0]).reshape(batch + obs_shape),
                np.stack(cols[1]).reshape(batch + (-1,)),
                np.asarray(cols[2], np.int32).reshape(batch),
                np.asarray(cols[3], np.float32).reshape(batch),
                np.asarray(cols[4], bool).reshape(batch),
                np.asarray(cols[5], bool).reshape(batch),
                np.stack(cols[6]).reshape(batch + obs_shape))


def _box(space) -> spaces.Box:
    low = np.asarray(space.low, np.float32)
    high = np.asarray(space.high, np.float32)
    return spaces.Box(low, high, tuple(space.shape), jnp.float32)


class GymnasiumEnv:
    """A gymnasium MuJoCo env with the gymnax interface (reset / step / spaces / params)."""

    def __init__(self, env_id: str):
        self.env_id = env_id
        self._host = _HostSimulator(env_id)
        gym_env = self._host.env
        for what, space in (("observation", gym_env.observation_space),
                            ("action", gym_env.action_space)):
            if type(space).__name__ != "Box":
                raise ValueError(f"{PREFIX}{env_id}: {what} space {space} is not a Box; only "
                                 "array observations and continuous actions are supported")
        self._obs_space = _box(gym_env.observation_space)
        self._action_space = _box(gym_env.action_space)
        spec = gym_env.spec
        self._max_steps = int(spec.max_episode_steps or 1000) if spec is not None else 1000
        self._physics = jax.ShapeDtypeStruct((2 * self._host.state_size,), jnp.uint32)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.env_id}"

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(max_steps_in_episode=self._max_steps)

    @property
    def num_actions(self) -> int:
        return int(np.prod(self._action_space.shape))

    def observation_space(self, params=None) -> spaces.Box:
        return self._obs_space

    def action_space(self, params=None) -> spaces.Box:
        return self._action_space

    def _obs_struct(self, batch=()):
        return jax.ShapeDtypeStruct(tuple(batch) + self._obs_space.shape, jnp.float32)

    def reset(self, key: jax.Array, params: EnvParams | None = None):
        """(obs float32 [obs_dim], EnvState) of a fresh episode seeded by `key`."""
        seed = jax.random.bits(key, (), jnp.uint32)
        obs, physics = jax.pure_callback(
            self._host.reset, (self._obs_struct(), self._physics), seed,
            vmap_method="broadcast_all")
        return obs, EnvState(physics=physics, time=jnp.int32(0))

    def step(self, key: jax.Array, state: EnvState, action: jax.Array,
             params: EnvParams | None = None):
        """(obs, state, reward, terminated, truncated, info), gymnax 1.x style (auto-reset)."""
        params = self.default_params if params is None else params
        reset_seed = jax.random.bits(key, (), jnp.uint32)
        max_steps = int(params.max_steps_in_episode)
        scalar = jax.ShapeDtypeStruct((), jnp.float32)
        flag = jax.ShapeDtypeStruct((), jnp.bool_)
        out = (self._obs_struct(), self._physics, jax.ShapeDtypeStruct((), jnp.int32), scalar,
               flag, flag, self._obs_struct())
        obs, physics, time, reward, terminated, truncated, final = jax.pure_callback(
            lambda p, t, a, s: self._host.step(p, t, a, s, max_steps), out,
            state.physics, state.time, jnp.asarray(action, jnp.float32), reset_seed,
            vmap_method="broadcast_all")
        info = {"terminated": terminated, "truncated": truncated, "final_observation": final}
        return obs, EnvState(physics=physics, time=time), reward, terminated, truncated, info


def make(name: str, **options) -> tuple[GymnasiumEnv, EnvParams]:
    """(env, params) for "gymnasium:<id>", e.g. "gymnasium:Hopper-v5".

    options: `max_steps_in_episode` (default: the gymnasium spec's max_episode_steps).
    Raises ImportError naming the extra to install, ValueError for an unknown id (with the
    closest registered ids) or option.
    """
    env_id = name[len(PREFIX):] if is_gymnasium_name(name) else name
    gymnasium = _import_gymnasium()
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as e:
        close = difflib.get_close_matches(env_id, _registered_ids(gymnasium), n=3)
        hint = f" (did you mean {', '.join(PREFIX + c for c in close)}?)" if close else ""
        raise ValueError(f"unknown gymnasium environment {name!r}{hint}: {e}") from None
    unknown = sorted(set(options) - {"max_steps_in_episode"})
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for environment {name!r}; valid "
                         "options: max_steps_in_episode")
    env = GymnasiumEnv(env_id)
    params = env.default_params
    if "max_steps_in_episode" in options:
        params = params.replace(max_steps_in_episode=int(options["max_steps_in_episode"]))
    return env, params


def env_options(name: str) -> dict[str, Any]:
    """The options `make` accepts for `name`, with their defaults."""
    gymnasium = _import_gymnasium()
    env_id = name[len(PREFIX):] if is_gymnasium_name(name) else name
    try:
        steps = gymnasium.spec(env_id).max_episode_steps
    except gymnasium.error.Error:
        steps = None
    return {"max_steps_in_episode": int(steps or 1000)}
