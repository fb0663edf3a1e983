"""Advantage-weighted regression (AWR) on a fixed dataset: fit a value function to TD(lambda)
returns, then regress the policy onto the dataset's actions weighted by exp(advantage / beta).

Peng, Kumar, Zhang, Levine (2019), "Advantage-Weighted Regression: Simple and Scalable
Off-Policy Reinforcement Learning", arXiv:1910.00177, Algorithm 1 (run on a static dataset,
as in the paper's experiments without environment interaction), and the authors' code
(github.com/xbpeng/awr, `awr_agent.py`: TD(lambda) returns, advantages standardised over the
buffer, temperature 1, weights clipped at 20, lambda 0.95).

One runner `update` is one iteration of Algorithm 1 with the dataset D as its replay buffer:

    returns   R_i = r_i + gamma (1 - d_i) [(1 - lam) V(s'_i) + lam R_{i+1}]       (TD(lambda))
              on an episode's last row R_i = r_i + gamma (1 - d_i) V(s'_i)
    value     V <- argmin_V E_D[(R - V(s))^2]        (`value_steps_per_update` Adam steps)
    weights   A_i = R_i - V(s_i) with R and V recomputed from the fitted value net,
              standardised over the dataset; w_i = min(exp(A_i / beta), omega_max)
    policy    pi <- argmax_pi E_D[w log pi(a|s)]     (`steps_per_update` Adam steps)

d_i = 1 at true terminations; episodes end at terminations and where s'_i is not the next
row's observation (a time limit or a new episode), where the return bootstraps from V(s'_i).
lam = 1 gives Monte-Carlo returns (bootstrapped only where a time limit cut the episode),
lam = 0 one-step TD targets. R_i - V(s_i) is GAE(gamma, lam)'s advantage. Config names:
beta = `temperature`, omega_max = `max_weight`, lam = `td_lambda`.

The weights come from the closed form of a KL-constrained policy improvement,
pi*(a|s) ∝ mu(a|s) exp(A(s, a) / beta), projected onto the policy class by maximum likelihood:
always positive, so this is a weighted regression on behaviour data, never a step toward
actions the data lack. beta -> infinity is behaviour cloning; beta -> 0 imitates only each
state's best actions (the study notes' multiplier lambda on the advantage is 1 / beta:
lambda -> 0 is behaviour cloning). The clip omega_max bounds the weight of one transition.

Choices, each as in the authors' code unless noted:
* Both regressions run on uniform minibatches of the whole dataset; the value net fits its
  targets in standardised units, (R - m) / s with m, s the mean and standard deviation of the
  dataset's discounted Monte-Carlo returns (the authors normalise the value too).
* Advantages standardised over the dataset before exp(A / beta) (`normalize_advantages`).
* Adam 3e-4 for both networks (the offline family's optimizer), not the authors' SGD with
  momentum (policy 5e-5, value 1e-2, the defaults of their online runs).
* Policy: `TanhMeanGaussianPolicy` (IQL's and AWAC's: a Gaussian with mean tanh(MLP(s)) and a
  learned state-independent log std), instead of the authors' fixed std 0.2 with a penalty
  on means outside the action box. Evaluation acts with the mean.
"""
from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules, episodes, optim, returns
from algorithms.core.networks import TanhMeanGaussianPolicy, ValueNet
from algorithms.offline import common

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr", "temperature", "td_lambda")
make_task = common.make_task
CONFIG_RULES = {**common.CONFIG_RULES,
                "temperature": config_rules.positive,  # beta, divides the advantages
                "max_weight": config_rules.positive,  # omega_max
                "td_lambda": config_rules.probability,  # 0: one-step TD, 1: Monte Carlo
                "value_steps_per_update": config_rules.count}

# Rows per chunk when the value net is evaluated on the whole dataset (bounds the activations
# held at once when many seeds run in one program).
VALUE_CHUNK = 8192


# ---------------------------------------------------------------------------- returns & losses
def episode_ends(data: dict) -> jax.Array:
    """bool [N]: the last row of each episode of `task.data`: a true termination, or a row
    whose next observation is not the next row's observation; the dataset's last row too."""
    return episodes.episode_ends(data["terminals"], observations=data["observations"],
                                 next_observations=data["next_observations"], close_last=True)


