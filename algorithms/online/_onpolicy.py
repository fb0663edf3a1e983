"""On-policy pieces shared by PPO, REINFORCE, A2C and TRPO: networks, batched rollouts, acting.

Private to those modules (the registry skips files starting with `_`). A rollout is `num_steps`
steps of the `num_envs` vectorized environments (envs.wrappers.make_vec_env, with running
observation normalization when `config.normalize_obs`), stored time-major ([T, N, ...]).
`next_obs[t]` is the observation after step t: the true final observation when the episode
ended at t (gymnax auto-resets; `info["final_observation"]`), so a truncated episode can
bootstrap from V(final observation) while `terminated` cuts it.

Discrete action spaces get a `CategoricalPolicy`, Box spaces a `GaussianPolicy` over the
flattened action (state-independent log std) acting in the environment's units; its samples
are stored and scored unclipped, and the environment wrapper clips them to the box.
`RULES` / `CHECKS` are the config rules the four modules share (algorithms.core.config_rules).

A rollout's randomness is drawn ahead of its `lax.scan`, for all steps at once: the per-step keys
(split exactly as a per-step `split` would), the envs' keys, and for a categorical policy the
Gumbel noise of `jax.random.categorical` (`Sampler`); the scan body then holds only the
networks and the environments. The samples are the same bits as drawing inside the loop; the
work is a few batched random-number calls instead of several small ones per step.
"""
from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces as gym_spaces

from algorithms.core import config_rules as rules
from algorithms.core import networks, spaces
from algorithms.online import _budget
from envs import wrappers

# Config rules every on-policy module shares (`CONFIG_RULES = {**op.RULES, ...}`).
RULES = {**_budget.RULES,
         "activation": rules.one_of(*networks.ACTIVATIONS),
         "adam_eps": rules.positive,
         "reward_scale": rules.positive}
CHECKS = _budget.CHECKS


@struct.dataclass
class Rollout:
    """One batch of on-policy experience, leaves [T, N, ...]."""
    obs: jax.Array  # s_t, flattened (normalized if the env normalizes)
    actions: jax.Array  # a_t ([T, N] Discrete, [T, N, A] Box, flattened)
    log_probs: jax.Array  # log pi_old(a_t | s_t) of the behaviour policy
    rewards: jax.Array  # r_t (float32)
    terminated: jax.Array  # bool: s_{t+1} is terminal (no bootstrap)
    truncated: jax.Array  # bool: time limit hit at t (bootstrap from V(next_obs[t]))
    dones: jax.Array  # terminated | truncated: the episode ended at t
    next_obs: jax.Array  # s_{t+1}, the final observation when dones[t]


def flat_obs(obs: jax.Array, task) -> jax.Array:
    """Observations as float vectors (MinAtar images flattened)."""
    return networks.flatten_obs(obs, spaces.obs_ndim(task.env, task.params))


def build_networks(config, task) -> tuple[nn.Module, nn.Module]:
    """(policy, value) with `config.hidden_sizes` and `config.activation`."""
    hidden = tuple(config.hidden_sizes)
    act = networks.ACTIVATIONS[config.activation]
    space = task.env.action_space(task.params)
    if isinstance(space, gym_spaces.Discrete):
        policy = networks.CategoricalPolicy(hidden, int(space.n), act)
    elif isinstance(space, gym_spaces.Box):
        policy = networks.GaussianPolicy(hidden, math.prod(int(d) for d in space.shape), act)
    else:
        raise ValueError(f"on-policy algorithms support Discrete and Box action spaces, "
                         f"not {type(space).__name__}")
    return policy, networks.ValueNet(hidden, act)


class _VecEnv(wrappers.VecEnv):
    """`wrappers.VecEnv` whose `step` also takes the envs' keys already split ([num_envs]
    typed keys); a single key (typed, or a raw uint32 one) is split here, as VecEnv does."""
    steps_with_env_keys = True

    def step(self, key, state, action, params):
        if key.shape == () or not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return super().step(key, state, action, params)
        return jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(key, state, action, params)


def make_env(config, task):
    """`wrappers.make_vec_env`'s stack (episode statistics, action clipping, batching, optional
    observation normalization) over a `_VecEnv`."""
    vec = _VecEnv(wrappers.ClipAction(wrappers.EpisodeStats(task.env)), int(config.num_envs))
    return wrappers.NormalizeObservation(vec) if config.get("normalize_obs", False) else vec


def init_networks(k_policy, k_value, k_env, config, task):
    """(policy, value, policy_params, value_params, env, env_state, obs) for a fresh seed."""
    policy, value = build_networks(config, task)
    env = make_env(config, task)
    obs, env_state = env.reset(k_env, task.params)
    x = flat_obs(obs, task)
    return (policy, value, policy.init(k_policy, x), value.init(k_value, x), env, env_state, obs)


