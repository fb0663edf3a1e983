"""TD3+BC: TD3 whose actor also regresses the dataset's actions.

Fujimoto, Gu (2021), "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS,
arXiv:2106.06860: Sec. 4, Eq. 3-5 (the actor objective, its lambda, state normalisation),
Sec. 5 and the appendix (hyperparameters), and the authors' code (github.com/sfujimoto/TD3_BC,
`TD3_BC.py`).

TD3 (Fujimoto et al. 2018; `algorithms.online.td3`) with two changes:

    actor   pi = argmax_pi E_{(s,a)~D}[ lambda Q_1(s, pi(s)) - (pi(s) - a)^2 ],      (Eq. 3)
            lambda = alpha / ( (1/N) sum_i |Q_1(s_i, pi(s_i))| )   (no gradient through lambda)
    states  s <- (s - mu) / (sigma + 1e-3), the dataset's mean and std   (common.py)

The critics are TD3's unchanged: clipped double Q-learning with target policy smoothing
(noise 0.2 clipped at 0.5, in units of max_action) and Polyak targets; the actor and the targets
are updated after every `policy_delay` = 2 critic steps. The squared error (pi(s) - a)^2 is
averaged over action dimensions as in the authors' `F.mse_loss(pi, action)`.

One `gradient_step` is one static block of `policy_delay` critic steps followed by the actor
and target step (as `algorithms.online.td3` does): the actor's gradient is computed only when it
is used, never computed and masked away. `steps_per_update` counts critic steps (must be a
multiple of policy_delay); each block draws `policy_delay * batch_size` transitions at once
(uniform with replacement, so its slices are independent batches) and the actor step uses the
block's last batch, the batch of the critic step just before it, as in the authors' code.

Defaults (paper App. C / code): alpha 2.5, Adam 3e-4 for actor and critics, batch 256,
256-256 ReLU nets, gamma 0.99, tau 0.005, policy noise 0.2, noise clip 0.5, policy delay 2,
state normalisation on, rewards unscaled.
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules, optim
from algorithms.core.networks import DeterministicPolicy, QEnsemble, QNet
from algorithms.offline import common
from algorithms.online.td3 import critic_update

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr", "tau", "alpha")
make_task = common.make_task
CONFIG_RULES = {**common.CONFIG_RULES,
                "alpha": config_rules.non_negative,  # 0: no BC term (Eq. 3)
                "policy_noise": config_rules.non_negative,
                "noise_clip": config_rules.non_negative,
                "policy_delay": config_rules.count}


def _whole_blocks(config):
    """An update runs whole blocks of `policy_delay` critic steps and one actor step."""
    steps, delay = config.steps_per_update, config.policy_delay
    if steps % delay:
        return (f"config.steps_per_update={steps} is not allowed: it must be a multiple of "
                f"config.policy_delay={delay} (each update runs whole blocks of policy_delay "
                "critic steps and one actor step)")
    return None


CONFIG_CHECKS = (_whole_blocks,)


# ---------------------------------------------------------------------------- losses
def td3_bc_actor_loss(q_values: jax.Array, predicted_actions: jax.Array,
                      dataset_actions: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Per-sample TD3+BC actor loss -lambda Q_1(s, pi(s)) + mean_j (pi_j(s) - a_j)^2 (Eq. 3).

    lambda = alpha / mean_batch |Q_1(s, pi(s))| normalises the Q term to the scale of the BC
    term; it is a constant (stop-gradient), as in the authors' code. Minimised w.r.t. the actor
    through both `q_values` and `predicted_actions`. The batch mean of the result is the
    authors' `-lmbda * Q.mean() + F.mse_loss(pi, action)`.

    Args:
      q_values: [B] Q_1(s, pi(s)) of the first critic.
      predicted_actions: [B, A] pi(s).
      dataset_actions: [B, A] a from the dataset.
      alpha: the BC trade-off (scalar; 2.5 in the paper).
    Returns: [B] (mean over the batch at the call site).
    """
    chex.assert_rank([q_values, predicted_actions, dataset_actions], [1, 2, 2])
    chex.assert_equal_shape([predicted_actions, dataset_actions])
    chex.assert_equal_shape_prefix([q_values, predicted_actions], 1)
    lam = alpha / jax.lax.stop_gradient(jnp.mean(jnp.abs(q_values)))
    return -lam * q_values + jnp.mean((predicted_actions - dataset_actions) ** 2, axis=-1)


# ---------------------------------------------------------------------------- state & config
@struct.dataclass
class State:
    actor_params: Any
    actor_opt: Any
    target_actor_params: Any
    critic_params: Any  # QEnsemble of 2 critics
    critic_opt: Any
    target_critic_params: Any
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """TD3+BC's hyperparameters (paper App. C, authors' code)."""
    c = common.offline_config()
    c.lr = 3e-4  # Adam, actor and critics
    c.tau = 0.005  # Polyak rate of the target actor and critics
    c.alpha = 2.5  # Eq. 3
    c.policy_noise = 0.2  # target policy smoothing std (x max_action)
    c.noise_clip = 0.5  # target policy smoothing clip (x max_action)
    c.policy_delay = 2  # critic steps per actor + target step
    return c


