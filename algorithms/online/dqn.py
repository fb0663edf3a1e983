r"""Deep Q-network (Mnih et al. 2015, Nature, Algorithm 1) and Double DQN (van Hasselt et al. 2016).

    y_j = r_j                                         if s_{j+1} is terminal
        = r_j + gamma max_a' Q_hat(s_{j+1}, a'; theta^-)            (DQN, Algorithm 1)
        = r_j + gamma Q_hat(s_{j+1}, argmax_a' Q(s_{j+1}, a'; theta); theta^-)   (Double DQN, Eq. 4)
    theta <- theta - lr grad_theta  L(y_j - Q(s_j, a_j; theta))      (L: Huber or squared error)
    every C steps: theta^- <- theta        (or Polyak: theta^- <- tau theta + (1 - tau) theta^-)

Episodes end on terminated | truncated, but the target bootstraps through truncation: the
replay buffer stores next_obs = info["final_observation"] (the observation before the
auto-reset) and `terminated` only, and the discount is gamma (1 - terminated).

The off-policy step structure (shared in spirit with ddpg.py; TD3/SAC can follow it):

    update(state):                                    # ONE call = num_envs x num_steps env steps
      1. collect: lax.scan over num_steps vector steps with the current (epsilon-greedy) policy;
         the transitions [num_steps, num_envs] are flattened and written into the ring buffer
      2. train:   lax.scan over G = num_envs * num_steps // train_frequency gradient steps,
         each sampling `batch_size` transitions uniformly; the whole step is masked out
         (params unchanged) until `learning_starts` env steps have been collected
      3. target:  inside the train scan, gradient step g (global index) updates the target
         network when it crosses a multiple of `target_update_period` env steps,
         counting num_envs * num_steps / G (= train_frequency) env steps per gradient step

Everything per seed (params, target params, optimizer state, buffer, env state, key, counters,
swept hyperparameters) lives in `State`, so the runner vmaps seeds and sweeps.

Defaults (CartPole-v1): the CleanRL/PureJaxRL-style DQN settings (Huang et al. 2022, CleanRL
`dqn.py` defaults: Adam lr 2.5e-4, buffer 1e4, batch 128, gamma 0.99, target copy every 500
env steps, 120-84 ReLU MLP, epsilon 1.0 -> 0.05 over half of training, learning_starts 1e4,
one gradient step per 10 env steps), run here with 8 parallel envs. 8 seeds x 5e5 steps:
greedy return 479 (DQN) and 500 on every seed with `--config.double=True`; see README.
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
from algorithms.core.networks import DiscreteQNet, flatten_obs
from algorithms.core.returns import td_target
from algorithms.core.evaluation import evaluate_episodes
from algorithms.online import _offpolicy as off
from algorithms.online._offpolicy import polyak, select, strong_types, with_lr  # noqa: F401
from envs.wrappers import episode_metrics

DEFAULT_ENV = "CartPole-v1"
REQUIRES = ("discrete_actions",)
SWEEPABLE = ("lr", "gamma", "end_e", "tau")


# ---------------------------------------------------------------------------- public pure pieces
def q_learning_target(q_next_target: jax.Array, rewards: jax.Array,
                      discounts: jax.Array) -> jax.Array:
    """DQN target y = r + discount * max_a' Q_hat(s', a'; theta^-) (Mnih et al. 2015, Alg. 1).

    Args:
      q_next_target: [B, A] target-network values of the next state.
      rewards, discounts: [B]; discount = gamma * (1 - terminated) (0 at true terminals, so a
        truncated episode still bootstraps).
    Returns: [B] targets (no gradient is stopped here; the caller stops it).
    """
    chex.assert_rank(q_next_target, 2)
    chex.assert_rank([rewards, discounts], 1)
    return td_target(rewards, discounts, jnp.max(q_next_target, axis=-1))


def double_q_target(q_next_online: jax.Array, q_next_target: jax.Array, rewards: jax.Array,
                    discounts: jax.Array) -> jax.Array:
    """Double DQN target (van Hasselt et al. 2016, Eq. 4).

    y = r + discount * Q_hat(s', argmax_a' Q(s', a'; theta); theta^-): the online network
    selects the action, the target network evaluates it (ties go to the lowest index).

    Args:
      q_next_online, q_next_target: [B, A] online- and target-network values of the next state.
      rewards, discounts: [B]; discount = gamma * (1 - terminated).
    Returns: [B] targets.
    """
    chex.assert_rank([q_next_online, q_next_target], 2)
    chex.assert_equal_shape([q_next_online, q_next_target])
    chex.assert_rank([rewards, discounts], 1)
    best = jnp.argmax(q_next_online, axis=-1)
    value = jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]
    return td_target(rewards, discounts, value)


def dqn_loss(q_taken: jax.Array, targets: jax.Array, *,
             huber_delta: float | None = 1.0) -> jax.Array:
    """Elementwise DQN regression loss of the TD error delta = targets - q_taken.

    Huber loss with threshold `huber_delta` (Mnih et al. 2015, Methods, "error clipping":
    the gradient of the loss is clipped to [-delta, delta]):
        0.5 delta^2                       if |delta| <= huber_delta
        huber_delta (|delta| - 0.5 huber_delta)   otherwise;
    `huber_delta=None` gives the squared error 0.5 delta^2 everywhere (the MSE variant).
    To be minimised; `targets` should carry no gradient (stop it at the call site).

    Args:
      q_taken: [B] Q(s, a; theta) of the taken actions. targets: [B].
    Returns: [B] per-sample losses (reduce at the call site).
    """
    chex.assert_rank(q_taken, 1)
    chex.assert_equal_shape([q_taken, targets])
    err = targets - q_taken
    if huber_delta is None:
        return 0.5 * err ** 2
    abs_err = jnp.abs(err)
    quad = jnp.minimum(abs_err, huber_delta)
    return 0.5 * quad ** 2 + huber_delta * (abs_err - quad)


def linear_epsilon(env_step: jax.Array, *, start: float, end: jax.Array,
                   duration: float) -> jax.Array:
    """epsilon decays linearly from `start` to `end` over `duration` env steps, then stays."""
    frac = jnp.clip(env_step / jnp.maximum(duration, 1.0), 0.0, 1.0)
    return start + frac * (end - start)


def crosses_period(g: jax.Array, per_grad_step: int, period: int) -> jax.Array:
    """Whether gradient step g (0-based) crosses a multiple of `period` env steps, counting
    `per_grad_step` env steps per gradient step (target updates every `period` env steps)."""
    return (g + 1) * per_grad_step // period > g * per_grad_step // period


# ---------------------------------------------------------------------------- config & state
def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_timesteps = 500_000  # env steps (all envs together)
    c.num_envs = 8  # parallel envs stepped in lockstep
    c.num_steps = 10  # vector steps per `update` (num_envs * num_steps env steps)
    c.num_updates = c.get_ref("total_timesteps") // (c.get_ref("num_envs") * c.get_ref("num_steps"))
    c.log_every = 125  # updates per jitted chunk (1e4 env steps)
    c.eval_every = 625  # updates between evaluations (5e4 env steps)
    c.eval_episodes = 10  # greedy evaluation episodes
    c.lr = 2.5e-4  # Adam learning rate (CleanRL DQN; Nature DQN used RMSProp 2.5e-4)
    c.gamma = 0.99
    c.buffer_size = 10_000  # replay capacity (transitions)
    c.batch_size = 128
    c.learning_starts = 10_000  # env steps of pure collection before the first gradient step
    c.train_frequency = 10  # env steps per gradient step
    c.target_update_period = 500  # env steps between target updates (Nature DQN: C)
    c.tau = 1.0  # target update theta^- <- tau theta + (1-tau) theta^- (1.0: hard copy)
    c.start_e = 1.0  # epsilon schedule: start_e -> end_e linearly over
    c.end_e = 0.05  # exploration_fraction * total_timesteps env steps
    c.exploration_fraction = 0.5
    c.double = False  # Double DQN target (van Hasselt et al. 2016)
    c.loss = "mse"  # "mse" (0.5 delta^2) or "huber" (Nature DQN error clipping)
    c.huber_delta = 1.0
    c.anneal_lr = False  # linearly decay the learning rate to 0 over total_timesteps
    c.max_grad_norm = 0.0  # > 0: clip the global gradient norm (0: off, as CleanRL)
    c.hidden = (120, 84)  # ReLU MLP
    return c


@struct.dataclass
class State:
    params: Any
    target_params: Any
    opt_state: Any
    buffer: replay.Buffer
    env_state: Any
    obs: jax.Array  # [num_envs, ...] current observations
    key: jax.Array  # typed key
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE values (float32 scalars), read by update


def _num_actions(task) -> int:
    return int(task.env.action_space(task.params).n)


def _network(config, task) -> DiscreteQNet:
    return DiscreteQNet(tuple(config.hidden), _num_actions(task))


def _q_values(net, params, obs, obs_ndim):
    return net.apply(params, flatten_obs(obs, obs_ndim))


def _optimizer(config):
    def make(learning_rate):
        adam = optax.adam(learning_rate)
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam) \
            if config.max_grad_norm > 0 else adam
    return optax.inject_hyperparams(make)(learning_rate=config.lr)


def init(key, config, task) -> State:
    k_net, k_env, key = jax.random.split(key, 3)
    net = _network(config, task)
    env = off.vec_env(config, task)
    obs, env_state = env.reset(k_env, task.params)
    params = net.init(k_net, flatten_obs(obs[:1], off.obs_ndim(task)))
    hparams = {name: jnp.float32(config[name]) for name in SWEEPABLE}
    return State(params=params, target_params=params, opt_state=_optimizer(config).init(params),
                 buffer=replay.buffer_init(off.replay_example(obs[0], jnp.int32(0)),
                                        config.buffer_size),
                 env_state=strong_types(env_state), obs=obs, key=key, step=jnp.int32(0),
                 hparams=hparams)


def _collect(state: State, config, task, key):
    """num_steps epsilon-greedy vector steps; returns (env_state, obs, transitions [T*N], infos)."""
    net, env, n = _network(config, task), off.vec_env(config, task), config.num_envs
    obs_ndim, num_actions = off.obs_ndim(task), _num_actions(task)
    steps_before = state.step * (n * config.num_steps)
    duration = config.exploration_fraction * config.total_timesteps

    def env_step(carry, inputs):
        env_state, obs = carry
        t, k = inputs
        k_explore, k_random, k_env = jax.random.split(k, 3)
        eps = linear_epsilon(steps_before + t * n, start=config.start_e,
                             end=state.hparams["end_e"], duration=duration)
        greedy = jnp.argmax(_q_values(net, state.params, obs, obs_ndim), axis=-1)
        random = jax.random.randint(k_random, (n,), 0, num_actions)
        action = jnp.where(jax.random.uniform(k_explore, (n,)) < eps, random, greedy)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, action, task.params)
        transition = {"obs": obs, "action": action.astype(jnp.int32),
                      "reward": reward.astype(jnp.float32),
                      "terminated": terminated.astype(jnp.float32),
                      "next_obs": info["final_observation"]}  # bootstrap through truncation
        return (env_state, next_obs), (transition, info, eps)

    (env_state, obs), (transitions, infos, eps) = jax.lax.scan(
        env_step, (state.env_state, state.obs),
        (jnp.arange(config.num_steps), jax.random.split(key, config.num_steps)))
    return env_state, obs, off.flatten_time(transitions), infos, eps[-1]


def update(state: State, config, task):
    """One iteration: num_envs x num_steps env steps, then their gradient steps (see module doc)."""
    net, opt = _network(config, task), _optimizer(config)
    obs_ndim, hp = off.obs_ndim(task), state.hparams
    huber_delta = config.huber_delta if config.loss == "huber" else None
    if config.loss not in ("mse", "huber"):
        raise ValueError(f"config.loss must be 'mse' or 'huber', got {config.loss!r}")
    key, k_collect, k_train = jax.random.split(state.key, 3)

    env_state, obs, transitions, infos, epsilon = _collect(state, config, task, k_collect)
    buffer = replay.buffer_add(state.buffer, transitions)
    env_steps = (state.step + 1) * (config.num_envs * config.num_steps)
    learning = (env_steps >= config.learning_starts) & (buffer.size >= config.batch_size)

    def loss_fn(params, target_params, batch):
        q = _q_values(net, params, batch["obs"], obs_ndim)
        q_taken = jnp.take_along_axis(q, batch["action"][:, None], axis=-1)[:, 0]
        q_next_target = _q_values(net, target_params, batch["next_obs"], obs_ndim)
        discounts = hp["gamma"] * (1.0 - batch["terminated"])
        if config.double:
            q_next_online = _q_values(net, params, batch["next_obs"], obs_ndim)
            targets = double_q_target(q_next_online, q_next_target, batch["reward"], discounts)
        else:
            targets = q_learning_target(q_next_target, batch["reward"], discounts)
        targets = jax.lax.stop_gradient(targets)
        return dqn_loss(q_taken, targets, huber_delta=huber_delta).mean(), q_taken.mean()

    num_grad = off.grad_steps_per_update(config)
    per_grad = (config.num_envs * config.num_steps) // num_grad  # env steps per gradient step
    lr = hp["lr"] * (jnp.clip(1.0 - env_steps / config.total_timesteps, 0.0, 1.0)
                     if config.anneal_lr else 1.0)

    def grad_step(carry, inputs):
        params, target_params, opt_state = carry
        i, k = inputs
        batch = replay.buffer_sample(buffer, k, config.batch_size)
        (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, target_params, batch)
        opt_state = with_lr(opt_state, lr)
        updates, new_opt_state = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        params, opt_state = select(learning, (new_params, new_opt_state), (params, opt_state))
        g = state.step * num_grad + i  # global gradient-step index
        sync = learning & crosses_period(g, per_grad, config.target_update_period)
        target_params = select(sync, polyak(params, target_params, hp["tau"]), target_params)
        return (params, target_params, opt_state), (loss, q_mean)

    (params, target_params, opt_state), (losses, q_means) = jax.lax.scan(
        grad_step, (state.params, state.target_params, state.opt_state),
        (jnp.arange(num_grad), jax.random.split(k_train, num_grad)))

    metrics = {**episode_metrics(infos), "loss": losses.mean(), "q_mean": q_means.mean(),
               "epsilon": epsilon, "learning": learning.astype(jnp.float32)}
    new_state = state.replace(params=params, target_params=target_params, opt_state=opt_state,
                              buffer=buffer, env_state=env_state, obs=obs, key=key,
                              step=state.step + 1)
    return new_state, metrics


def act(params, obs, config, task) -> jax.Array:
    """Greedy actions argmax_a Q(obs, a) for a batch of observations."""
    return jnp.argmax(_q_values(_network(config, task), params, obs, off.obs_ndim(task)), axis=-1)


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of greedy episodes (epsilon = 0)."""
    return evaluate_episodes(key, task.env, task.params,
                             lambda obs, k: act(state.params, obs, config, task),
                             config.eval_episodes)