def env_action(action: jax.Array, task) -> jax.Array:
    """A batch of policy outputs [B] or [B, A] in the action space's shape."""
    space = task.env.action_space(task.params)
    if isinstance(space, gym_spaces.Discrete):
        return action
    return action.reshape(action.shape[:1] + tuple(space.shape))


def collect(key, env, env_params, env_state, obs, act_fn: Callable, num_steps: int, task):
    """Steps the vectorized env `num_steps` times with `act_fn(flat_obs, key) -> (a, log_prob)`.

    With a `Sampler` as act_fn (what `sample_fn` returns) its noise for every step is drawn
    before the scan; with an env from `make_env` the envs' keys are too. Either way step t uses
    (k_act, k_env) = split(split(key, num_steps)[t]).
    Returns (env_state, obs, Rollout [T, N, ...], training-episode metrics).
    """
    step_keys = jax.vmap(jax.random.split)(jax.random.split(key, num_steps))  # [T, 2]
    k_act, k_env = step_keys[:, 0], step_keys[:, 1]
    num_envs = obs.shape[0]
    if isinstance(act_fn, Sampler):
        act_inputs = jax.vmap(lambda k: act_fn.noise(k, num_envs))(k_act)
        act = act_fn.act
    else:
        act_inputs, act = k_act, act_fn
    if getattr(env, "steps_with_env_keys", False) and jnp.issubdtype(k_env.dtype,
                                                                     jax.dtypes.prng_key):
        k_env = jax.vmap(lambda k: jax.random.split(k, num_envs))(k_env)  # as VecEnv splits

    def step(carry, inputs):
        env_state, obs = carry
        act_input, env_key = inputs
        x = flat_obs(obs, task)
        action, log_prob = act(x, act_input)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            env_key, env_state, env_action(action, task), env_params)
        tr = Rollout(obs=x, actions=action, log_probs=log_prob,
                     rewards=reward.astype(jnp.float32), terminated=terminated,
                     truncated=truncated, dones=terminated | truncated,
                     next_obs=flat_obs(info["final_observation"], task))
        stats = {k: info[k] for k in ("last_episode_return", "last_episode_length",
                                      "episode_done")}
        return (env_state, next_obs), (tr, stats)

    (env_state, obs), (batch, stats) = jax.lax.scan(step, (env_state, obs), (act_inputs, k_env))
    return env_state, obs, batch, wrappers.episode_metrics(stats)


def flatten_time(x: jax.Array) -> jax.Array:
    """[T, N, ...] -> [T * N, ...]."""
    return x.reshape((-1,) + x.shape[2:])


class Sampler:
    """act_fn for `collect`: a sample of pi(.|s) and its log-probability, `sampler(x, key)`, also
    split in two so the randomness can be drawn ahead: `noise(key, batch)` (what step t needs
    from its key) and `act(x, noise) -> (action, log_prob)`, with
    act(x, noise(key, len(x))) == sampler(x, key) bit for bit (finite logits; jax's default
    Gumbel sampler).

    A categorical policy's noise is the Gumbel noise [batch, num_actions] that
    `jax.random.categorical` draws (action = argmax(log-softmax logits + noise), the Gumbel-max
    trick; its log-probability is read off the normalized logits); any other policy's noise is
    the key itself, for its distribution's own `sample_and_log_prob`.
    """

    def __init__(self, policy: nn.Module, params):
        self.policy, self.params = policy, params
        self.categorical = isinstance(policy, networks.CategoricalPolicy)

    def __call__(self, x, key):
        return self.policy.apply(self.params, x).sample_and_log_prob(seed=key)

    def noise(self, key, batch: int):
        if self.categorical:
            return jax.random.gumbel(key, (batch, self.policy.num_actions))
        return key

    def act(self, x, noise):
        dist = self.policy.apply(self.params, x)
        if not self.categorical:
            return dist.sample_and_log_prob(seed=noise)
        log_probs = dist.logits  # log-softmax normalized (distrax.Categorical)
        action = jnp.argmax(log_probs + noise, axis=-1).astype(jnp.int32)
        return action, jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]


def sample_fn(policy: nn.Module, params) -> Sampler:
    """act_fn for `collect`: a sample of pi(.|s) and its log-probability (see `Sampler`)."""
    return Sampler(policy, params)


def obs_normalizer(env_state) -> Callable[[jax.Array], jax.Array]:
    """The training env's observation normalization (identity when it has none)."""
    if isinstance(env_state, wrappers.NormalizedState):
        return env_state.obs_rms.normalize
    return lambda x: x


def act(policy: nn.Module, params, env_state, obs: jax.Array, task, key=None) -> jax.Array:
    """Env actions for raw observations obs [B, *obs_shape], normalized with the training
    env's running statistics: the mode (argmax / mean) with key None, else a sample."""
    x = flat_obs(obs_normalizer(env_state)(obs.astype(jnp.float32)), task)
    dist = policy.apply(params, x)
    a = dist.mode() if key is None else dist.sample_and_log_prob(seed=key)[0]
    return env_action(a, task)
