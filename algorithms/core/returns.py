"""Return and advantage estimators shared by the policy-gradient and value-based algorithms.

Pure, un-jitted functions over time-major arrays ([T, ...] with the batch in trailing axes);
the caller jits and vmaps. `_t` is the step index; `dones_t` marks that the episode ended AT
step t (after reward_t), `terminated_t` that it ended in a true terminal state (no bootstrap);
a truncated episode still bootstraps from the value of its final observation.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def discounted_returns(rewards: jax.Array, dones: jax.Array, gamma: float,
                       bootstrap: jax.Array | float = 0.0) -> jax.Array:
    """Reward-to-go G_t = r_t + gamma (1 - done_t) G_{t+1}, G_T = bootstrap (REINFORCE,
    Williams 1992).

    Args:
      rewards, dones: [T, ...]. dones_t = 1 cuts the sum after step t.
      bootstrap: value used for G_T beyond the last step ([...] or scalar; 0 for complete episodes).
    Returns: [T, ...] returns.
    """
    chex.assert_equal_shape([rewards, dones])

    def step(g_next, inputs):
        r, d = inputs
        g = r + gamma * (1.0 - d) * g_next
        return g, g

    init = jnp.broadcast_to(jnp.asarray(bootstrap, rewards.dtype), rewards.shape[1:])
    _, out = jax.lax.scan(step, init, (rewards, dones.astype(rewards.dtype)), reverse=True)
    return out


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminated: jax.Array,
        dones: jax.Array, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation (Schulman et al. 2016, Eq. 16).

    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1}

    Args:
      rewards, values, terminated, dones: [T, ...].
      next_values: [T, ...] value of the state after step t: V(s_{t+1}), or for an episode that
        was truncated at t, V(final observation) (so bootstrapping goes through truncation).
    Returns: (advantages [T, ...], value targets A + V [T, ...]).
    """
    chex.assert_equal_shape([rewards, values, next_values, terminated, dones])
    f = rewards.dtype
    deltas = rewards + gamma * (1.0 - terminated.astype(f)) * next_values - values

    def step(a_next, inputs):
        delta, d = inputs
        a = delta + gamma * lam * (1.0 - d) * a_next
        return a, a

    _, adv = jax.lax.scan(step, jnp.zeros_like(deltas[0]), (deltas, dones.astype(f)),
                          reverse=True)
    return adv, adv + values


def td_target(reward: jax.Array, discount: jax.Array, next_value: jax.Array) -> jax.Array:
    """One-step TD target r + discount * v(s'), discount = gamma (1 - terminated) (Sutton 1988)."""
    chex.assert_equal_shape([reward, discount, next_value])
    return reward + discount * next_value
