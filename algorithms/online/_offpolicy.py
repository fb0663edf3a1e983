"""Off-policy pieces shared by DQN, DDPG, TD3 and SAC: the vectorised environment step that
records replay transitions, the uniform-random warm-up that fills the buffer before learning,
and Gaussian exploration noise.

Private to those modules (the registry skips files starting with `_`). Each algorithm keeps its
own losses, targets and update ordering. Transitions are dicts with keys obs, action, reward,
next_obs, terminated; `next_obs` is the pre-reset `info["final_observation"]` (gymnax auto-resets)
so targets bootstrap through truncation, and `terminated` alone cuts the bootstrap. Box actions
are stored in the normalised box [-1, 1] (`algorithms.core.spaces`), Discrete ones as int32.
`RULES` / `CHECKS` are the config rules the four modules share (algorithms.core.config_rules).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from algorithms.core import buffer as replay
from algorithms.core import config_rules as rules
from algorithms.core import spaces
from algorithms.core.networks import flatten_obs
from algorithms.core.tree import strong_types
from algorithms.online import _budget
from envs.wrappers import make_vec_env


def warmup_fits_buffer(config) -> str | None:
    """Config check: the warm-up's transitions (written at once) and one vector step fit."""
    if config.learning_starts > config.buffer_size:
        return (f"config.learning_starts={config.learning_starts} is more than config."
                f"buffer_size={config.buffer_size}: the warm-up writes its transitions at once, "
                f"so learning_starts must be at most {config.buffer_size} (or raise buffer_size)")
    if config.num_envs > config.buffer_size:
        return (f"config.num_envs={config.num_envs} is more than config.buffer_size="
                f"{config.buffer_size}: it must be at most {config.buffer_size}")
    return None


def update_fits_buffer(config) -> str | None:
    """Config check for agents that write an update's num_envs x num_steps transitions at once
    (DQN, DDPG)."""
    per_update = config.num_envs * config.num_steps
    if per_update > config.buffer_size:
        return (f"config.num_steps={config.num_steps} with config.num_envs={config.num_envs} "
                f"writes {per_update} transitions per update at once, more than config."
                f"buffer_size={config.buffer_size} holds; num_envs * num_steps must be at most "
                f"{config.buffer_size} (or raise buffer_size)")
    return None


# Config rules every off-policy module shares (`CONFIG_RULES = {**off.RULES, ...}`).
RULES = {**_budget.RULES,
         "learning_starts": rules.non_negative_count,
         "buffer_size": rules.count,
         "tau": rules.in_range(0.0, 1.0, low_open=True)}  # 0 would freeze the targets
CHECKS = (*_budget.CHECKS, warmup_fits_buffer)


def vec_env(config, task):
    return make_vec_env(task.env, config.num_envs)


def grad_steps_per_update(config) -> int:
    """Gradient steps per `update`: one per `train_frequency` env steps (at least one)."""
    return max(1, (config.num_envs * config.num_steps) // config.train_frequency)


def env_steps(step: jax.Array, config) -> jax.Array:
    """Environment steps taken after `step` updates: the warm-up's, then num_envs x num_steps
    per update."""
    return config.learning_starts + step * (config.num_envs * config.num_steps)


def replay_example(obs: jax.Array, action: jax.Array) -> dict:
    """One transition's shapes and dtypes, for `buffer_init`."""
    return {"obs": obs, "action": action, "reward": jnp.float32(0.0), "next_obs": obs,
            "terminated": jnp.float32(0.0)}


def flatten_time(tree: Any) -> Any:
    """[T, N, ...] leaves -> [T * N, ...]."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def action_box(task) -> tuple:
    """(center, scale) of the task's Box action space (env action = center + scale * a)."""
    return spaces.box_center_scale(task.env.action_space(task.params))


def gaussian_exploration(actions: jax.Array, sigma: jax.Array, key: jax.Array) -> jax.Array:
    """clip(a + N(0, sigma^2), -1, 1): the exploration noise of DDPG and TD3 (Fujimoto et al.
    2018, Sec. 6.1), in normalised action units. actions: [B, A]."""
    noise = sigma * jax.random.normal(key, actions.shape)
    return jnp.clip(actions + noise, -1.0, 1.0)


def env_step(env, task, env_state, obs, action, key, *, flatten: bool = True):
    """One vectorised step with `action` [num_envs, ...] (normalised Box actions are sent as
    center + scale * a); returns (obs', env_state', transition, episode stats).

    With `flatten`, the returned observations and the transition's next_obs are flattened
    vectors (`flatten_obs`); otherwise they keep the environment's shape.
    """
    env_action = action
    if not spaces.is_discrete(task.env, task.params):
        env_action = spaces.to_env_action(action, *action_box(task))
    next_obs, env_state, reward, terminated, _, info = env.step(
        key, env_state, env_action, task.params)
    nd = spaces.obs_ndim(task.env, task.params)
    prepare = (lambda o: flatten_obs(o, nd)) if flatten else (lambda o: o)
    transition = {"obs": obs, "action": action, "reward": reward.astype(jnp.float32),
                  "next_obs": prepare(info["final_observation"]),
                  "terminated": terminated.astype(jnp.float32)}
    stats = {k: info[k] for k in ("last_episode_return", "last_episode_length", "episode_done")}
    return prepare(next_obs), env_state, transition, stats


def random_actions(key: jax.Array, task, num: int) -> jax.Array:
    """`num` uniform random actions: int32 in [0, |A|) or normalised Box actions in [-1, 1]."""
    n = spaces.num_actions(task.env, task.params)
    if spaces.is_discrete(task.env, task.params):
        return jax.random.randint(key, (num,), 0, n)
    return jax.random.uniform(key, (num, n), minval=-1.0, maxval=1.0)


def random_warmup(env, task, config, env_state, obs, buffer, key, *, flatten: bool = True):
    """`learning_starts // num_envs` vectorised steps with uniform random actions, added to
    `buffer`: the warm-up every off-policy agent takes in `init`, before its first update.

    Returns (obs, env_state, buffer), the env state strongly typed (`strong_types`) so that the
    State from `init` has the avals `update` returns.
    """
    warm_steps = config.learning_starts // config.num_envs
    if warm_steps > 0:
        def random_step(carry, k):
            obs, env_state = carry
            k_a, k_e = jax.random.split(k)
            action = random_actions(k_a, task, config.num_envs)
            obs, env_state, tr, _ = env_step(env, task, env_state, obs, action, k_e,
                                             flatten=flatten)
            return (obs, env_state), tr

        (obs, env_state), trs = jax.lax.scan(random_step, (obs, env_state),
                                             jax.random.split(key, warm_steps))
        buffer = replay.buffer_add(buffer, flatten_time(trs))
    return obs, strong_types(env_state), buffer
