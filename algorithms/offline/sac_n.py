"""SAC-N: soft actor-critic with N critics, pessimistic through the ensemble minimum.

An, Moon, Kim, Song (2021), "Uncertainty-Based Offline Reinforcement Learning with Diversified
Q-Ensemble", NeurIPS, arXiv:2110.01548, Sec. 3 (Eq. 2-3). SAC (Haarnoja et al. 2018,
arXiv:1812.05905) trained on a fixed dataset D, with the clipped double-Q minimum taken over N
critics instead of two:

    critics  min_phi  E_D[ sum_j (Q_j(s, a) - y)^2 ]                                    (Eq. 2)
             y = r + gamma (1 - terminal) (min_{j=1..N} Q'_j(s', a') - alpha log pi(a'|s')),
             a' ~ pi(.|s')
    actor    min_theta E_{s~D, a~pi}[ alpha log pi(a|s) - min_{j=1..N} Q_j(s, a) ]      (Eq. 3)
    alpha    automatic entropy temperature, target entropy -|A| (SAC Sec. 5)

The minimum of N independent estimates is a lower confidence bound whose pessimism grows with N
and with the ensemble's spread, which is large exactly at actions the data does not cover
(Sec. 3.2): no behaviour-policy model or explicit penalty is needed, only enough critics.

The losses are SAC's (`algorithms.online.sac`: soft_q_target already takes the minimum over any
number of critics); the N critics are one vmapped `QEnsemble`. One fused gradient step computes
the temperature, actor and critic gradients all from the parameters at the start of the step
(as the authors' code does: its policy loss uses the critics before their update), so the three
are independent and XLA schedules them together; then targets are Polyak-averaged.

`sac_step` is shared: EDAC (edac.py) is this step plus a critic regulariser, and CQL (cql.py)
is this step with two critics plus its conservative penalty.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules, optim
from algorithms.core.networks import QEnsemble, TanhGaussianPolicy, TanhNormal
from algorithms.offline import common
from algorithms.online.sac import sac_actor_loss, sac_alpha_loss, sac_critic_loss, soft_q_target

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr",)
make_task = common.make_task
CONFIG_RULES = {**common.CONFIG_RULES,
                "init_alpha": config_rules.positive,  # the temperature is trained as log alpha
                "target_entropy": config_rules.finite()}


@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any  # QEnsemble of num_critics critics
    target_critic_params: Any
    log_alpha: jax.Array  # scalar, entropy temperature
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """CORL's SAC-N (Tarasov et al. 2022, `algorithms/offline/sac_n.py`), which follows the
    authors' code: N = 10 critics (what the paper uses on halfcheetah; it tunes N per dataset,
    up to 500 on hopper), Adam 3e-4 for actor, critics and temperature, tau 5e-3, batch
    256, initial alpha 1, target entropy -|A|. Hidden layers: the project's 256x256 (the
    paper uses three layers of 256; set hidden_sizes=(256, 256, 256) to match)."""
    c = common.offline_config()
    c.num_critics = 10
    c.lr = 3e-4  # actor, critics and temperature
    c.tau = 0.005  # Polyak target smoothing
    c.init_alpha = 1.0
    c.target_entropy = -1.0  # per action dimension: H_bar = target_entropy * |A|
    c.deterministic_backup = False  # True: no -alpha log pi term in the target (CQL's default)
    return c


def networks(config, task):
    """(TanhGaussianPolicy, QEnsemble of config.num_critics critics)."""
    hidden = tuple(config.hidden_sizes)
    return (TanhGaussianPolicy(hidden, common.action_dim(task)),
            QEnsemble(hidden, num=int(config.num_critics)))


def policy_sample(actor, params, obs, key, num: int | None = None):
    """a ~ pi(.|s) in [-1, 1]^|A| reparameterised, and log pi(a|s).

    obs [B, obs_dim] -> ([B, A], [B]); with `num`, `num` samples per state: ([B, num, A],
    [B, num]) from one actor forward pass.
    """
    pi = actor.apply(params, obs)
    if num is not None:
        shape = (pi.loc.shape[0], num, pi.loc.shape[1])
        pi = TanhNormal(jnp.broadcast_to(pi.loc[:, None], shape),
                        jnp.broadcast_to(pi.log_std[:, None], shape))
    return pi.sample_and_log_prob(seed=key)


def init_fields(key, config, task, lrs) -> dict:
    """Parameters and optimizer states of the actor, the critic ensemble and the temperature
    (the fields of `State` except hparams), for SAC-N, EDAC and CQL; `lrs`: the (actor,
    critic, temperature) learning rates the optimizer states start with."""
    if int(config.num_critics) < 1:
        raise ValueError(f"num_critics must be a positive integer; got {config.num_critics}")
    actor, critic = networks(config, task)
    k_actor, k_critic, key = jax.random.split(key, 3)
    obs = jnp.zeros(common.obs_dim(task))
    actor_params = actor.init(k_actor, obs)
    critic_params = critic.init(k_critic, obs, jnp.zeros(common.action_dim(task)))
    log_alpha = jnp.log(jnp.float32(config.init_alpha))
    actor_lr, critic_lr, alpha_lr = lrs  # the traced rates are written in at each step
    return dict(actor_params=actor_params, critic_params=critic_params,
                target_critic_params=critic_params, log_alpha=log_alpha,
                actor_opt=optim.optimizer(actor_lr, inject_all=True).init(actor_params),
                critic_opt=optim.optimizer(critic_lr, inject_all=True).init(critic_params),
                alpha_opt=optim.optimizer(alpha_lr, inject_all=True).init(log_alpha), key=key,
                step=jnp.int32(0))


def init(key, config, task) -> State:
    return State(**init_fields(key, config, task, (config.lr,) * 3),
                 hparams={"lr": jnp.float32(config.lr)})


def plain_critic(critic) -> Callable:
    """The default critic term: Q_j(s, a) of the dataset actions and no regulariser."""
    def values(params, batch, _key):
        q = critic.apply(params, batch["obs"], batch["action"])
        return q, jnp.zeros(q.shape[1]), {}
    return values


def sac_step(state, batch, key, config, task, *, lrs, critic_values: Callable | None = None):
    """One fused SAC-N gradient step (temperature, actor, critics, targets); returns
    (state', metrics, aux), aux being what `critic_values` reported.

    All gradients are taken at the parameters the step starts from. The critics minimise, per
    sample, sum_j (Q_j(s, a) - y)^2 + regulariser: the squared error without SAC's 1/2
    (= 2 * sac_critic_loss), the scale of the authors' code (MSE), for which CQL's alpha and
    EDAC's eta are tuned.

    Args:
      lrs: (actor, critic, temperature) learning rates (traced scalars).
      critic_values: (critic_params, batch, key) -> (Q_j(s, a) [N, B] of the dataset actions,
        regulariser [B] differentiable in the critic parameters, aux dict); default
        `plain_critic` (SAC-N). EDAC adds its diversity term, CQL its conservative penalty.
    """
    actor, critic = networks(config, task)
    actor_lr, critic_lr, alpha_lr = lrs
    # one Adam: each apply_updates below writes its own rate
    opt = optim.optimizer(actor_lr, inject_all=True)
    critic_values = critic_values or plain_critic(critic)
    k_next, k_pi, k_reg = jax.random.split(key, 3)
    alpha = jnp.exp(state.log_alpha)

    # Critics (Eq. 2): target from the N target critics' minimum.
    next_actions, next_log_probs = policy_sample(actor, state.actor_params, batch["next_obs"],
                                                 k_next)
    next_q = critic.apply(state.target_critic_params, batch["next_obs"], next_actions)
    discounts = config.gamma * (1.0 - batch["terminal"])
    backup_alpha = 0.0 if config.deterministic_backup else alpha
    targets = soft_q_target(next_q, next_log_probs, batch["reward"], discounts,
                            alpha=backup_alpha)

    def critic_objective(params):
        q, regulariser, aux = critic_values(params, batch, k_reg)
        loss = 2.0 * sac_critic_loss(q, targets) + regulariser
        return loss.mean(), (q, aux)

    (critic_loss, (q, aux)), grads = jax.value_and_grad(critic_objective, has_aux=True)(
        state.critic_params)
    critic_params, critic_opt = optim.apply_updates(opt, state.critic_opt, state.critic_params,
                                                    grads, critic_lr)

    # Actor (Eq. 3) against the minimum of the N critics at the start of the step.
    def actor_objective(params):
        actions, log_probs = policy_sample(actor, params, batch["obs"], k_pi)
        q_pi = jnp.min(critic.apply(state.critic_params, batch["obs"], actions), axis=0)
        return sac_actor_loss(log_probs, q_pi, alpha).mean(), log_probs

    (actor_loss, log_probs), grads = jax.value_and_grad(actor_objective, has_aux=True)(
        state.actor_params)
    actor_params, actor_opt = optim.apply_updates(opt, state.actor_opt, state.actor_params, grads,
                                                  actor_lr)

    # Temperature (SAC Sec. 5).
    target_entropy = config.target_entropy * common.action_dim(task)
    alpha_loss, grad = jax.value_and_grad(
        lambda la: sac_alpha_loss(la, log_probs, target_entropy=target_entropy).mean())(
        state.log_alpha)
    log_alpha, alpha_opt = optim.apply_updates(opt, state.alpha_opt, state.log_alpha, grad,
                                               alpha_lr)

    target_critic_params = optim.polyak(critic_params, state.target_critic_params,
                                        jnp.float32(config.tau))
    metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss,
               "alpha": alpha, "entropy": -log_probs.mean(), "q_mean": q.mean(),
               "q_std": q.std(axis=0).mean()}
    state = state.replace(actor_params=actor_params, critic_params=critic_params,
                          target_critic_params=target_critic_params, log_alpha=log_alpha,
                          actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt)
    return state, metrics, aux


def update(state: State, config, task):
    lr = state.hparams["lr"]

    def gradient_step(state, batch, key):
        state, metrics, _ = sac_step(state, batch, key, config, task, lrs=(lr, lr, lr))
        return state, metrics

    return common.run_gradient_steps(gradient_step, state, config, task)


def act(state, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim]: tanh(mean(s)) without a key, a
    sample of the squashed Gaussian policy with one."""
    return common.policy_action(networks(config, task)[0], state.actor_params, obs, task, key)


def evaluate(state, key, config, task):
    return common.evaluate_policy(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