def _nets(config, task):
    hidden = tuple(config.hidden_sizes)
    return DeterministicPolicy(hidden, common.action_dim(task)), QEnsemble(hidden, num=2)


def _block_config(config):
    """The config `run_gradient_steps` sees: one scan step per block of `policy_delay` critic
    steps, drawing the block's `policy_delay` batches at once."""
    delay, steps = int(config.policy_delay), int(config.steps_per_update)
    if delay < 1 or steps % delay:
        raise ValueError(f"steps_per_update ({steps}) must be a positive multiple of "
                         f"policy_delay ({delay}): each update runs whole blocks of policy_delay "
                         f"critic steps and one actor step")
    block = ml_collections.ConfigDict(config)
    block.steps_per_update = steps // delay
    block.batch_size = int(config.batch_size) * delay
    return block


def _first_critic_params(ensemble_params):
    """QNet parameters of the ensemble's first critic (the actor needs only Q_1: evaluating
    the whole ensemble would also run, and differentiate through, Q_2)."""
    (name,) = ensemble_params["params"]  # the one nn.vmap'ed QNet
    return {"params": jax.tree.map(lambda x: x[0], ensemble_params["params"][name])}


def init(key, config, task) -> State:
    _block_config(config)
    actor, critic = _nets(config, task)
    k_actor, k_critic, key = jax.random.split(key, 3)
    obs, action = jnp.zeros(common.obs_dim(task)), jnp.zeros(common.action_dim(task))
    actor_params = actor.init(k_actor, obs)
    critic_params = critic.init(k_critic, obs, action)
    # the rate in state.hparams is written in at each step
    opt = optim.optimizer(config.lr, inject_all=True)
    return State(actor_params=actor_params, actor_opt=opt.init(actor_params),
                 target_actor_params=actor_params, critic_params=critic_params,
                 critic_opt=opt.init(critic_params), target_critic_params=critic_params,
                 key=key, step=jnp.int32(0),
                 hparams={name: jnp.float32(config[name]) for name in SWEEPABLE})


def update(state: State, config, task):
    block = _block_config(config)
    delay = int(config.policy_delay)
    actor, critic = _nets(config, task)
    first_critic = QNet(tuple(config.hidden_sizes))
    opt = optim.optimizer(config.lr, inject_all=True)

    def critic_step(state, batch, key):
        """TD3's critic step (shared with online TD3), `terminal` transitions not bootstrapped."""
        discounts = config.gamma * (1.0 - batch["terminal"])
        critic_params, critic_opt, metrics = critic_update(
            state.critic_params, state.critic_opt, state.target_actor_params,
            state.target_critic_params, batch, key, discounts, actor=actor, critic=critic,
            learning_rate=state.hparams["lr"], policy_noise=config.policy_noise,
            noise_clip=config.noise_clip)
        return state.replace(critic_params=critic_params, critic_opt=critic_opt), metrics

    def actor_step(state, batch):
        """Eq. 3 on the last critic batch against the updated first critic, then targets."""
        obs = batch["obs"]

        def objective(params):
            pi = actor.apply(params, obs)
            q1 = first_critic.apply(_first_critic_params(state.critic_params), obs, pi)
            loss = td3_bc_actor_loss(q1, pi, batch["action"], state.hparams["alpha"]).mean()
            return loss, (q1, pi)

        (loss, (q1, pi)), grads = jax.value_and_grad(objective, has_aux=True)(state.actor_params)
        params, opt_state = optim.apply_updates(opt, state.actor_opt, state.actor_params, grads,
                                                state.hparams["lr"])
        tau = state.hparams["tau"]
        metrics = {"actor_loss": loss,
                   "lambda": state.hparams["alpha"] / jnp.mean(jnp.abs(q1)),
                   "bc_mse": jnp.mean((pi - batch["action"]) ** 2)}
        return state.replace(
            actor_params=params, actor_opt=opt_state,
            target_actor_params=optim.polyak(params, state.target_actor_params, tau),
            target_critic_params=optim.polyak(state.critic_params, state.target_critic_params,
                                              tau),
        ), metrics

    def gradient_step(state, batch, key):
        """`policy_delay` critic steps on the block's batches, then one actor + target step."""
        size = int(config.batch_size)
        batches = [jax.tree.map(lambda x, start=i * size: x[start:start + size], batch)
                   for i in range(delay)]
        critic_metrics = []
        for b, k in zip(batches, jax.random.split(key, delay)):
            state, m = critic_step(state, b, k)
            critic_metrics.append(m)
        state, actor_metrics = actor_step(state, batches[-1])
        critic_metrics = jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *critic_metrics)
        return state, {**critic_metrics, **actor_metrics}

    return common.run_gradient_steps(gradient_step, state, block, task)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions of pi(s) at raw observations [B, obs_dim] (deterministic: the key
    is unused; offline training adds no exploration noise)."""
    return common.policy_action(_nets(config, task)[0], state.actor_params, obs, task)


def evaluate(state: State, key, config, task):
    return common.evaluate_policy(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
