"""Evaluation episodes for online and offline agents.

`evaluate_episodes` runs `num_episodes` fresh episodes in parallel with a given action function
and returns the mean undiscounted return of each episode's FIRST completion (auto-reset
episodes after it are ignored). `evaluate_act` does so with an algorithm's protocol
`act(state, obs, config, task)` acting greedily / deterministically (key=None). The key is the
runner's evaluation key, identical for every training seed, so seeds are compared on the same
episodes.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from envs.wrappers import ClipAction


def evaluate_episodes(key: jax.Array, env, env_params, act_fn: Callable, num_episodes: int,
                      max_steps: int | None = None) -> dict[str, jax.Array]:
    """act_fn(obs [num_episodes, ...], key) -> actions; returns mean return and length."""
    env = ClipAction(env)  # continuous actions are clipped to the bounds, as in training
    max_steps = int(max_steps or env_params.max_steps_in_episode)
    k_reset, k_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_reset, num_episodes), env_params)

    def step(carry, step_key):
        obs, state, ret, length, alive = carry
        k_act, k_env = jax.random.split(step_key)
        action = act_fn(obs, k_act)
        obs, state, reward, terminated, truncated, _ = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(jax.random.split(k_env, num_episodes), state,
                                               action, env_params)
        ret = ret + jnp.where(alive, reward, 0.0)
        length = length + alive.astype(jnp.int32)
        alive = alive & ~(terminated | truncated)
        return (obs, state, ret, length, alive), None

    init = (obs, state, jnp.zeros(num_episodes), jnp.zeros(num_episodes, jnp.int32),
            jnp.ones(num_episodes, bool))
    (_, _, ret, length, _), _ = jax.lax.scan(step, init, jax.random.split(k_run, max_steps))
    return {"return": ret.mean(), "length": length.astype(jnp.float32).mean()}


def evaluate_act(act: Callable, state, key: jax.Array, config, task) -> dict[str, jax.Array]:
    """`config.eval_episodes` episodes of `act(state, obs, config, task)` (greedy: no key)."""
    return evaluate_episodes(key, task.env, task.params,
                             lambda obs, _: act(state, obs, config, task),
                             int(config.eval_episodes))
