r"""Deep deterministic policy gradient (Lillicrap et al. 2016, ICLR, Algorithm 1).

    critic:  y_i = r_i + gamma (1 - terminated_i) Q'(s_{i+1}, mu'(s_{i+1}))
             L = 1/N sum_i (y_i - Q(s_i, a_i))^2
    actor:   grad_theta J ~= 1/N sum_i grad_a Q(s_i, a)|_{a = mu(s_i)} grad_theta mu(s_i)
             (the deterministic policy gradient, Silver et al. 2014, Eq. 7), i.e. gradient
             DESCENT on -Q(s_i, mu(s_i))
    targets: theta' <- tau theta + (1 - tau) theta'      (both networks, every gradient step)
    acting:  a = clip(mu(s) + N(0, sigma^2), -1, 1) in normalised units; uniform random actions
             for the first `learning_starts` env steps

Settings of the TD3 paper's re-tuned "Our DDPG" (Fujimoto et al. 2018, Sec. 6.1 and Table 3):
Gaussian exploration N(0, 0.1 max_action) instead of the original Ornstein-Uhlenbeck noise,
Adam 1e-3 for actor and critic, batch 100, tau 0.005, no critic weight decay, 1000 initial
random steps, one gradient step per env step; the critic takes [s, a] at its input layer.
One deviation: 128-128 ReLU networks instead of the paper's 400-300
(`--config.hidden='(400, 300)'` restores them). Pendulum (3-d observations, 1-d actions) does
not need more, and on a 2-core CPU the 400-300 networks made an 8-seed 5e4-step run ~15x
slower (about 110 ms vs 6 ms per vmapped update).

Actions are kept in normalised units a in [-1, 1]^d everywhere (policy output, noise, replay,
critic input) and mapped to the env's Box [low, high] only when stepping:
    env_action = low + (a + 1) (high - low) / 2,
so "sigma = 0.1 max_action" is sigma = 0.1 here, and asymmetric bounds work as well.

Structure of one `update` (the same off-policy loop as dqn.py):
    1. collect num_envs x num_steps env steps (lax.scan) and write them into the ring buffer;
    2. G = num_envs * num_steps // train_frequency gradient steps (lax.scan), each: critic step,
       actor step on the updated critic, Polyak target update; all masked out (parameters
       unchanged) until `learning_starts` env steps have been collected.
Episodes end on terminated | truncated; the buffer stores next_obs = info["final_observation"]
and `terminated` only, so targets bootstrap through truncation (Pendulum only truncates).
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from algorithms.core import buffer as replay
from algorithms.core.evaluation import evaluate_episodes
from algorithms.core.networks import DeterministicPolicy, QNet, flatten_obs
from algorithms.core.returns import td_target
from algorithms.online import _offpolicy as off
from algorithms.online._offpolicy import polyak, select, strong_types
from envs.wrappers import episode_metrics

DEFAULT_ENV = "Pendulum-v1"
REQUIRES = ("continuous_actions",)
SWEEPABLE = ("actor_lr", "critic_lr", "gamma", "tau", "exploration_noise")


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
    c.total_timesteps = 50_000  # env steps (all envs together)
    c.num_envs = 1  # as in the paper: one env, one gradient step per env step
    c.num_steps = 1  # vector steps per `update`
    c.num_updates = c.get_ref("total_timesteps") // (c.get_ref("num_envs") * c.get_ref("num_steps"))
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
    c.learning_starts = 1000  # uniform random actions and no gradient steps before this
    c.train_frequency = 1  # env steps per gradient step
    c.hidden = (128, 128)  # ReLU MLPs for actor and critic (paper: (400, 300); see module doc)
    return c


@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any
    target_actor_params: Any
    target_critic_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    buffer: replay.Buffer
    env_state: Any
    obs: jax.Array  # [num_envs, obs_dim]
    key: jax.Array  # typed key
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE values (float32 scalars), read by update


def _action_bounds(task):
    space = task.env.action_space(task.params)
    return jnp.asarray(space.low, jnp.float32), jnp.asarray(space.high, jnp.float32), \
        int(space.shape[0]) if space.shape else 1


def to_env_action(a: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """Normalised a in [-1, 1] -> the env's box [low, high]."""
    return low + (a + 1.0) * 0.5 * (high - low)


def _networks(config, task):
    _, _, action_dim = _action_bounds(task)
    return (DeterministicPolicy(tuple(config.hidden), action_dim, max_action=1.0),
            QNet(tuple(config.hidden)))


def _optimizer(lr):
    return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def init(key, config, task) -> State:
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    actor, critic = _networks(config, task)
    _, _, action_dim = _action_bounds(task)
    obs, env_state = off.vec_env(config, task).reset(k_env, task.params)
    flat = flatten_obs(obs, off.obs_ndim(task))
    actor_params = actor.init(k_actor, flat[:1])
    critic_params = critic.init(k_critic, flat[:1], jnp.zeros((1, action_dim)))
    hparams = {name: jnp.float32(config[name]) for name in SWEEPABLE}
    return State(actor_params=actor_params, critic_params=critic_params,
                 target_actor_params=actor_params, target_critic_params=critic_params,
                 actor_opt_state=_optimizer(config.actor_lr).init(actor_params),
                 critic_opt_state=_optimizer(config.critic_lr).init(critic_params),
                 buffer=replay.buffer_init(off.replay_example(flat[0], jnp.zeros(action_dim)),
                                                 config.buffer_size),
                 env_state=strong_types(env_state), obs=obs, key=key, step=jnp.int32(0),
                 hparams=hparams)


