"""A tiny deterministic Pendulum-v1 dataset for offline-RL tests (no behaviour-policy training).

The behaviour policy is a hand-written swing-up controller (energy pumping far from the top,
a PD hold near it; about -140 mean return over 200 steps, against about -1200 for uniform random
actions), with Gaussian action noise and a share of uniform random episodes, so the data holds
both good and bad actions: offline learners must beat the random policy by a wide margin, and BC
on the good part approaches the controller.
"""
from __future__ import annotations

import functools

import gymnax
import jax
import jax.numpy as jnp
import numpy as np

from envs.datasets import Dataset

# Mean returns measured with 1000 episodes of 200 steps (seed 0); used as the D4RL-style
# reference scores of this tiny dataset.
RANDOM_RETURN = -1218.5
CONTROLLER_RETURN = -145.0


def swing_up_controller(obs: jax.Array) -> jax.Array:
    """Torque in [-2, 2] for gymnax Pendulum-v1 (theta'' = 15 sin(theta) + 3 u, theta = 0 up)."""
    c, s, thdot = obs[..., 0], obs[..., 1], obs[..., 2]
    theta = jnp.arctan2(s, c)
    energy = 0.5 * thdot ** 2 + 15.0 * c  # 15 at rest on top
    pump = 2.0 * jnp.sign((15.0 - energy) * thdot + 1e-6)
    hold = -(27.0 * theta + 6.0 * thdot) / 3.0
    return jnp.clip(jnp.where(c > 0.85, hold, pump), -2.0, 2.0)[..., None]


@functools.lru_cache(maxsize=None)
def tiny_pendulum_dataset(num_episodes: int = 40, noise: float = 0.3, random_fraction: float = 0.25,
                          seed: int = 0) -> Dataset:
    """`num_episodes` x 200 transitions; the first `random_fraction` of episodes are random."""
    env, params = gymnax.make("Pendulum-v1")

    def episode(key, is_random):
        k_reset, k_run = jax.random.split(key)
        obs, state = env.reset(k_reset, params)

        def step(carry, k):
            obs, state = carry
            k_noise, k_rand, k_env = jax.random.split(k, 3)
            good = swing_up_controller(obs) + noise * 2.0 * jax.random.normal(k_noise, (1,))
            rand = jax.random.uniform(k_rand, (1,), minval=-2.0, maxval=2.0)
            action = jnp.clip(jnp.where(is_random, rand, good), -2.0, 2.0)
            next_obs, state, reward, terminated, truncated, info = env.step(k_env, state, action,
                                                                            params)
            tr = {"observations": obs, "actions": action, "rewards": reward,
                  "next_observations": next_obs, "terminals": terminated,
                  "timeouts": truncated & ~terminated}
            return (next_obs, state), tr

        _, trs = jax.lax.scan(step, (obs, state), jax.random.split(k_run, 200))
        return trs

    keys = jax.random.split(jax.random.key(seed), num_episodes)
    is_random = jnp.arange(num_episodes) < int(random_fraction * num_episodes)
    trs = jax.jit(jax.vmap(episode))(keys, is_random)
    arrays = {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in trs.items()}
    arrays["timeouts"] = arrays["timeouts"].copy()
    arrays["timeouts"].reshape(num_episodes, 200)[:, -1] = True  # every episode ends at 200
    arrays = {k: (v.astype(bool) if k in ("terminals", "timeouts") else v.astype(np.float32))
              for k, v in arrays.items()}
    metadata = {"name": "tiny-pendulum", "env": "Pendulum-v1", "env_options": {},
                "kind": "mixed", "policy": "swing-up controller + noise, 25% random episodes",
                "seed": seed, "ref_min_score": RANDOM_RETURN, "ref_max_score": CONTROLLER_RETURN}
    return Dataset(arrays, metadata)
