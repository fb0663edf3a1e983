"""Advantage actor-critic, synchronous (A2C; Mnih et al. 2016, "Asynchronous Methods for Deep RL").

A3C's Algorithm S3 with its asynchronous actor-learners replaced by `num_envs` environments
stepped in lockstep, whose gradients are averaged in one batch (the synchronous variant of
OpenAI Baselines, Wu et al. 2017). Each update collects t_max = `num_steps` steps per env and
minimizes, per sample,

    L = -A_t log pi(a_t|s_t)  +  vf_coef (R_t - V(s_t))^2  -  ent_coef H(pi(.|s_t))

with the advantage A_t = R_t - V(s_t) a constant for the policy term. The critic is the actor-
critic chapter's QAC idea with v instead of q: the TD error r + gamma v(s') - v(s) estimates the
advantage q(s,a) - v(s), so the critic's value serves as both baseline and bootstrap.

Returns: `gae_lambda = 1` (default) gives A3C's n-step return
    R_t = r_t + gamma r_{t+1} + ... + gamma^{T-t-1} r_{T-1} + gamma^{T-t} V(s_T)
(every step bootstraps from the value after the rollout's last step: GAE with lambda = 1 and
that bootstrap is exactly this scheme); `gae_lambda < 1` uses GAE(gamma, lambda) (Schulman et
al. 2016). Episodes ending inside the rollout stop the sum; truncated ones bootstrap from
V(final observation).

Defaults follow the paper where it speaks (t_max = 5, gamma = 0.99, entropy beta = 0.01,
RMSProp with decay 0.99 shared statistics) and OpenAI Baselines' A2C for the rest (lr 7e-4,
RMSProp eps 1e-5, value coefficient 0.5, gradient-norm clip 0.5); `optimizer="adam"` switches.
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim, tasks
from algorithms.core.evaluation import evaluate_act
from algorithms.core.returns import gae, normalize_advantages
from algorithms.online import _budget
from algorithms.online import _onpolicy as op

TASK_FLAG = "env"
DEFAULT_TASK = "CartPole-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ()  # discrete (Categorical) and continuous (Gaussian) actions
SWEEPABLE = ("lr", "ent_coef", "vf_coef")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


def a2c_loss(log_probs: jax.Array, advantages: jax.Array, values: jax.Array, returns: jax.Array,
             entropy: jax.Array, *, vf_coef: float, ent_coef: float):
    """Per-sample A2C loss (Mnih et al. 2016, Algorithm S3 and Sec. 4 "entropy regularization").

        policy_i  = -A_i log pi(a_i|s_i)          (A_i is a constant: stop_gradient)
        value_i   = (R_i - V(s_i))^2              (R_i is a constant target)
        entropy_i = H(pi(.|s_i))
        total_i   = policy_i + vf_coef value_i - ent_coef entropy_i

    Minimizing the mean of total_i ascends the policy gradient with an entropy bonus and
    regresses V on the n-step / lambda-returns. Sign convention: losses, to be minimized.

    Args:
      log_probs: [B] log pi(a_i|s_i), differentiable in the policy parameters.
      advantages: [B] advantage estimates A_i.
      values: [B] V(s_i), differentiable in the critic parameters.
      returns: [B] value targets R_i.
      entropy: [B] entropy of pi(.|s_i).
      vf_coef, ent_coef: keyword-only coefficients.
    Returns: (total [B], {"policy": [B], "value": [B], "entropy": [B]}).
    """
    chex.assert_rank(log_probs, 1)
    chex.assert_equal_shape([log_probs, advantages, values, returns, entropy])
    policy = -jax.lax.stop_gradient(advantages) * log_probs
    value = jnp.square(jax.lax.stop_gradient(returns) - values)
    total = policy + vf_coef * value - ent_coef * entropy
    return total, {"policy": policy, "value": value, "entropy": entropy}


@struct.dataclass
class State:
    params: Any  # {"policy": ..., "value": ...}, one optimizer over both
    opt_state: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_timesteps = 500_000
    c.num_envs = 8  # synchronous actors (the paper's actor-learner threads)
    c.num_steps = 5  # t_max (Mnih et al. 2016)
    c.num_updates = _budget.num_updates_ref(c)
    c.log_every = 250
    c.eval_every = 1250
    c.eval_episodes = 16
    c.gamma = 0.99
    c.gae_lambda = 1.0  # 1: A3C's n-step returns; < 1: GAE(gamma, lambda)
    c.lr = 7e-4
    c.optimizer = "rmsprop"  # paper: RMSProp; or "adam"
    c.rmsprop_decay = 0.99
    c.rmsprop_eps = 1e-5  # inside the square root, as in TF's RMSProp
    c.adam_eps = 1e-5
    c.vf_coef = 0.5
    c.ent_coef = 0.01  # beta (Mnih et al. 2016)
    c.max_grad_norm = 0.5  # 0: no clipping
    c.normalize_advantages = False  # standardize A over each batch
    c.hidden_sizes = (64, 64)
    c.activation = "tanh"
    c.normalize_obs = False
    return c


CONFIG_RULES = {**op.RULES,
                "optimizer": rules.one_of("rmsprop", "adam"),
                "rmsprop_decay": rules.in_range(0.0, 1.0, high_open=True),
                "rmsprop_eps": rules.positive}
CONFIG_CHECKS = op.CHECKS


def _optimizer(config):
    """RMSProp (the paper's) or Adam, after global-norm clipping when max_grad_norm > 0."""
    return optim.optimizer(config.lr, kind=config.optimizer, eps=config.adam_eps,
                           max_grad_norm=config.max_grad_norm,
                           rmsprop_decay=config.rmsprop_decay, rmsprop_eps=config.rmsprop_eps)


def init(key, config, task) -> State:
    k_net, k_state = jax.random.split(key)
    _, _, pp, vp, _, env_state, obs = op.init_networks(*jax.random.split(k_net, 3), config, task)
    params = {"policy": pp, "value": vp}
    return State(params=params, opt_state=_optimizer(config).init(params),
                 env_state=env_state, obs=obs, key=k_state, step=jnp.int32(0),
                 hparams={k: jnp.float32(config[k]) for k in SWEEPABLE})


def update(state: State, config, task):
    policy, value = op.build_networks(config, task)
    env = op.make_env(config, task)
    key, k_roll = jax.random.split(state.key)
    env_state, obs, batch, metrics = op.collect(
        k_roll, env, task.params, state.env_state, state.obs,
        op.sample_fn(policy, state.params["policy"]), int(config.num_steps), task)

    vp = state.params["value"]
    values = value.apply(vp, batch.obs)
    next_values = value.apply(vp, batch.next_obs)  # V(s_{t+1}); V(final obs) at episode ends
    advantages, returns = gae(batch.rewards, values, next_values, batch.terminated, batch.dones,
                              config.gamma, config.gae_lambda)
    obs_b, act_b, adv_b, ret_b = map(op.flatten_time, (batch.obs, batch.actions, advantages,
                                                       returns))
    if config.normalize_advantages:
        adv_b = normalize_advantages(adv_b)

    def loss_fn(params):
        dist = policy.apply(params["policy"], obs_b)
        v = value.apply(params["value"], obs_b)
        total, parts = a2c_loss(dist.log_prob(act_b), adv_b, v, ret_b, dist.entropy(),
                                vf_coef=state.hparams["vf_coef"],
                                ent_coef=state.hparams["ent_coef"])
        return total.mean(), {k: p.mean() for k, p in parts.items()}

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = optim.apply_updates(_optimizer(config), state.opt_state, state.params,
                                            grads, state.hparams["lr"])

    metrics = {**metrics, "loss": loss, "policy_loss": parts["policy"],
               "value_loss": parts["value"], "entropy": parts["entropy"],
               "grad_norm": optax.tree.norm(grads)}
    new = state.replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs,
                        key=key, step=state.step + 1)
    return new, metrics


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions for raw observations [B, *obs_shape]: the policy's mode, or a sample."""
    policy, _ = op.build_networks(config, task)
    return op.act(policy, state.params["policy"], state.env_state, obs, task, key)


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of greedy (mode-action) episodes."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.on_policy  # the logs' env / gradient step axes (launch/registry.py)