def lambda_returns(rewards: jax.Array, next_values: jax.Array, terminals: jax.Array,
                   ends: jax.Array, gamma: jax.Array | float,
                   td_lambda: jax.Array | float) -> jax.Array:
    """TD(lambda) returns of a flat stream of transitions (Sutton & Barto 2018, Sec. 12.1;
    AWR's value targets).

        R_i = r_i + gamma (1 - d_i) [(1 - lam) V(s'_i) + lam R_{i+1}],
        R_i = r_i + gamma (1 - d_i) V(s'_i)                     on the last row of an episode.

    Written as R_i = a_i + b_i R_{i+1} and solved by an associative scan (O(log N) depth) over
    the whole stream; b_i = 0 at episode ends, so no return leaks across episodes.

    Args:
      rewards, next_values (V(s'_i)), terminals (d_i, 1.0 at a true termination): [N].
      ends: bool [N], True on each episode's last row (`episode_ends`; the last row must be one).
      gamma, td_lambda: scalars in [0, 1].
    Returns: [N] returns, rewards' dtype.
    """
    chex.assert_rank([rewards, next_values, terminals, ends], 1)
    chex.assert_equal_shape([rewards, next_values, terminals, ends])
    discounts = gamma * (1.0 - terminals.astype(rewards.dtype))
    lam = jnp.where(ends, 0.0, td_lambda).astype(rewards.dtype)
    offsets = rewards + discounts * (1.0 - lam) * next_values
    factors = discounts * lam

    def compose(later, earlier):
        # R = a_e + b_e (a_l + b_l R') = (a_e + b_e a_l) + (b_e b_l) R'
        return earlier[0] + earlier[1] * later[0], earlier[1] * later[1]

    out, _ = jax.lax.associative_scan(compose, (offsets, factors), reverse=True)
    return out


def awr_weights(advantages: jax.Array, temperature: jax.Array | float,
                max_weight: jax.Array | float = 20.0) -> jax.Array:
    """Weights min(exp(A / beta), omega_max) of Algorithm 1's policy step, without gradient.

    Args:
      advantages: [B] (standardised or raw) A(s, a).
      temperature: beta > 0 (scalar).
      max_weight: omega_max > 0; clipped weights are exactly this value (`common.clipped_exp`).
    Returns: [B].
    """
    chex.assert_rank(advantages, 1)
    return jax.lax.stop_gradient(common.clipped_exp(advantages / temperature, max_weight))


