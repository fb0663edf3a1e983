"""Wrappers done once for every online algorithm: episode statistics, action clipping, batching
and observation normalization, all pure (state in, state out) so whole training loops jit.

    env = VecEnv(ClipAction(EpisodeStats(env)), num_envs)    # what online algorithms step
    env = NormalizeObservation(env)                           # optional running mean/std

`VecEnv.step` returns the gymnax 1.x six values batched over envs; `info` carries
`episode_return` / `episode_length` of episodes that just ended and the mask `episode_done`
(from `EpisodeStats`), and `final_observation` for bootstrapping through truncation.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces


@struct.dataclass
class EpisodeStatsState:
    env_state: Any
    episode_return: jax.Array  # running return of the current episode
    episode_length: jax.Array  # int32
    last_return: jax.Array  # return of the last finished episode (0 before the first)
    last_length: jax.Array  # int32


class EpisodeStats:
    """Tracks undiscounted returns and lengths; reports them in info when an episode ends."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, key, params):
        obs, env_state = self.env.reset(key, params)
        return obs, EpisodeStatsState(env_state, jnp.float32(0.0), jnp.int32(0),
                                      jnp.float32(0.0), jnp.int32(0))

    def step(self, key, state: EpisodeStatsState, action, params):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params)
        done = terminated | truncated
        ret = state.episode_return + reward.astype(jnp.float32)
        length = state.episode_length + 1
        last_return = jnp.where(done, ret, state.last_return)
        last_length = jnp.where(done, length, state.last_length).astype(jnp.int32)
        info = {**info, "episode_done": done, "episode_return": ret, "episode_length": length,
                "last_episode_return": last_return, "last_episode_length": last_length}
        new_state = EpisodeStatsState(env_state, jnp.where(done, 0.0, ret),
                                      jnp.where(done, 0, length).astype(jnp.int32),
                                      last_return, last_length)
        return obs, new_state, reward, terminated, truncated, info


class ClipAction:
    """Clips continuous actions to the action space's bounds before stepping."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, key, params):
        return self.env.reset(key, params)

    def step(self, key, state, action, params):
        space = self.env.action_space(params)
        if isinstance(space, spaces.Box):
            action = jnp.clip(action, space.low, space.high)
        return self.env.step(key, state, action, params)


class VecEnv:
    """`num_envs` copies stepped in lockstep (vmap); each auto-resets on its own."""

    def __init__(self, env, num_envs: int):
        self.env = env
        self.num_envs = num_envs

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, key, params):
        return jax.vmap(self.env.reset, in_axes=(0, None))(
            jax.random.split(key, self.num_envs), params)

    def step(self, key, state, action, params):
        return jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(key, self.num_envs), state, action, params)


@struct.dataclass
class RunningMeanStd:
    """Running mean / variance over batches (parallel Welford; Chan et al. 1979)."""
    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape) -> "RunningMeanStd":
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.float32(1e-4))

    def update(self, batch: jax.Array) -> "RunningMeanStd":
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta ** 2 * self.count * b_count / total
        return RunningMeanStd(mean, m2 / total, total)

    def normalize(self, x: jax.Array, clip: float = 10.0) -> jax.Array:
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)


@struct.dataclass
class NormalizedState:
    env_state: Any
    obs_rms: RunningMeanStd


class NormalizeObservation:
    """Normalizes a VecEnv's observations with statistics shared across its envs."""

    def __init__(self, vec_env: VecEnv):
        self.env = vec_env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, key, params):
        obs, env_state = self.env.reset(key, params)
        rms = RunningMeanStd.create(obs.shape[1:]).update(obs)
        return rms.normalize(obs), NormalizedState(env_state, rms)

    def step(self, key, state: NormalizedState, action, params):
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params)
        rms = state.obs_rms.update(obs)
        info = {**info, "final_observation": rms.normalize(info["final_observation"])}
        return (rms.normalize(obs), NormalizedState(env_state, rms), reward, terminated,
                truncated, info)


def make_vec_env(env, num_envs: int, normalize_obs: bool = False):
    """The standard stack: episode statistics, action clipping, batching, normalization."""
    vec = VecEnv(ClipAction(EpisodeStats(env)), num_envs)
    return NormalizeObservation(vec) if normalize_obs else vec


def episode_metrics(info) -> dict[str, jax.Array]:
    """Scalar training-episode statistics of a batch of steps with leaves [T, num_envs].

    `episode_return` is the mean over envs of the last finished episode's return at the end of
    the batch (it lags, but is never a made-up 0 when no episode ended in this batch);
    `episodes_done` counts episodes that ended in the batch. Reduced here so metrics are never
    stacked per env step.
    """
    return {"episode_return": info["last_episode_return"][-1].mean(),
            "episode_length": info["last_episode_length"][-1].astype(jnp.float32).mean(),
            "episodes_done": info["episode_done"].sum().astype(jnp.float32)}
