"""Implicit Q-learning (IQL): in-sample Q-learning with an expectile value, then weighted BC.

Kostrikov, Nair, Levine (2022), "Offline Reinforcement Learning with Implicit Q-Learning", ICLR,
arXiv:2110.06169: Eq. 5 (value), Eq. 6 (critics), Eq. 7 (policy extraction), Algorithm 1;
hyperparameters from Sec. 5 / App. B and the authors' code (github.com/ikostrikov/
implicit_q_learning, `configs/mujoco_config.py`, `learner.py`, `actor.py`, `critic.py`).

IQL never evaluates the critics at actions outside the dataset. Per gradient step, on one batch
(s, a, r, s', terminal) ~ D:

    value    L_V(psi)   = E[ L2^tau(min_j Q'_j(s, a) - V_psi(s)) ],  L2^tau(u) = |tau - 1(u<0)| u^2
                          (Eq. 5; Q' = Polyak target critics, min over the two as in the code)
    critics  L_Q(theta) = E[ sum_i (r + gamma (1 - terminal) V_psi(s') - Q_theta_i(s, a))^2 ]
                          (Eq. 6, twin critics, one vmapped QEnsemble)
    policy   L_pi(phi)  = -E[ min(exp(beta (min_j Q'_j(s, a) - V_psi(s))), 100) log pi_phi(a|s) ]
                          (Eq. 7, advantage-weighted regression; the clip at 100 is the code's)
    targets  theta' <- tau theta + (1 - tau) theta'

The expectile tau -> 1 makes V approach the maximum of Q over the dataset's actions (Sec. 4.1),
so the critics learn an in-sample maximum; beta -> 0 is behaviour cloning.

Ordering and forward passes: every loss of a step reads the networks as they were at its start
(V(s) and V(s') before the value step, as in CORL's iql.py; the authors' `learner.py` lets the
policy and the critics see the value net one Adam step later, which costs one more value
forward pass, on [s; s'], per step). One step thus runs the target critics once on
(s, a) (their minimum serves both the value loss and the advantages), the value net forward +
backward on s (its output is also the advantages' baseline) and forward on s', the critics
forward + backward and the policy forward + backward.

Policy (authors' code: `NormalTanhPolicy(state_dependent_std=False,
tanh_squash_distribution=False, log_std_min=-5)`): a Gaussian whose mean is tanh(MLP(s)) and
whose log standard deviation is a state-independent parameter clipped to [-5, 2]; the log-density
of the dataset action is that of the Gaussian (no squashing). Evaluation acts with the mean.

Defaults (locomotion, Sec. 5 / code): expectile 0.7, beta 3, Adam 3e-4 for all three networks,
batch 256, 256-256 ReLU nets, tau 0.005, gamma 0.99, no dropout, and a cosine decay of the
actor's learning rate to 0 over the whole run (`actor_schedule="cosine"`, the code's default;
"constant" turns it off). Rewards are scaled by 1000 / (max - min episode return of the dataset)
on locomotion, generalised here to (longest episode) / (max - min episode return)
(`normalize_rewards`, `reward_scale`; see `default_config`).
"""
from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules, episodes, optim
from algorithms.core.networks import QEnsemble, TanhMeanGaussianPolicy, ValueNet
from algorithms.offline import common
from algorithms.offline.awr import awr_policy_loss  # Eq. 7's loss: -w log pi(a|s)

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr", "tau", "expectile", "beta")
make_task = common.make_task

ACTOR_SCHEDULES = ("cosine", "constant")
CONFIG_RULES = {**common.CONFIG_RULES,
                # tau of Eq. 5, in (0, 1): at 0 or 1 the loss ignores one sign of the error, so
                # any V below the minimum / above the maximum of Q minimises it.
                "expectile": config_rules.in_range(0.0, 1.0, low_open=True, high_open=True),
                "beta": config_rules.non_negative,  # 0: behaviour cloning
                "max_weight": config_rules.positive,  # log(max_weight) clips the exponent
                "actor_schedule": config_rules.one_of(*ACTOR_SCHEDULES),
                "reward_range": config_rules.non_negative}  # 0: the longest episode


