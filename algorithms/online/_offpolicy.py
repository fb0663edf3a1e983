"""Off-policy pieces shared by DQN, DDPG, TD3 and SAC: optimizer steps with a traced learning
rate, target averaging, action scaling, the vectorised replay-transition env step and the
random-action warm-up that fills the buffer.

Private to those modules (the registry skips files starting with `_`). Each algorithm keeps its
own losses, targets and update ordering. Transitions are dicts with keys obs, action, reward,
next_obs, terminated; `next_obs` is the pre-reset `info["final_observation"]` (gymnax auto-resets)
so targets bootstrap through truncation, and `terminated` alone cuts the bootstrap.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from algorithms.core import buffer as replay
from algorithms.core.networks import flatten_obs
from envs.wrappers import make_vec_env


# ---------------------------------------------------------------------------- optimisation
def injected_adam(learning_rate: float = 3e-4):
    """Adam with an injectable learning rate (the traced value is written in per step)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def with_lr(opt_state, lr: jax.Array):
    """An `optax.inject_hyperparams` state with its learning rate set to the traced `lr`."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def adam_step(opt, opt_state, params, grads, lr):
    """One optimizer step with the traced learning rate `lr` written into the injected
    hyperparams; returns (params', opt_state')."""
    updates, opt_state = opt.update(grads, with_lr(opt_state, lr), params)
    return optax.apply_updates(params, updates), opt_state


def polyak(online: Any, target: Any, tau: jax.Array) -> Any:
    """theta^- <- tau theta + (1 - tau) theta^- (tau = 1: a hard copy; Lillicrap et al. 2016)."""
    return jax.tree.map(lambda p, t: tau * p + (1.0 - tau) * t, online, target)


def select(pred: jax.Array, new: Any, old: Any) -> Any:
    """`new` where the scalar `pred` holds, else `old`, leaf by leaf (masking under vmap)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def strong_types(tree: Any) -> Any:
    """Drops weak types (e.g. gymnax Pendulum's reset `last_u`) so the State that `init`
    returns has exactly the avals `update` returns: the runner's jitted chunk then compiles once,
    not again on its second call."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), tree)


# ---------------------------------------------------------------------------- spaces
def obs_ndim(task) -> int:
    return len(task.env.observation_space(task.params).shape)


def action_dim(task) -> int:
    return task.env.action_space(task.params).shape[0]


def action_bounds(task):
    """(center, scale) of the Box action space: env action = center + scale * a, a in [-1, 1]."""
    space = task.env.action_space(task.params)
    low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
    high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)
    return (high + low) / 2.0, (high - low) / 2.0


# ---------------------------------------------------------------------------- experience
def vec_env(config, task):
    return make_vec_env(task.env, config.num_envs)


def grad_steps_per_update(config) -> int:
    """Gradient steps per `update`: one per `train_frequency` env steps (at least one)."""
    return max(1, (config.num_envs * config.num_steps) // config.train_frequency)


def replay_example(obs: jax.Array, action: jax.Array) -> dict:
    """One transition's shapes and dtypes, for `buffer_init`."""
    return {"obs": obs, "action": action, "reward": jnp.float32(0.0), "next_obs": obs,
            "terminated": jnp.float32(0.0)}


def flatten_time(tree: Any) -> Any:
    """[T, N, ...] leaves -> [T * N, ...]."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def env_step(env, task, env_state, obs, action, key):
    """One vectorised step with normalised Box `action` in [-1, 1] (scaled by `action_bounds`);
    returns (obs', env_state', transition, stats), observations flattened."""
    center, scale = action_bounds(task)
    next_obs, env_state, reward, terminated, _, info = env.step(
        key, env_state, center + scale * action, task.params)
    nd = obs_ndim(task)
    transition = {"obs": obs, "action": action, "reward": reward.astype(jnp.float32),
                  "next_obs": flatten_obs(info["final_observation"], nd),
                  "terminated": terminated.astype(jnp.float32)}
    stats = {k: info[k] for k in ("last_episode_return", "last_episode_length", "episode_done")}
    return flatten_obs(next_obs, nd), env_state, transition, stats


def random_warmup(env, task, config, env_state, obs, buffer, key, action_dim: int):
    """`learning_starts // num_envs` vectorised steps with uniform random actions in [-1, 1],
    added to `buffer`; returns (obs, env_state, buffer)."""
    warm_steps = config.learning_starts // config.num_envs
    if warm_steps > 0:
        def random_step(carry, k):
            obs, env_state = carry
            k_a, k_e = jax.random.split(k)
            action = jax.random.uniform(k_a, (config.num_envs, action_dim), minval=-1.0,
                                        maxval=1.0)
            obs, env_state, tr, _ = env_step(env, task, env_state, obs, action, k_e)
            return (obs, env_state), tr

        (obs, env_state), trs = jax.lax.scan(random_step, (obs, env_state),
                                             jax.random.split(key, warm_steps))
        buffer = replay.buffer_add(buffer, flatten_time(trs))
    return obs, env_state, buffer
