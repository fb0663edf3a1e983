"""REINFORCE with a learned state-value baseline (Williams 1992; Sutton & Barto 2018, Ch. 13.4).

    grad J(theta) ~ mean_t [ (G_t - b(s_t)) grad log pi_theta(a_t | s_t) ],
    G_t = sum_{t' >= t} gamma^{t'-t} r_{t'}                  (reward-to-go, discounted)
    b(s) = v_w(s),   w <- argmin mean_t (G_t - v_w(s_t))^2   (regression baseline)

Credit assignment: weighting log pi(a_t|s_t) by the whole
trajectory's return R(tau) is unbiased but credits a_t with rewards that came before it; the
reward-to-go sum_{t'>=t} r_{t'} keeps only the rewards a_t can influence, and the discount
gamma^{t'-t} weights near consequences more. Subtracting a baseline b(s_t) (any function of the
state, here v_w) leaves the gradient unbiased, since E_a[grad log pi(a|s)] = 0, and lowers its
variance; the difference G_t - b(s_t) is the advantage estimate A(s_t, a_t).

As in common practice (and unlike Sutton & Barto's box, whose update carries gamma^t), the
per-step weight gamma^t is dropped, so every visited state counts equally (Thomas 2014 discusses
the bias this introduces).

One `update` collects `num_steps` steps of each of `num_envs` environments with the current
policy, then takes one gradient step on the policy (Adam, rate `actor_lr`) and `vf_steps`
full-batch steps on the baseline (Adam, rate `critic_lr`). Episodes rarely fit exactly into a
rollout, so:
  * `bootstrap_partial=True` (default): an episode still running at the rollout's end is
    completed by the baseline's value of the last observation, G_T = v_w(s_T). The baseline is
    then also used for (one) bootstrap, a small bias that makes every sample usable.
  * `bootstrap_partial=False`: samples of an episode that does not end inside the rollout are
    masked out of both losses (pure Monte-Carlo returns; choose num_steps >> episode length).
Either way an episode cut by the time limit (truncated, not terminated) is continued by
v_w(final observation): the time limit is not part of the task (Pardo et al. 2018).
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim, tasks
from algorithms.core.evaluation import evaluate_act
from algorithms.core.returns import discounted_returns, normalize_advantages
from algorithms.online import _budget
from algorithms.online import _onpolicy as op

TASK_FLAG = "env"
DEFAULT_TASK = "CartPole-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ()  # discrete (Categorical) and continuous (Gaussian) actions
SWEEPABLE = ("actor_lr", "critic_lr")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


def reinforce_loss(log_probs: jax.Array, returns: jax.Array, baselines: jax.Array) -> jax.Array:
    """Per-sample REINFORCE-with-baseline policy loss (Williams 1992, Eq. 11; S&B Eq. 13.11).

        loss_i = -(G_i - b_i) * log pi(a_i | s_i)

    Minimizing its mean ascends the policy-gradient estimate mean_i (G_i - b_i) grad log pi.
    `returns` and `baselines` are treated as constants (stop_gradient): the baseline is trained
    by its own regression loss, never through this one.

    Args:
      log_probs: [B] log pi_theta(a_i | s_i), differentiable in theta.
      returns: [B] reward-to-go G_i.
      baselines: [B] b(s_i), e.g. v_w(s_i).
    Returns: [B] per-sample losses (reduce at the call site).
    """
    chex.assert_rank(log_probs, 1)
    chex.assert_equal_shape([log_probs, returns, baselines])
    advantages = jax.lax.stop_gradient(returns - baselines)
    return -advantages * log_probs


@struct.dataclass
class State:
    policy_params: Any
    value_params: Any
    policy_opt: Any
    value_opt: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_timesteps = 500_000
    c.num_envs = 4
    c.num_steps = 256  # rollout length per env; CartPole episodes last <= 500 steps
    c.num_updates = _budget.num_updates_ref(c)
    c.log_every = 10
    c.eval_every = 50
    c.eval_episodes = 16
    c.gamma = 0.99
    c.actor_lr = 1e-3  # policy step size alpha^theta (Adam)
    c.critic_lr = 1e-3  # baseline step size alpha^w (Adam)
    c.vf_steps = 5  # full-batch baseline regression steps per update
    c.adam_eps = 1e-5
    c.max_grad_norm = 0.5  # global-norm clip of the policy gradient (0: none)
    c.normalize_advantages = True  # (G - b) standardized per batch (a variance reduction)
    c.bootstrap_partial = True  # see module docstring
    c.hidden_sizes = (64, 64)
    c.activation = "tanh"
    c.normalize_obs = False
    return c


CONFIG_RULES = {**op.RULES, "vf_steps": rules.count}
CONFIG_CHECKS = op.CHECKS


def _optimizers(config):
    """(policy optimizer, clipped when max_grad_norm > 0; baseline optimizer), both Adam."""
    return (optim.optimizer(config.actor_lr, eps=config.adam_eps,
                            max_grad_norm=config.max_grad_norm),
            optim.optimizer(config.critic_lr, eps=config.adam_eps))


def init(key, config, task) -> State:
    k_net, k_state = jax.random.split(key)
    _, _, pp, vp, _, env_state, obs = op.init_networks(*jax.random.split(k_net, 3), config, task)
    policy_opt, value_opt = _optimizers(config)
    return State(
        policy_params=pp, value_params=vp, policy_opt=policy_opt.init(pp),
        value_opt=value_opt.init(vp), env_state=env_state, obs=obs, key=k_state,
        step=jnp.int32(0), hparams={k: jnp.float32(config[k]) for k in SWEEPABLE})


def reward_to_go(batch: op.Rollout, next_values: jax.Array, gamma: float,
                 bootstrap_partial: bool) -> tuple[jax.Array, jax.Array]:
    """(returns [T, N], mask [T, N]): discounted reward-to-go of a rollout.

    A truncated step's reward is augmented by gamma v(final observation), which continues the
    cut episode; the rollout's last step bootstraps from v(s_T) or, without `bootstrap_partial`,
    the samples of unfinished episodes get mask 0.
    """
    f = batch.rewards.dtype  # gamma and the masks in the rewards' precision (float64 under x64)
    cut = batch.truncated & ~batch.terminated
    rewards = batch.rewards + gamma * cut.astype(f) * next_values
    if bootstrap_partial:
        returns = discounted_returns(rewards, batch.dones, gamma, bootstrap=next_values[-1])
        return returns, jnp.ones_like(returns)
    returns = discounted_returns(rewards, batch.dones, gamma)
    ends_later = jax.lax.cummax(batch.dones.astype(f), axis=0, reverse=True)
    return returns, ends_later


def _masked_mean(x, mask):
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def update(state: State, config, task):
    policy, value = op.build_networks(config, task)
    env = op.make_env(config, task)
    key, k_roll = jax.random.split(state.key)
    env_state, obs, batch, metrics = op.collect(
        k_roll, env, task.params, state.env_state, state.obs,
        op.sample_fn(policy, state.policy_params), int(config.num_steps), task)

    next_values = value.apply(state.value_params, batch.next_obs)
    returns, mask = reward_to_go(batch, next_values, config.gamma, bool(config.bootstrap_partial))
    baselines = value.apply(state.value_params, batch.obs)
    mask, returns, baselines = mask.ravel(), returns.ravel(), baselines.ravel()
    if config.normalize_advantages:  # G - b standardized over the batch: the policy sees
        # reinforce_loss(log pi, G, G - A_normalized)
        baselines = returns - normalize_advantages(returns - baselines, mask)
    obs_flat, actions = op.flatten_time(batch.obs), op.flatten_time(batch.actions)

    def policy_loss(params):
        dist = policy.apply(params, obs_flat)
        loss = _masked_mean(reinforce_loss(dist.log_prob(actions), returns, baselines), mask)
        return loss, _masked_mean(dist.entropy(), mask)

    (pi_loss, entropy), grads = jax.value_and_grad(policy_loss, has_aux=True)(state.policy_params)
    policy_tx, value_tx = _optimizers(config)
    policy_params, popt = optim.apply_updates(policy_tx, state.policy_opt, state.policy_params,
                                              grads, state.hparams["actor_lr"])

    def value_loss(params):  # regression of v_w(s_t) on the (unnormalized) G_t
        v = value.apply(params, obs_flat)
        return _masked_mean(0.5 * (returns - v) ** 2, mask)

    vopt = optim.set_learning_rate(state.value_opt, state.hparams["critic_lr"])

    def vf_step(carry, _):
        params, opt = carry
        loss, g = jax.value_and_grad(value_loss)(params)
        return optim.apply_updates(value_tx, opt, params, g), loss

    (value_params, vopt), vf_losses = jax.lax.scan(
        vf_step, (state.value_params, vopt), None, length=int(config.vf_steps))

    metrics = {**metrics, "policy_loss": pi_loss, "value_loss": vf_losses[0],
               "entropy": entropy, "return_to_go": _masked_mean(returns, mask)}
    new = state.replace(policy_params=policy_params, value_params=value_params,
                        policy_opt=popt, value_opt=vopt, env_state=env_state, obs=obs,
                        key=key, step=state.step + 1)
    return new, metrics


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions for raw observations [B, *obs_shape]: the policy's mode, or a sample."""
    policy, _ = op.build_networks(config, task)
    return op.act(policy, state.policy_params, state.env_state, obs, task, key)


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of greedy (mode-action) episodes."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.on_policy  # the logs' env / gradient step axes (launch/registry.py)