# ---------------------------------------------------------------------------- losses
def expectile_loss(diff: jax.Array, expectile: jax.Array | float) -> jax.Array:
    """Asymmetric squared loss L2^tau(u) = |tau - 1(u < 0)| u^2, elementwise (IQL Eq. 5).

    With u = target - prediction, minimising E[L2^tau(u)] over the prediction gives the
    tau-expectile of the target: tau = 0.5 is the mean, tau -> 1 the maximum.

    Args:
      diff: u = target - prediction, any shape (e.g. [B]).
      expectile: tau in (0, 1), scalar.
    Returns: the loss, same shape as `diff`.
    """
    chex.assert_type(diff, float)
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff ** 2


def iql_value_loss(target_q_values: jax.Array, values: jax.Array,
                   expectile: jax.Array | float) -> jax.Array:
    """Per-sample value loss L2^tau(min_j Q'_j(s, a) - V(s)) (IQL Eq. 5).

    The target critics' minimum (clipped double Q, as in the authors' code) is a constant: only
    V is trained by this loss.

    Args:
      target_q_values: [num_critics, B] target critics Q'_j(s, a) at dataset actions.
      values: [B] V(s).
      expectile: tau.
    Returns: [B] (mean over the batch at the call site).
    """
    chex.assert_rank([target_q_values, values], [2, 1])
    chex.assert_equal_shape([target_q_values[0], values])
    q = jax.lax.stop_gradient(jnp.min(target_q_values, axis=0))
    return expectile_loss(q - values, expectile)


def iql_critic_loss(q_values: jax.Array, next_values: jax.Array, rewards: jax.Array,
                    discounts: jax.Array) -> jax.Array:
    """Per-sample critic loss sum_i (r + discount V(s') - Q_i(s, a))^2 (IQL Eq. 6).

    The target uses the learned V(s') instead of a maximum over next actions, so no action
    outside the dataset is ever queried. No gradient flows into `next_values`.

    Args:
      q_values: [num_critics, B] Q_i(s, a).
      next_values: [B] V(s').
      rewards: [B].
      discounts: [B] gamma * (1 - terminal): episodes cut by a time limit still bootstrap.
    Returns: [B] (mean over the batch at the call site).
    """
    chex.assert_rank([q_values, next_values, rewards, discounts], [2, 1, 1, 1])
    chex.assert_equal_shape([q_values[0], next_values, rewards, discounts])
    targets = rewards + discounts * jax.lax.stop_gradient(next_values)
    return jnp.sum((q_values - targets[None]) ** 2, axis=0)


def awr_weights(advantages: jax.Array, beta: jax.Array | float,
                max_weight: float = 100.0) -> jax.Array:
    """Advantage weights min(exp(beta A), max_weight), without gradient (IQL Eq. 7).

    beta is the inverse temperature (beta = 0: behaviour cloning; large beta: imitate only the
    best actions); the clip at 100 is the authors' code. Clipped weights are exactly
    max_weight and large advantages never overflow (`common.clipped_exp`).

    Args:
      advantages: [B] A(s, a) = Q(s, a) - V(s).
      beta: inverse temperature (scalar, >= 0).
      max_weight: upper clip (> 0).
    Returns: [B].
    """
    chex.assert_rank(advantages, 1)
    return jax.lax.stop_gradient(common.clipped_exp(beta * advantages, max_weight))


