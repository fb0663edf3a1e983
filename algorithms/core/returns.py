"""Return and advantage estimators shared by the policy-gradient and value-based algorithms.

Pure, un-jitted functions over time-major arrays ([T, ...] with the batch in trailing axes);
the caller jits and vmaps. `_t` is the step index; `dones_t` marks that the episode ended AT
step t (after reward_t), `terminated_t` that it ended in a true terminal state (no bootstrap);
a truncated episode still bootstraps from the value of its final observation.
`normalize_advantages` standardises a batch of advantages (any shape).
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


def normalize_advantages(adv: jax.Array, mask: jax.Array | None = None,
                         eps: float = 1e-8) -> jax.Array:
    """(A - mean A) / (std A + eps) over all entries of `adv` (or those where mask = 1).

    The per-batch or per-minibatch advantage standardisation of PPO, A2C, TRPO and REINFORCE
    implementations (one of the PPO code-level choices studied by Engstrom et al. 2020 and
    Andrychowicz et al. 2021): it keeps the ordering of the advantages and fixes the scale of
    the policy gradient. The mean and the
    (population) standard deviation are masked means, sum(x m) / max(sum(m), 1), with a mask.

    A constant batch gives exactly 0: its advantages prefer no action over another. The
    floating-point mean of a constant need not equal it (float32: seven 0.1s average to
    0.10000001), and dividing that rounding error by std + eps = eps would turn it into
    advantages of +-0.4; every other batch gets the plain formula's floats.

    Args:
      adv: advantages, any shape.
      mask: optional 0/1 weights of adv's shape (entries with 0 are ignored).
    Returns: normalised advantages, adv's shape and dtype.
    """
    if mask is None:
        centred = adv - adv.mean()
        std = adv.std()
        lowest, highest = adv.min(), adv.max()
    else:
        chex.assert_equal_shape([adv, mask])
        count = jnp.maximum(jnp.sum(mask), 1.0)
        centred = adv - jnp.sum(adv * mask) / count
        std = jnp.sqrt(jnp.sum(centred ** 2 * mask) / count)
        lowest = jnp.min(jnp.where(mask > 0, adv, jnp.inf))
        highest = jnp.max(jnp.where(mask > 0, adv, -jnp.inf))
    return jnp.where(lowest == highest, jnp.zeros_like(adv), centred / (std + eps))
