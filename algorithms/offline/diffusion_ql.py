"""Diffusion-QL: a diffusion policy trained by behaviour cloning plus Q-maximisation through
its sampling chain.

Wang, Hunt, Zhou (2023), "Diffusion Policies as an Expressive Policy Class for Offline
Reinforcement Learning", ICLR, arXiv:2208.06193, Eqs. 1-4 and Algorithm 1; details from the
authors' code (github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL, `agents/
ql_diffusion.py`, `agents/diffusion.py`, `main.py`).

The policy pi_theta(a | s) is a conditional DDPM over actions with N = 5 levels
(`_diffusion_policy`: the VP schedule, the eps-network, the clipped reverse chain of Eq. 1).
Per gradient step, on one batch (s, a, r, s', terminal) ~ D:

    critics  L(phi) = E[ sum_{j=1,2} (r + gamma (1 - terminal) min_k Q'_k(s', a'_0) - Q_j(s, a))^2 ]
             a'_0 ~ pi_theta'(. | s'), the EMA policy theta' (Eq. 4; twin critics, Polyak targets)
    policy   L(theta) = L_d(theta) + eta L_q(theta)                                    (Eq. 3)
             L_d: the denoising loss (Eq. 2)
             L_q = -E_s[Q_j(s, a_0)] / E_s[|Q_k(s, a_0)|] (stop-gradient), a_0 ~ pi_theta(. | s)
                   sampled through all N steps, (j, k) = (1, 2) or (2, 1) at random per step
    EMA      theta' <- 0.995 theta' + 0.005 theta every 5 steps from step 1000 on

The Q term is normalised by the batch's Q magnitude (the code's form of the paper's
alpha = eta / E|Q|), so eta does not depend on the reward scale. `max_q_backup` (the paper's
AntMaze setting) backs up min_k max over 10 sampled next actions instead of one sample.
The critic steps first and the policy's L_q reads the updated critics, as in the code.

Evaluation (the code's `sample_action`): 50 candidate actions per state from pi_theta, one
drawn with probabilities softmax(min_k Q'_k(s, a)) (`selection="softmax"`) or the argmax.
"""
from __future__ import annotations

import sys
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim
from algorithms.core.networks import QEnsemble
from algorithms.offline import _diffusion_policy as dp
from algorithms.offline import common

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr", "eta")
make_task = common.make_task

SELECTIONS = ("softmax", "argmax")
CONFIG_RULES = {**dp.RULES, "eta": rules.non_negative, "selection": rules.one_of(*SELECTIONS)}
CONFIG_CHECKS = dp.CHECKS


def q_loss(q_new: jax.Array, first: jax.Array) -> jax.Array:
    """L_q = -mean(Q_j(s, a_0)) / mean(|Q_k(s, a_0)|), the denominator without gradient.

    Args:
      q_new: [2, B] both critics at the policy's sampled actions a_0 (differentiable in a_0).
      first: boolean scalar; True: j = 1, k = 2; False: j = 2, k = 1.
    Returns: scalar (multiply by eta).
    """
    chex.assert_rank(q_new, 2)
    numerator = jnp.where(first, q_new[0], q_new[1])
    denominator = jnp.where(first, q_new[1], q_new[0])
    return -numerator.mean() / jax.lax.stop_gradient(jnp.abs(denominator).mean())


def backup_values(target_q: jax.Array, max_q_backup: bool) -> jax.Array:
    """The bootstrap value at s' from target critics at sampled next actions.

    Args:
      target_q: [2, B, K] Q'_k(s', a'^(m)) for K sampled actions per next state (K = 1 without
        the max-Q backup).
    Returns: [B] min_k Q'_k(s', a'), or min_k max_m Q'_k(s', a'^(m)) with `max_q_backup`
      (the max per critic first, as the code does).
    """
    chex.assert_rank(target_q, 3)
    per_critic = target_q.max(axis=2) if max_q_backup else target_q[:, :, 0]
    return per_critic.min(axis=0)


