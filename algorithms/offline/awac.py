"""Advantage-weighted actor-critic (AWAC).

Nair, Gupta, Dalal, Levine (2020), "AWAC: Accelerating Online Reinforcement Learning with Offline
Datasets", arXiv:2006.09359: Algorithm 1 (off-policy policy evaluation of Q^pi by TD, and the
KL-constrained policy improvement of Eq. 9-13: constrained problem, its closed form, the KL
projection and the weighted maximum-likelihood update), and the authors' rlkit code
(`awac_trainer.py`, offline MuJoCo settings); hyperparameters of the offline D4RL locomotion runs
from CORL (Tarasov et al. 2022, `algorithms/offline/awac.py`, `configs/offline/awac/*`).

Policy improvement under a KL constraint to the behaviour policy (Eq. 9-10) has the closed form
pi*(a|s) ∝ pi_beta(a|s) exp(A(s, a) / lambda) (Eq. 11); projecting it onto the policy class by
KL (Eq. 12) with samples of the dataset gives weighted maximum likelihood (Eq. 13):

    actor   L(phi)   = -E_{(s,a)~D}[ log pi_phi(a|s) min(exp(A(s, a) / lambda), 100) ]
            A(s, a)  = min_j Q_j(s, a) - min_j Q_j(s, a_pi),  a_pi ~ pi(.|s)
    critics L(theta) = E[ sum_i (Q_i(s, a) - y)^2 ],
            y = r + gamma (1 - terminal) min_j Q'_j(s', a'),  a' ~ pi(.|s')   (TD for Q^pi)
    targets theta' <- tau theta + (1 - tau) theta'

Choices, each as in the authors' rlkit trainer unless noted:
* V^pi(s) = E_{a~pi}[Q(s, a)] is estimated with ONE sampled action (rlkit's default,
  `awr_use_mle_for_vf=False`; CORL the same), not the mean action.
* The normaliser Z(s) of Eq. 11 is dropped (Eq. 13); the weights are clipped at 100
  (CORL's `exp_adv_max`) and NOT normalised over the batch (CORL; rlkit's option
  `normalize_over_batch` would use a softmax over the batch instead).
* lambda = 1/3 (CORL's locomotion configs `awac_lambda: 0.3333`; its code default and rlkit's
  MuJoCo runs use 1-2). lambda -> infinity is behaviour cloning.
* Twin critics with the minimum in both the target and the advantage (rlkit `awr_min_q=True`).
* Every loss of a step reads the networks as they were at the start of the step (rlkit computes
  all losses, then steps the optimisers), so the actor reuses the critic forward pass of the
  critic loss for Q(s, a); one step runs the policy forward on s' (a') and forward + backward on
  s (the mean also gives a_pi), the target critics on (s', a'), the critics forward + backward on
  (s, a) and forward on (s, a_pi).
* Policy: our codebase's `TanhMeanGaussianPolicy` (shared with IQL): a Gaussian with mean
  tanh(MLP(s)) and a state-independent log std clipped to [-5, 2]; sampled actions are clipped to
  [-1, 1] (CORL). CORL's mean is not squashed and its networks have three hidden layers; ours
  use `hidden_sizes` (256-256) for all networks. Evaluation acts with the mean.

The TD target queries the policy's own actions a' ~ pi(.|s'), where the data may hold none:
the extrapolation error that IQL avoids (its targets use dataset actions only) and TD3+BC's
BC term limits.
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules, optim
from algorithms.core.networks import QEnsemble, TanhMeanGaussianPolicy
from algorithms.offline import common
from algorithms.offline.awr import awr_policy_loss
from algorithms.online.td3 import clipped_double_q_target, td3_critic_loss

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr", "tau", "awac_lambda")
make_task = common.make_task
CONFIG_RULES = {**common.CONFIG_RULES,
                "awac_lambda": config_rules.positive,  # divides the advantages (Eq. 13)
                "max_weight": config_rules.positive}  # log(max_weight) clips the exponent


# ---------------------------------------------------------------------------- losses
def awac_weights(advantages: jax.Array, awac_lambda: jax.Array | float,
                 max_weight: float = 100.0) -> jax.Array:
    """Weights min(exp(A(s, a) / lambda), max_weight) of Eq. 13, without gradient.

    Z(s) dropped (Eq. 13); the clip is CORL's `exp_adv_max`. Clipped weights are exactly
    max_weight and large advantages never overflow (`common.clipped_exp`).

    Args:
      advantages: [B] A(s, a) = Q(s, a) - V(s).
      awac_lambda: lambda > 0, the Lagrange multiplier of the KL constraint (scalar).
      max_weight: upper clip (> 0).
    Returns: [B].
    """
    chex.assert_rank(advantages, 1)
    return jax.lax.stop_gradient(common.clipped_exp(advantages / awac_lambda, max_weight))


# Eq. 13's per-sample loss -w(s, a) log pi(a|s) of dataset actions (negated to minimise): AWR's
# weighted likelihood, [B] from log-probs [B] and `awac_weights` [B] (constants).
awac_actor_loss = awr_policy_loss


# ---------------------------------------------------------------------------- state & config
@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any  # QEnsemble of 2 critics
    target_critic_params: Any
    actor_opt: Any
    critic_opt: Any
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """AWAC's offline locomotion settings (CORL configs; rlkit's lr, tau, gamma)."""
    c = common.offline_config()
    c.lr = 3e-4  # Adam, actor and critics
    c.tau = 0.005  # Polyak rate of the target critics
    c.awac_lambda = 1.0 / 3.0  # lambda of Eq. 11-13 (CORL locomotion 0.3333)
    c.max_weight = 100.0  # clip of exp(A / lambda)
    return c


def _nets(config, task):
    hidden = tuple(config.hidden_sizes)
    return TanhMeanGaussianPolicy(hidden, common.action_dim(task)), QEnsemble(hidden, num=2)


def _sample(key, mean, log_std):
    """a ~ N(mean, exp(log_std)^2) clipped to the action box [-1, 1] (no gradient needed)."""
    return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape), -1.0, 1.0)


def init(key, config, task) -> State:
    actor, critic = _nets(config, task)
    k_actor, k_critic, key = jax.random.split(key, 3)
    obs, action = jnp.zeros(common.obs_dim(task)), jnp.zeros(common.action_dim(task))
    actor_params = actor.init(k_actor, obs)
    critic_params = critic.init(k_critic, obs, action)
    # the rate in state.hparams is written in at each step
    opt = optim.optimizer(config.lr, inject_all=True)
    return State(actor_params=actor_params, critic_params=critic_params,
                 target_critic_params=critic_params,
                 actor_opt=opt.init(actor_params), critic_opt=opt.init(critic_params),
                 key=key, step=jnp.int32(0),
                 hparams={name: jnp.float32(config[name]) for name in SWEEPABLE})


def update(state: State, config, task):
    actor, critic = _nets(config, task)
    opt = optim.optimizer(config.lr, inject_all=True)

    def gradient_step(state, batch, key):
        hp = state.hparams
        k_next, k_pi = jax.random.split(key)
        obs, actions = batch["obs"], batch["action"]

        # Critics: TD towards Q^pi with a' ~ pi(.|s') (policy evaluation of Algorithm 1).
        next_pi = actor.apply(state.actor_params, batch["next_obs"])
        next_q = critic.apply(state.target_critic_params, batch["next_obs"],
                              _sample(k_next, next_pi.loc, next_pi.log_std))
        discounts = config.gamma * (1.0 - batch["terminal"])
        targets = clipped_double_q_target(next_q[0], next_q[1], batch["reward"], discounts)

        def critic_objective(params):
            q = critic.apply(params, obs, actions)
            return td3_critic_loss(q, targets).mean(), q

        (critic_loss, q), grads = jax.value_and_grad(critic_objective, has_aux=True)(
            state.critic_params)
        critic_params, critic_opt = optim.apply_updates(opt, state.critic_opt, state.critic_params,
                                                        grads, hp["lr"])

        # Actor (Eq. 13) with A = min_j Q_j(s, a) - min_j Q_j(s, a_pi), critics before their step.
        def actor_objective(params):
            pi = actor.apply(params, obs)
            a_pi = _sample(k_pi, jax.lax.stop_gradient(pi.loc), jax.lax.stop_gradient(pi.log_std))
            v = jnp.min(critic.apply(state.critic_params, obs, a_pi), axis=0)
            advantages = jax.lax.stop_gradient(jnp.min(q, axis=0) - v)
            weights = awac_weights(advantages, hp["awac_lambda"], config.max_weight)
            log_probs = pi.log_prob(actions)
            return awac_actor_loss(log_probs, weights).mean(), (advantages, weights)

        (actor_loss, (advantages, weights)), grads = jax.value_and_grad(
            actor_objective, has_aux=True)(state.actor_params)
        actor_params, actor_opt = optim.apply_updates(opt, state.actor_opt, state.actor_params,
                                                      grads, hp["lr"])
        target_critic_params = optim.polyak(critic_params, state.target_critic_params, hp["tau"])
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": q.mean(),
                   "adv_mean": advantages.mean(), "weight_mean": weights.mean()}
        return state.replace(actor_params=actor_params, critic_params=critic_params,
                             target_critic_params=target_critic_params, actor_opt=actor_opt,
                             critic_opt=critic_opt), metrics

    return common.run_gradient_steps(gradient_step, state, config, task)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim]: the policy's mean tanh(MLP(s))
    without a key, a Gaussian sample (clipped to the box) with one."""
    return common.policy_action(_nets(config, task)[0], state.actor_params, obs, task, key)


def evaluate(state: State, key, config, task):
    return common.evaluate_policy(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
