"""Episode boundaries in a flat stream of transitions (an offline dataset, a replay buffer).

Row i is the last step of its episode ("an end") when terminals[i] | timeouts[i] (D4RL's
convention: terminals = true termination, timeouts = truncation). Streams that store no
truncation flag (a replay buffer filled by an auto-resetting env, D4RL files read without
timeouts) also end an episode where next_observations[i] is not observations[i + 1].

`episode_ends`, `episode_ids` and `episode_sums` take numpy or jax arrays (jittable with jax
arrays); `episode_starts` and `episode_returns` are numpy (their length is data-dependent).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _namespace(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def episode_ends(terminals, timeouts=None, *, observations=None, next_observations=None,
                 rtol: float = 0.0, atol: float = 0.0, close_last: bool = False):
    """bool [N]: True on the last row of each episode.

    Ends are the nonzero terminals (and timeouts, if given); with `observations` [N, ...] and
    `next_observations` [N, ...], also every i < N - 1 where next_observations[i] differs from
    observations[i + 1] (an auto-reset in between): bitwise when rtol = atol = 0, else beyond
    isclose(rtol, atol). close_last marks row N - 1 as an end (a stream cut at a known end, or
    an unfinished last episode that should count).
    """
    xp = _namespace(terminals, timeouts, observations, next_observations)
    ends = xp.asarray(terminals) != 0
    if timeouts is not None:
        ends = ends | (xp.asarray(timeouts) != 0)
    if observations is not None and ends.shape[0]:
        nxt, obs = next_observations[:-1], observations[1:]
        differ = (nxt != obs) if rtol == 0 and atol == 0 else \
            ~xp.isclose(nxt, obs, rtol=rtol, atol=atol)
        differ = xp.any(differ, axis=tuple(range(1, differ.ndim)))
        ends = ends | xp.concatenate([differ, xp.zeros((1,), bool)])
    if close_last and ends.shape[0]:
        ends = ends.at[-1].set(True) if xp is jnp else np.concatenate([ends[:-1], [True]])
    return ends


def episode_ids(ends):
    """int32 [N]: the index of the episode each row belongs to (0 for the first episode)."""
    xp = _namespace(ends)
    return xp.concatenate([xp.zeros((1,), xp.int32), xp.cumsum(ends[:-1], dtype=xp.int32)])


def episode_sums(values, ends):
    """(sums [N], num_episodes): sums[k] = the sum of `values` [N] over episode k (`episode_ids`)
    for k < num_episodes = the number of ends, zero after; fixed shapes, so jittable."""
    xp = _namespace(values, ends)
    n, ids = values.shape[0], episode_ids(ends)
    if xp is jnp:
        sums = jax.ops.segment_sum(values, ids, num_segments=n)
    else:
        sums = np.zeros(n, np.asarray(values).dtype)
        np.add.at(sums, ids, values)
    return sums, xp.sum(ends)


def episode_starts(ends) -> np.ndarray:
    """int64 [num_ends]: the first row of each episode that ends in the stream."""
    last = np.flatnonzero(np.asarray(ends))
    return np.concatenate([[0], last[:-1] + 1]).astype(np.int64) if last.size else \
        np.zeros(0, np.int64)


def episode_returns(rewards, ends, *, include_unfinished: bool = False) -> np.ndarray:
    """float64 [num_episodes]: the undiscounted return of each episode, in order.

    Rows after the last end (an unfinished episode) count as one more episode only with
    include_unfinished.
    """
    rewards = np.asarray(rewards, np.float64)
    ends = np.asarray(ends, bool)
    if include_unfinished and rewards.size and not ends[-1]:
        ends = np.concatenate([ends[:-1], [True]])
    last = np.flatnonzero(ends)
    if last.size == 0:
        return np.zeros(0, np.float64)
    return np.add.reduceat(rewards[:last[-1] + 1], episode_starts(ends))