@struct.dataclass
class State:
    actor_params: Any  # the noise network
    ema_params: Any  # its EMA (samples the critic targets' next actions)
    critic_params: Any  # QEnsemble of 2 critics
    target_critic_params: Any
    actor_opt: Any
    critic_opt: Any
    key: jax.Array
    step: jax.Array  # int32, runner updates done
    grad_step: jax.Array  # int32, gradient steps done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """The authors' locomotion settings (`main.py`): N = 5, the VP schedule, eta = 1, Adam 3e-4
    for the policy and the critics with the cosine decay of `--lr_decay` (their published runs
    use it), batch 256, gamma 0.99, tau 0.005, 3 x 256 Mish networks, EMA 0.995 every 5 steps
    from step 1000, 50 candidates at evaluation. Gradient clipping: the code tunes it per
    dataset (1 to 9 on locomotion); 5 here, the middle of that range."""
    c = dp.policy_config()
    c.critic_hidden_sizes = (256, 256, 256)
    c.critic_activation = "mish"
    c.max_grad_norm = 5.0
    c.tau = 0.005
    c.eta = 1.0
    c.max_q_backup = False
    c.num_backup_actions = 10  # next actions per state for the max-Q backup
    c.selection = "softmax"
    return c


def _critic(config):
    return QEnsemble(tuple(config.critic_hidden_sizes), num=2,
                     activation=dp.ACTIVATIONS[config.critic_activation])


def init(key, config, task) -> State:
    rules.check(config, sys.modules[__name__])
    k_actor, k_critic, key = jax.random.split(key, 3)
    actor_params = dp.init_noise_net(k_actor, config, task)
    critic_params = _critic(config).init(k_critic, jnp.zeros(common.obs_dim(task)),
                                         jnp.zeros(common.action_dim(task)))
    opt = dp.make_optimizer(config)
    return State(actor_params=actor_params, ema_params=actor_params, critic_params=critic_params,
                 target_critic_params=critic_params, actor_opt=opt.init(actor_params),
                 critic_opt=opt.init(critic_params), key=key, step=jnp.int32(0),
                 grad_step=jnp.int32(0),
                 hparams={name: jnp.float32(config[name]) for name in SWEEPABLE})


def update(state: State, config, task):
    net, critic = dp.noise_net(config, task), _critic(config)
    opt = dp.make_optimizer(config)
    lr = dp.scheduled_lr(config, state.hparams["lr"], state.step)
    num_next = int(config.num_backup_actions) if config.max_q_backup else 1

    def gradient_step(state, batch, key):
        obs, actions = batch["obs"], batch["action"]
        k_next, k_loss, k_new, k_pick = jax.random.split(key, 4)

        # Critics (Eq. 4) towards r + gamma (1 - terminal) min_k Q'_k(s', a'), a' ~ EMA policy.
        batch_size = obs.shape[0]
        next_actions, next_states = dp.candidates(net, state.ema_params, batch["next_obs"],
                                                  k_next, config, num_next)
        target_q = critic.apply(state.target_critic_params, next_states,
                                next_actions.reshape(batch_size * num_next, -1))
        next_v = backup_values(target_q.reshape(2, batch_size, num_next), config.max_q_backup)
        critic_params, critic_opt, critic_loss, q = dp.critic_step(
            critic, opt, state.critic_params, state.critic_opt, batch, next_v, batch["reward"],
            config, lr)

        # Policy (Eq. 3): L_d + eta L_q, L_q through all N steps of the chain.
        first = jax.random.bernoulli(k_pick)

        def actor_objective(params):
            bc = dp.denoising_loss(net, params, obs, actions, k_loss, config).mean()
            new_actions = dp.sample_actions(net, params, obs, k_new, config)
            ql = q_loss(critic.apply(critic_params, obs, new_actions), first)
            return bc + state.hparams["eta"] * ql, (bc, ql)

        (actor_loss, (bc, ql)), grads = jax.value_and_grad(actor_objective, has_aux=True)(
            state.actor_params)
        actor_params, actor_opt = optim.apply_updates(opt, state.actor_opt, state.actor_params,
                                                      grads, lr)

        ema_params, target_critic_params = dp.moving_averages(state, actor_params,
                                                              critic_params, config)
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "bc_loss": bc,
                   "q_loss": ql, "q_mean": q.mean(), "target_q_mean": next_v.mean()}
        return state.replace(actor_params=actor_params, ema_params=ema_params,
                             critic_params=critic_params,
                             target_critic_params=target_critic_params, actor_opt=actor_opt,
                             critic_opt=critic_opt, grad_step=state.grad_step + 1), metrics

    return common.run_gradient_steps(gradient_step, state, config, task)


def select_action(state: State, obs: jax.Array, config, task, key=None,
                  selection: str | None = None) -> jax.Array:
    """Actions in [-1, 1]^|A| at raw observations [B, obs_dim]: `num_candidates` samples of
    pi_theta per state scored by min_k Q'_k(s, a); softmax-sampled with a key and
    selection="softmax", else the argmax. Without a key the candidates' noise is fixed."""
    selection = config.selection if selection is None else selection
    states, k_sample = dp.states_and_key(obs, task, key)
    k_candidates, k_choose = jax.random.split(k_sample)
    num = int(config.num_candidates)
    actions, rep = dp.candidates(dp.noise_net(config, task), state.actor_params, states,
                                 k_candidates, config, num)
    q = _critic(config).apply(state.target_critic_params, rep, actions.reshape(rep.shape[0], -1))
    logits = q.min(axis=0).reshape(states.shape[0], num)
    return dp.choose(k_choose if key is not None and selection == "softmax" else None,
                     actions, logits)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim] (`select_action`, mapped to the
    box): the argmax-Q candidate without a key, the paper's softmax draw with one."""
    return dp.to_env(select_action(state, obs, config, task, key), task)


def evaluate(state: State, key, config, task):
    return dp.evaluate_sampling(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
