r"""Deep deterministic policy gradient (Lillicrap et al. 2016, ICLR, Algorithm 1).

    critic:  y_i = r_i + gamma (1 - terminated_i) Q'(s_{i+1}, mu'(s_{i+1}))
             L = 1/N sum_i (y_i - Q(s_i, a_i))^2
    actor:   grad_theta J ~= 1/N sum_i grad_a Q(s_i, a)|_{a = mu(s_i)} grad_theta mu(s_i)
             (the deterministic policy gradient, Silver et al. 2014, Eq. 7), i.e. gradient
             DESCENT on -Q(s_i, mu(s_i))
    targets: theta' <- tau theta + (1 - tau) theta'      (both networks, every gradient step)
    acting:  a = clip(mu(s) + N(0, sigma^2), -1, 1) in normalised units; uniform random actions
             for the first `learning_starts` env steps (taken in `init`, as TD3 and SAC do)

Settings of the TD3 paper's re-tuned "Our DDPG" (Fujimoto et al. 2018, Sec. 6.1 and Table 3):
Gaussian exploration N(0, 0.1 max_action) instead of the original Ornstein-Uhlenbeck noise,
Adam 1e-3 for actor and critic, batch 100, tau 0.005, no critic weight decay, 1000 initial
random steps, one gradient step per env step; the critic takes [s, a] at its input layer.
One deviation: 128-128 ReLU networks instead of the paper's 400-300
(`--config.hidden_sizes='(400, 300)'` restores them).

Actions are kept in normalised units a in [-1, 1]^d everywhere (policy output, noise, replay,
critic input) and mapped to the env's Box only when stepping, env_action = center + scale * a
(`algorithms.core.spaces`), so "sigma = 0.1 max_action" is sigma = 0.1 here, and asymmetric
bounds work as well.

Structure of one `update` (the same off-policy loop as dqn.py):
    1. collect num_envs x num_steps env steps (lax.scan) and write them into the ring buffer;
    2. G = num_envs * num_steps // train_frequency gradient steps (lax.scan), each: critic step,
       actor step on the updated critic, Polyak target update.
Episodes end on terminated | truncated; the buffer stores next_obs = info["final_observation"]
and `terminated` only, so targets bootstrap through truncation (Pendulum only truncates).
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import buffer as replay
from algorithms.core import config_rules as rules
from algorithms.core import optim, spaces, tasks
from algorithms.core.evaluation import evaluate_act
from algorithms.core.networks import DeterministicPolicy, QNet, flatten_obs
from algorithms.core.returns import td_target
from algorithms.online import _budget
from algorithms.online import _offpolicy as off
from envs.wrappers import episode_metrics

TASK_FLAG = "env"
DEFAULT_TASK = "Pendulum-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ("continuous_actions",)
SWEEPABLE = ("actor_lr", "critic_lr", "gamma", "tau", "exploration_noise")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


# ---------------------------------------------------------------------------- public losses
def ddpg_critic_loss(q: jax.Array, targets: jax.Array) -> jax.Array:
    """Critic loss (y_i - Q(s_i, a_i))^2 (Lillicrap et al. 2016, Algorithm 1), elementwise.

    Args:
      q: [B] Q(s_i, a_i) of the replayed actions. targets: [B] y_i (stop their gradient at the
        call site; see `ddpg_targets`).
    Returns: [B] squared TD errors, to be minimised (mean them for the paper's L).
    """
    chex.assert_rank(q, 1)
    chex.assert_equal_shape([q, targets])
    return (targets - q) ** 2


def ddpg_actor_loss(q_of_policy_actions: jax.Array) -> jax.Array:
    """Actor loss -Q(s_i, mu(s_i)), elementwise (Lillicrap et al. 2016, Eq. 6 / Algorithm 1).

    Sign: the paper ASCENDS J = E[Q(s, mu(s))]; this returns its negative so an optimizer that
    minimises it follows the deterministic policy gradient (Silver et al. 2014, Eq. 7). The
    gradient must flow into the actor only: the critic's parameters are not updated with it.

    Args:
      q_of_policy_actions: [B] Q(s_i, mu(s_i)).
    Returns: [B] per-sample losses.
    """
    chex.assert_rank(q_of_policy_actions, 1)
    return -q_of_policy_actions


def ddpg_targets(q_next_target: jax.Array, rewards: jax.Array,
                 discounts: jax.Array) -> jax.Array:
    """y = r + discount * Q'(s', mu'(s')), discount = gamma (1 - terminated). All [B]."""
    chex.assert_rank([q_next_target, rewards, discounts], 1)
    return td_target(rewards, discounts, q_next_target)


# ---------------------------------------------------------------------------- config & state
def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_timesteps = 50_000  # env steps (all envs together), warm-up included
    c.num_envs = 1  # as in the paper: one env, one gradient step per env step
    c.num_steps = 1  # vector steps per `update`
    c.learning_starts = 1000  # env steps of uniform random actions before the first update
    c.num_updates = _budget.num_updates_ref(c, warmup=True)
    c.log_every = 1000  # updates per jitted chunk
    c.eval_every = 5000  # updates between evaluations
    c.eval_episodes = 10  # deterministic evaluation episodes (no exploration noise)
    c.actor_lr = 1e-3  # Adam (TD3 paper "Our DDPG"; original DDPG: 1e-4 actor, 1e-3 critic)
    c.critic_lr = 1e-3
    c.gamma = 0.99
    c.tau = 0.005  # Polyak target rate
    c.exploration_noise = 0.1  # std of the Gaussian action noise, in units of max_action
    c.buffer_size = 100_000  # >= total_timesteps: the same as the paper's 1e6 for these runs
    c.batch_size = 100
    c.train_frequency = 1  # env steps per gradient step
    c.hidden_sizes = (128, 128)  # ReLU MLPs for actor and critic (paper: (400, 300))
    return c


CONFIG_RULES = {**off.RULES,
                "train_frequency": rules.count,
                "exploration_noise": rules.non_negative}
CONFIG_CHECKS = (*off.CHECKS, off.update_fits_buffer)


@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any
    target_actor_params: Any
    target_critic_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    buffer: replay.Buffer  # obs, action (in [-1, 1]), reward, next_obs, terminated
    env_state: Any
    obs: jax.Array  # [num_envs, obs_dim] flattened last observation
    key: jax.Array  # typed key
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE values (float32 scalars), read by update


def _optimizer(learning_rate):
    return optim.optimizer(learning_rate, inject_all=True)


def _networks(config, task):
    action_dim = spaces.num_actions(task.env, task.params)
    return (DeterministicPolicy(tuple(config.hidden_sizes), action_dim, max_action=1.0),
            QNet(tuple(config.hidden_sizes)))


def init(key, config, task) -> State:
    k_actor, k_critic, k_env, k_warm, key = jax.random.split(key, 5)
    actor, critic = _networks(config, task)
    action_dim = spaces.num_actions(task.env, task.params)
    env = off.vec_env(config, task)
    obs, env_state = env.reset(k_env, task.params)
    obs = flatten_obs(obs, spaces.obs_ndim(task.env, task.params))
    actor_params = actor.init(k_actor, obs[:1])
    critic_params = critic.init(k_critic, obs[:1], jnp.zeros((1, action_dim)))
    buffer = replay.buffer_init(off.replay_example(obs[0], jnp.zeros(action_dim)),
                                config.buffer_size)
    obs, env_state, buffer = off.random_warmup(env, task, config, env_state, obs, buffer, k_warm)
    hparams = {name: jnp.float32(config[name]) for name in SWEEPABLE}
    return State(actor_params=actor_params, critic_params=critic_params,
                 target_actor_params=actor_params, target_critic_params=critic_params,
                 actor_opt_state=_optimizer(config.actor_lr).init(actor_params),
                 critic_opt_state=_optimizer(config.critic_lr).init(critic_params),
                 buffer=buffer, env_state=env_state, obs=obs, key=key, step=jnp.int32(0),
                 hparams=hparams)


def _behaviour(state: State, obs, config, task, key) -> jax.Array:
    """clip(mu(s) + N(0, exploration_noise^2), -1, 1), normalised actions [B, A]."""
    actor, _ = _networks(config, task)
    return off.gaussian_exploration(actor.apply(state.actor_params, obs),
                                    state.hparams["exploration_noise"], key)


def _collect(state: State, config, task, key):
    """num_steps vector steps of the exploration policy; returns (env_state, obs,
    transitions [T*N], stats)."""
    env = off.vec_env(config, task)

    def step(carry, k):
        env_state, obs = carry
        k_noise, k_env = jax.random.split(k)
        action = _behaviour(state, obs, config, task, k_noise)
        obs, env_state, transition, stats = off.env_step(env, task, env_state, obs, action,
                                                         k_env)
        return (env_state, obs), (transition, stats)

    (env_state, obs), (transitions, stats) = jax.lax.scan(
        step, (state.env_state, state.obs), jax.random.split(key, config.num_steps))
    return env_state, obs, off.flatten_time(transitions), stats


def update(state: State, config, task):
    """One iteration: num_envs x num_steps env steps, then their gradient steps (module doc)."""
    actor, critic = _networks(config, task)
    actor_opt, critic_opt = _optimizer(config.actor_lr), _optimizer(config.critic_lr)
    hp = state.hparams
    key, k_collect, k_train = jax.random.split(state.key, 3)

    env_state, obs, transitions, stats = _collect(state, config, task, k_collect)
    buffer = replay.buffer_add(state.buffer, transitions)

    def critic_loss_fn(critic_params, batch, targets):
        q = critic.apply(critic_params, batch["obs"], batch["action"])
        return ddpg_critic_loss(q, targets).mean(), q.mean()

    def actor_loss_fn(actor_params, critic_params, batch):
        q = critic.apply(critic_params, batch["obs"], actor.apply(actor_params, batch["obs"]))
        return ddpg_actor_loss(q).mean()

    def grad_step(carry, k):
        (actor_params, critic_params, target_actor, target_critic, actor_os, critic_os) = carry
        batch = replay.buffer_sample(buffer, k, config.batch_size)
        # critic: regress onto y = r + gamma (1 - terminated) Q'(s', mu'(s'))
        next_q = critic.apply(target_critic, batch["next_obs"],
                              actor.apply(target_actor, batch["next_obs"]))
        targets = jax.lax.stop_gradient(ddpg_targets(
            next_q, batch["reward"], hp["gamma"] * (1.0 - batch["terminated"])))
        (critic_loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            critic_params, batch, targets)
        new_critic, new_critic_os = optim.apply_updates(critic_opt, critic_os, critic_params,
                                                        grads, hp["critic_lr"])
        # actor: descend -Q(s, mu(s)) through the updated critic (its params held fixed)
        actor_loss, grads = jax.value_and_grad(actor_loss_fn)(actor_params, new_critic, batch)
        new_actor, new_actor_os = optim.apply_updates(actor_opt, actor_os, actor_params, grads,
                                                      hp["actor_lr"])
        # slowly tracking targets
        new_target_actor = optim.polyak(new_actor, target_actor, hp["tau"])
        new_target_critic = optim.polyak(new_critic, target_critic, hp["tau"])
        new = (new_actor, new_critic, new_target_actor, new_target_critic, new_actor_os,
               new_critic_os)
        return new, (critic_loss, actor_loss, q_mean)

    num_grad = off.grad_steps_per_update(config)
    carry = (state.actor_params, state.critic_params, state.target_actor_params,
             state.target_critic_params, state.actor_opt_state, state.critic_opt_state)
    carry, (critic_losses, actor_losses, q_means) = jax.lax.scan(
        grad_step, carry, jax.random.split(k_train, num_grad))
    actor_params, critic_params, target_actor, target_critic, actor_os, critic_os = carry

    metrics = {**episode_metrics(stats), "critic_loss": critic_losses.mean(),
               "actor_loss": actor_losses.mean(), "q_mean": q_means.mean(),
               "env_steps": off.env_steps(state.step + 1, config).astype(jnp.float32)}
    new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                              target_actor_params=target_actor, target_critic_params=target_critic,
                              actor_opt_state=actor_os, critic_opt_state=critic_os, buffer=buffer,
                              env_state=env_state, obs=obs, key=key, step=state.step + 1)
    return new_state, metrics


# ---------------------------------------------------------------------------- acting
def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions center + scale * a for observations [B, *obs_shape]: a = mu(s), or with a
    key the exploration policy clip(mu(s) + N(0, exploration_noise^2), -1, 1)."""
    actor, _ = _networks(config, task)
    obs = flatten_obs(obs, spaces.obs_ndim(task.env, task.params))
    a = actor.apply(state.actor_params, obs) if key is None else \
        _behaviour(state, obs, config, task, key)
    return spaces.to_env_action(a, *off.action_box(task))


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of deterministic episodes (no exploration noise)."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.off_policy  # the logs' env / gradient step axes (launch/registry.py)