# ---------------------------------------------------------------------------- state & config
@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any  # QEnsemble of 2 critics
    target_critic_params: Any
    value_params: Any
    actor_opt: Any
    critic_opt: Any
    value_opt: Any
    reward_scale: jax.Array  # float32 multiplier of the dataset rewards (1 without normalizing)
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """IQL's locomotion hyperparameters (paper Sec. 5 / App. B, `configs/mujoco_config.py`).

    `normalize_rewards` (on) multiplies the rewards by reward_range / (max - min episode return
    of the dataset), the authors' locomotion scaling; reward_range = 0 means the dataset's
    longest episode (1000 on D4RL locomotion, the authors' constant; 200 on Pendulum).
    """
    c = common.offline_config()
    c.lr = 3e-4  # Adam, actor, critics and value net (paper / code)
    c.tau = 0.005  # Polyak rate of the target critics (code)
    c.expectile = 0.7  # tau of Eq. 5 (locomotion; antmaze 0.9)
    c.beta = 3.0  # inverse temperature of Eq. 7 (locomotion; antmaze 10)
    c.max_weight = 100.0  # clip of exp(beta A) (code)
    c.actor_schedule = "cosine"  # actor lr decays to 0 over the run (code's default), or "constant"
    c.normalize_rewards = True  # locomotion reward scaling (see above)
    c.reward_range = 0.0  # episode-return spread after scaling; 0: the longest episode's length
    return c


def _nets(config, task):
    hidden = tuple(config.hidden_sizes)
    return (TanhMeanGaussianPolicy(hidden, common.action_dim(task)), QEnsemble(hidden, num=2),
            ValueNet(hidden, activation=nn.relu))


def _check(config) -> None:
    if config.actor_schedule not in ACTOR_SCHEDULES:
        raise ValueError(f"actor_schedule={config.actor_schedule!r} is not one of "
                         f"{', '.join(ACTOR_SCHEDULES)}")


def episode_stats(data: dict) -> tuple[jax.Array, jax.Array]:
    """(max - min undiscounted episode return, longest episode length) of `task.data`, jittable.

    Episodes are split where a transition is terminal or its next observation is not the next
    row's observation (the authors' `split_into_trajectories`); an unfinished last episode
    counts, as there.
    """
    ends = episodes.episode_ends(data["terminals"], observations=data["observations"],
                                 next_observations=data["next_observations"], close_last=True)
    returns, num_episodes = episodes.episode_sums(data["rewards"], ends)
    lengths, _ = episodes.episode_sums(jnp.ones_like(data["rewards"]), ends)
    valid = jnp.arange(ends.shape[0]) < num_episodes
    spread = (jnp.max(jnp.where(valid, returns, -jnp.inf))
              - jnp.min(jnp.where(valid, returns, jnp.inf)))
    return spread, jnp.max(lengths)


def reward_scale(data: dict, reward_range: float = 0.0) -> jax.Array:
    """IQL's locomotion reward scaling: reward_range / (max - min episode return).

    The authors use reward_range = 1000, the episode length of D4RL locomotion (CORL:
    `max_episode_steps`); reward_range = 0 takes the dataset's longest episode instead, which is
    the same 1000 there and 200 on Pendulum: per-step rewards then span about one unit whatever
    the episode length, the scale that beta and the clip at 100 were tuned for.
    """
    spread, longest = episode_stats(data)
    numerator = longest if reward_range <= 0 else jnp.float32(reward_range)
    return (numerator / jnp.maximum(spread, 1e-6)).astype(jnp.float32)


def init(key, config, task) -> State:
    _check(config)
    actor, critic, value = _nets(config, task)
    k_actor, k_critic, k_value, key = jax.random.split(key, 4)
    obs, action = jnp.zeros(common.obs_dim(task)), jnp.zeros(common.action_dim(task))
    actor_params = actor.init(k_actor, obs)
    critic_params = critic.init(k_critic, obs, action)
    value_params = value.init(k_value, obs)
    # the rate in state.hparams is written in at each step
    opt = optim.optimizer(config.lr, inject_all=True)
    scale = (reward_scale(task.data, float(config.reward_range)) if config.normalize_rewards
             else jnp.float32(1.0))
    return State(actor_params=actor_params, critic_params=critic_params,
                 target_critic_params=critic_params, value_params=value_params,
                 actor_opt=opt.init(actor_params), critic_opt=opt.init(critic_params),
                 value_opt=opt.init(value_params),
                 reward_scale=scale, key=key, step=jnp.int32(0),
                 hparams={name: jnp.float32(config[name]) for name in SWEEPABLE})


