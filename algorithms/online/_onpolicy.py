"""On-policy pieces shared by REINFORCE, A2C and TRPO: networks, batched rollouts, evaluation.

Private to those three modules (the registry skips files starting with `_`). A rollout is
`num_steps` steps of the `num_envs` vectorized environments (envs.wrappers.make_vec_env), stored
time-major ([T, N, ...]). `next_obs[t]` is the observation after step t: the true final
observation when the episode ended at t (gymnax auto-resets; `info["final_observation"]`), so a
truncated episode can bootstrap from V(final observation) while `terminated` cuts it.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from gymnax.environments import spaces

from algorithms.core import networks
from algorithms.core.evaluation import evaluate_episodes
from envs import wrappers


@struct.dataclass
class Rollout:
    """One batch of on-policy experience, leaves [T, N, ...]."""
    obs: jax.Array  # s_t (normalized if the env normalizes)
    actions: jax.Array  # a_t
    log_probs: jax.Array  # log pi_old(a_t | s_t) of the behaviour policy
    rewards: jax.Array  # r_t (float32)
    terminated: jax.Array  # bool: s_{t+1} is terminal (no bootstrap)
    truncated: jax.Array  # bool: time limit hit at t (bootstrap from V(next_obs[t]))
    dones: jax.Array  # terminated | truncated: the episode ended at t
    next_obs: jax.Array  # s_{t+1}, the final observation when dones[t]


def is_discrete(task) -> bool:
    return isinstance(task.env.action_space(task.params), spaces.Discrete)


def obs_ndim(task) -> int:
    return len(task.env.observation_space(task.params).shape)


def flat_obs(obs: jax.Array, task) -> jax.Array:
    """Observations as float vectors (MinAtar images flattened)."""
    return networks.flatten_obs(obs, obs_ndim(task))


def build_networks(config, task) -> tuple[nn.Module, nn.Module]:
    """(policy, value): CategoricalPolicy for Discrete actions, GaussianPolicy for Box."""
    hidden = tuple(config.hidden)
    act = {"tanh": nn.tanh, "relu": nn.relu}[config.activation]
    space = task.env.action_space(task.params)
    if isinstance(space, spaces.Discrete):
        policy = networks.CategoricalPolicy(hidden, int(space.n), act)
    else:
        policy = networks.GaussianPolicy(hidden, int(space.shape[0]), act)
    return policy, networks.ValueNet(hidden, act)


def make_env(config, task):
    return wrappers.make_vec_env(task.env, int(config.num_envs),
                                 bool(config.get("normalize_obs", False)))


def init_networks(key, config, task):
    """(policy, value, policy_params, value_params, env, env_state, obs) for a fresh seed."""
    policy, value = build_networks(config, task)
    k_pi, k_v, k_env = jax.random.split(key, 3)
    env = make_env(config, task)
    obs, env_state = env.reset(k_env, task.params)
    x = flat_obs(obs, task)
    return (policy, value, policy.init(k_pi, x), value.init(k_v, x), env, env_state, obs)


def with_learning_rate(opt_state, lr):
    """An `optax.inject_hyperparams` state with its learning rate replaced (a traced leaf)."""
    hp = dict(opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, hp["learning_rate"].dtype)
    return opt_state._replace(hyperparams=hp)


def adam(config, lr, max_grad_norm: float | None = None) -> optax.GradientTransformation:
    """Adam with an injectable learning rate, optionally after global-norm clipping."""

    def make(learning_rate):
        adam_ = optax.adam(learning_rate, eps=float(config.get("adam_eps", 1e-5)))
        return adam_ if max_grad_norm is None else optax.chain(
            optax.clip_by_global_norm(max_grad_norm), adam_)

    return optax.inject_hyperparams(make)(learning_rate=lr)


def collect(key, env, env_params, env_state, obs, act_fn: Callable, num_steps: int, task):
    """Steps the vectorized env `num_steps` times with `act_fn(flat_obs, key) -> (a, log_prob)`.

    Returns (env_state, obs, Rollout [T, N, ...], training-episode metrics).
    """

    def step(carry, step_key):
        env_state, obs = carry
        k_act, k_env = jax.random.split(step_key)
        x = flat_obs(obs, task)
        action, log_prob = act_fn(x, k_act)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, action, env_params)
        done = terminated | truncated
        final = jnp.where(done.reshape(done.shape + (1,) * (next_obs.ndim - 1)),
                          info["final_observation"], next_obs)
        tr = Rollout(obs=x, actions=action, log_probs=log_prob,
                     rewards=reward.astype(jnp.float32), terminated=terminated,
                     truncated=truncated, dones=done, next_obs=flat_obs(final, task))
        stats = {k: info[k] for k in ("last_episode_return", "last_episode_length",
                                      "episode_done")}
        return (env_state, next_obs), (tr, stats)

    (env_state, obs), (batch, stats) = jax.lax.scan(
        step, (env_state, obs), jax.random.split(key, num_steps))
    return env_state, obs, batch, wrappers.episode_metrics(stats)


def sample_fn(policy: nn.Module, params) -> Callable:
    def act(x, key):
        dist = policy.apply(params, x)
        action, log_prob = dist.sample_and_log_prob(seed=key)
        return action, log_prob
    return act


def obs_normalizer(env_state) -> Callable[[jax.Array], jax.Array]:
    """The training env's observation normalization (identity when it has none)."""
    if isinstance(env_state, wrappers.NormalizedState):
        return env_state.obs_rms.normalize
    return lambda x: x


def evaluate_policy(policy: nn.Module, params, env_state: Any, key, config, task):
    """Greedy (mode) actions on fresh episodes: argmax for Categorical, the mean for Gaussian."""
    normalize = obs_normalizer(env_state)

    def act(obs, _):
        x = flat_obs(normalize(obs.astype(jnp.float32)), task)
        return policy.apply(params, x).mode()

    env = wrappers.ClipAction(task.env)
    return evaluate_episodes(key, env, task.params, act, int(config.eval_episodes))