def awr_policy_loss(log_probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Per-sample weighted negative log-likelihood -w log pi(a|s) of dataset actions
    (Algorithm 1's policy step, negated to minimise).

    Args:
      log_probs: [B] log pi(a|s), differentiable w.r.t. the policy parameters.
      weights: [B] from `awr_weights` (constants).
    Returns: [B] (mean over the batch at the call site).
    """
    chex.assert_rank([log_probs, weights], 1)
    chex.assert_equal_shape([log_probs, weights])
    return -jax.lax.stop_gradient(weights) * log_probs


def awr_value_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-sample squared error (R - V(s))^2 of Algorithm 1's value step (both in the value
    net's standardised units); no gradient into the targets.

    Args:
      predictions, targets: [B].
    Returns: [B].
    """
    chex.assert_rank([predictions, targets], 1)
    chex.assert_equal_shape([predictions, targets])
    return (jax.lax.stop_gradient(targets) - predictions) ** 2


# ---------------------------------------------------------------------------- state & config
@struct.dataclass
class State:
    actor_params: Any
    value_params: Any  # the net predicts (V - value_center) / value_scale
    actor_opt: Any
    value_opt: Any
    value_center: jax.Array  # float32: mean of the dataset's discounted Monte-Carlo returns
    value_scale: jax.Array  # float32: their standard deviation (1 when they are constant)
    key: jax.Array
    step: jax.Array  # int32, updates (AWR iterations) done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """AWR's settings (authors' code: beta 1, omega_max 20, lambda 0.95, standardised
    advantages, 500 value steps per 1000 policy steps) with the offline family's Adam 3e-4,
    batch 256 and 256-256 networks."""
    c = common.offline_config()
    c.lr = 3e-4  # Adam, policy and value net
    c.temperature = 1.0  # beta: w = exp(A / beta)
    c.max_weight = 20.0  # omega_max: the weight clip
    c.td_lambda = 0.95  # lambda of the TD(lambda) returns
    c.normalize_advantages = True  # standardise A over the dataset before exp(A / beta)
    c.value_steps_per_update = 500  # value-net steps per update, before the policy steps
    return c


def _nets(config, task):
    hidden = tuple(config.hidden_sizes)
    return (TanhMeanGaussianPolicy(hidden, common.action_dim(task)),
            ValueNet(hidden, activation=nn.relu))


def dataset_values(value: ValueNet, params, obs: jax.Array, center, scale) -> jax.Array:
    """V(s) = center + scale * net(s) at every row of normalised observations `obs` [N, d],
    evaluated in chunks of VALUE_CHUNK rows: [N]."""
    return center + scale * jax.lax.map(lambda o: value.apply(params, o), obs,
                                        batch_size=VALUE_CHUNK)


def monte_carlo_statistics(data: dict, gamma: float) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of the discounted Monte-Carlo returns of every row of `task.data` (lambda =
    1, no bootstrap); std is 1 when the returns are constant."""
    rewards = data["rewards"]
    mc = lambda_returns(rewards, jnp.zeros_like(rewards), data["terminals"], episode_ends(data),
                        gamma, 1.0)
    std = jnp.std(mc)
    return jnp.mean(mc), jnp.where(std > 0, std, 1.0)


def init(key, config, task) -> State:
    actor, value = _nets(config, task)
    k_actor, k_value, key = jax.random.split(key, 3)
    obs = jnp.zeros(common.obs_dim(task))
    actor_params = actor.init(k_actor, obs)
    value_params = value.init(k_value, obs)
    # the rate in state.hparams is written in at each step
    opt = optim.optimizer(config.lr, inject_all=True)
    center, scale = monte_carlo_statistics(task.data, float(config.gamma))
    return State(actor_params=actor_params, value_params=value_params,
                 actor_opt=opt.init(actor_params), value_opt=opt.init(value_params),
                 value_center=center.astype(jnp.float32), value_scale=scale.astype(jnp.float32),
                 key=key, step=jnp.int32(0),
                 hparams={name: jnp.float32(config[name]) for name in SWEEPABLE})


def update(state: State, config, task):
    actor, value = _nets(config, task)
    opt = optim.optimizer(config.lr, inject_all=True)
    hp, data = state.hparams, task.data
    ends = episode_ends(data)
    obs = common.normalize_obs(data["observations"], task)
    next_obs = common.normalize_obs(data["next_observations"], task)
    center, scale = state.value_center, state.value_scale

    def returns_and_values(params):
        v = dataset_values(value, params, obs, center, scale)
        next_v = dataset_values(value, params, next_obs, center, scale)
        return lambda_returns(data["rewards"], next_v, data["terminals"], ends, config.gamma,
                              hp["td_lambda"]), v

    # Value step of Algorithm 1: regress V on the TD(lambda) returns of the current V.
    targets, _ = returns_and_values(state.value_params)

    def adam_step(state, network, objective):
        """One Adam step of `objective` on state.<network>_params ("actor" or "value")."""
        params, opt_state = getattr(state, f"{network}_params"), getattr(state, f"{network}_opt")
        loss, grads = jax.value_and_grad(objective)(params)
        params, opt_state = optim.apply_updates(opt, opt_state, params, grads, hp["lr"])
        return state.replace(**{f"{network}_params": params, f"{network}_opt": opt_state}), loss

    def value_step(state, batch, _key):
        def objective(params):
            return awr_value_loss(value.apply(params, batch["obs"]), batch["target"]).mean()

        state, loss = adam_step(state, "value", objective)
        return state, {"value_loss": loss}

    state, value_metrics = common.scan_gradient_steps(
        value_step, state, task, config.batch_size, config.value_steps_per_update,
        per_row={"target": (targets - center) / scale})

    # Policy step: advantages of the fitted V, weighted maximum likelihood of the data's actions.
    rets, values = returns_and_values(state.value_params)
    advantages = rets - values
    scores = (returns.normalize_advantages(advantages, eps=1e-5)
              if config.normalize_advantages else advantages)
    weights = awr_weights(scores, hp["temperature"], config.max_weight)

    def policy_step(state, batch, _key):
        def objective(params):
            log_probs = actor.apply(params, batch["obs"]).log_prob(batch["action"])
            return awr_policy_loss(log_probs, batch["weight"]).mean()

        state, loss = adam_step(state, "actor", objective)
        return state, {"actor_loss": loss}

    state, policy_metrics = common.scan_gradient_steps(
        policy_step, state, task, config.batch_size, config.steps_per_update,
        per_row={"weight": weights})

    metrics = {"value_loss": value_metrics["value_loss"].mean(),
               "actor_loss": policy_metrics["actor_loss"].mean(),
               "return_mean": rets.mean(), "v_mean": values.mean(),
               "adv_std": advantages.std(), "weight_mean": weights.mean(),
               "clip_fraction": jnp.mean(weights >= config.max_weight)}
    return state.replace(step=state.step + 1), metrics


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim]: the policy's mean tanh(MLP(s))
    without a key, a Gaussian sample (clipped to the box) with one."""
    return common.policy_action(_nets(config, task)[0], state.actor_params, obs, task, key)


def evaluate(state: State, key, config, task):
    return common.evaluate_policy(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