def _actor_lr(config, lr, count):
    """The actor's learning rate at its `count`-th step: cosine decay to 0 over the run
    (optax.cosine_decay_schedule, as in the authors' learner) or constant."""
    if config.actor_schedule == "constant":
        return lr
    total = int(config.num_updates) * int(config.steps_per_update)
    progress = jnp.minimum(count, total).astype(jnp.float32) / total
    return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def update(state: State, config, task):
    _check(config)
    actor, critic, value = _nets(config, task)
    opt = optim.optimizer(config.lr, inject_all=True)

    def gradient_step(state, batch, _key):
        hp = state.hparams
        obs, actions = batch["obs"], batch["action"]

        # Value (Eq. 5) against the target critics' minimum at the dataset action; V(s) is also
        # the advantages' baseline and V(s') (same parameters) the critics' bootstrap.
        target_q = critic.apply(state.target_critic_params, obs, actions)  # [2, B]

        def value_objective(params):
            v = value.apply(params, obs)
            return iql_value_loss(target_q, v, hp["expectile"]).mean(), v

        (value_loss, v), grads = jax.value_and_grad(value_objective, has_aux=True)(
            state.value_params)
        value_params, value_opt = optim.apply_updates(opt, state.value_opt, state.value_params,
                                                      grads, hp["lr"])
        next_v = value.apply(state.value_params, batch["next_obs"])

        # Policy extraction (Eq. 7).
        advantages = jnp.min(target_q, axis=0) - v
        weights = awr_weights(advantages, hp["beta"], config.max_weight)

        def actor_objective(params):
            log_probs = actor.apply(params, obs).log_prob(actions)
            return awr_policy_loss(log_probs, weights).mean()

        actor_loss, grads = jax.value_and_grad(actor_objective)(state.actor_params)
        actor_params, actor_opt = optim.apply_updates(
            opt, state.actor_opt, state.actor_params, grads,
            _actor_lr(config, hp["lr"], state.actor_opt.count))

        # Critics (Eq. 6) towards r + gamma (1 - terminal) V(s').
        discounts = config.gamma * (1.0 - batch["terminal"])
        rewards = state.reward_scale * batch["reward"]

        def critic_objective(params):
            q = critic.apply(params, obs, actions)
            return iql_critic_loss(q, next_v, rewards, discounts).mean(), q

        (critic_loss, q), grads = jax.value_and_grad(critic_objective, has_aux=True)(
            state.critic_params)
        critic_params, critic_opt = optim.apply_updates(opt, state.critic_opt, state.critic_params,
                                                        grads, hp["lr"])
        target_critic_params = optim.polyak(critic_params, state.target_critic_params, hp["tau"])

        metrics = {"critic_loss": critic_loss, "value_loss": value_loss, "actor_loss": actor_loss,
                   "q_mean": q.mean(), "v_mean": v.mean(), "adv_mean": advantages.mean(),
                   "weight_mean": weights.mean()}
        return state.replace(actor_params=actor_params, critic_params=critic_params,
                             target_critic_params=target_critic_params, value_params=value_params,
                             actor_opt=actor_opt, critic_opt=critic_opt,
                             value_opt=value_opt), metrics

    return common.run_gradient_steps(gradient_step, state, config, task)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim]: the policy's mean tanh(MLP(s))
    without a key (the authors' evaluation), a Gaussian sample (clipped to the box) with one."""
    return common.policy_action(_nets(config, task)[0], state.actor_params, obs, task, key)


def evaluate(state: State, key, config, task):
    return common.evaluate_policy(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
