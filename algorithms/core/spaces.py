"""Observation and action spaces of a task `(env, params)`, and the [-1, 1] action convention.

Continuous-action policies in this codebase act in the normalised box a in [-1, 1]^|A|; the
environment receives `center + scale * a` with center = (high + low) / 2 and
scale = (high - low) / 2 of its Box action space.
"""
from __future__ import annotations

import jax
import numpy as np
from gymnax.environments import spaces


def is_discrete(env, params) -> bool:
    return isinstance(env.action_space(params), spaces.Discrete)


def obs_ndim(env, params) -> int:
    """Rank of one observation (1 for vectors, 3 for MinAtar images)."""
    return len(env.observation_space(params).shape)


def num_actions(env, params) -> int:
    """|A| of a Discrete space, or the dimension of a Box space."""
    space = env.action_space(params)
    return int(space.n) if isinstance(space, spaces.Discrete) else int(space.shape[0])


def box_center_scale(space) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) of a Box space as float32 arrays of its shape: env = center + scale * a."""
    low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape)
    high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape)
    return (high + low) / 2.0, (high - low) / 2.0


def to_env_action(a: jax.Array, center, scale) -> jax.Array:
    """A normalised action in [-1, 1] mapped to the environment's box."""
    return center + scale * a