def _collect(state: State, config, task, key):
    """num_steps noisy-policy vector steps (uniform random before learning_starts)."""
    actor, _ = _networks(config, task)
    env, n, obs_ndim = off.vec_env(config, task), config.num_envs, off.obs_ndim(task)
    low, high, action_dim = _action_bounds(task)
    steps_before = state.step * (n * config.num_steps)

    def env_step(carry, inputs):
        env_state, obs = carry
        t, k = inputs
        k_noise, k_random, k_env = jax.random.split(k, 3)
        flat = flatten_obs(obs, obs_ndim)
        noise = state.hparams["exploration_noise"] * jax.random.normal(k_noise, (n, action_dim))
        policy = jnp.clip(actor.apply(state.actor_params, flat) + noise, -1.0, 1.0)
        random = jax.random.uniform(k_random, (n, action_dim), minval=-1.0, maxval=1.0)
        action = jnp.where(steps_before + t * n < config.learning_starts, random, policy)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, to_env_action(action, low, high), task.params)
        transition = {"obs": flat, "action": action, "reward": reward.astype(jnp.float32),
                      "terminated": terminated.astype(jnp.float32),
                      "next_obs": flatten_obs(info["final_observation"], obs_ndim)}
        return (env_state, next_obs), (transition, info)

    (env_state, obs), (transitions, infos) = jax.lax.scan(
        env_step, (state.env_state, state.obs),
        (jnp.arange(config.num_steps), jax.random.split(key, config.num_steps)))
    return env_state, obs, off.flatten_time(transitions), infos


def update(state: State, config, task):
    """One iteration: num_envs x num_steps env steps, then their gradient steps (module doc)."""
    actor, critic = _networks(config, task)
    actor_opt, critic_opt = _optimizer(config.actor_lr), _optimizer(config.critic_lr)
    hp = state.hparams
    key, k_collect, k_train = jax.random.split(state.key, 3)

    env_state, obs, transitions, infos = _collect(state, config, task, k_collect)
    buffer = replay.buffer_add(state.buffer, transitions)
    env_steps = (state.step + 1) * (config.num_envs * config.num_steps)
    learning = (env_steps >= config.learning_starts) & (buffer.size >= config.batch_size)

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
        new_critic, new_critic_os = off.adam_step(critic_opt, critic_os, critic_params, grads,
                                                  hp["critic_lr"])
        # actor: descend -Q(s, mu(s)) through the updated critic (its params held fixed)
        actor_loss, grads = jax.value_and_grad(actor_loss_fn)(actor_params, new_critic, batch)
        new_actor, new_actor_os = off.adam_step(actor_opt, actor_os, actor_params, grads,
                                                hp["actor_lr"])
        # slowly tracking targets
        new_target_actor = polyak(new_actor, target_actor, hp["tau"])
        new_target_critic = polyak(new_critic, target_critic, hp["tau"])
        new = (new_actor, new_critic, new_target_actor, new_target_critic, new_actor_os,
               new_critic_os)
        return select(learning, new, carry), (critic_loss, actor_loss, q_mean)

    num_grad = off.grad_steps_per_update(config)
    carry = (state.actor_params, state.critic_params, state.target_actor_params,
             state.target_critic_params, state.actor_opt_state, state.critic_opt_state)
    carry, (critic_losses, actor_losses, q_means) = jax.lax.scan(
        grad_step, carry, jax.random.split(k_train, num_grad))
    actor_params, critic_params, target_actor, target_critic, actor_os, critic_os = carry

    metrics = {**episode_metrics(infos), "critic_loss": critic_losses.mean(),
               "actor_loss": actor_losses.mean(), "q_mean": q_means.mean(),
               "learning": learning.astype(jnp.float32)}
    new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                              target_actor_params=target_actor, target_critic_params=target_critic,
                              actor_opt_state=actor_os, critic_opt_state=critic_os, buffer=buffer,
                              env_state=env_state, obs=obs, key=key, step=state.step + 1)
    return new_state, metrics


def act(actor_params, obs, config, task) -> jax.Array:
    """Deterministic env actions mu(obs) scaled to the env's bounds, for a batch of obs."""
    actor, _ = _networks(config, task)
    low, high, _ = _action_bounds(task)
    mu = actor.apply(actor_params, flatten_obs(obs, off.obs_ndim(task)))
    return to_env_action(mu, low, high)


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of deterministic episodes (no exploration noise)."""
    return evaluate_episodes(key, task.env, task.params,
                             lambda obs, k: act(state.actor_params, obs, config, task),
                             config.eval_episodes)
