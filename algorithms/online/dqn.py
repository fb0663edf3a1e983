r"""Deep Q-network (Mnih et al. 2015, Nature, Algorithm 1) and Double DQN (van Hasselt et al. 2016).

    y_j = r_j                                         if s_{j+1} is terminal
        = r_j + gamma max_a' Q_hat(s_{j+1}, a'; theta^-)            (DQN, Algorithm 1)
        = r_j + gamma Q_hat(s_{j+1}, argmax_a' Q(s_{j+1}, a'; theta); theta^-)   (Double DQN, Eq. 4)
    theta <- theta - lr grad_theta  L(y_j - Q(s_j, a_j; theta))      (L: Huber or squared error)
    every C steps: theta^- <- theta        (or Polyak: theta^- <- tau theta + (1 - tau) theta^-)

Episodes end on terminated | truncated, but the target bootstraps through truncation: the
replay buffer stores next_obs = info["final_observation"] (the observation before the
auto-reset) and `terminated` only, and the discount is gamma (1 - terminated).

The update structure (ddpg.py has the same; td3.py and sac.py interleave gradient steps with
single env steps):

    init: `learning_starts` env steps with uniform random actions fill the replay buffer
          (`_offpolicy.random_warmup`, the warm-up of every off-policy agent here)
    update(state):                                    # ONE call = num_envs x num_steps env steps
      1. collect: lax.scan over num_steps vector steps with the current epsilon-greedy policy;
         the transitions [num_steps, num_envs] are flattened and written into the ring buffer
      2. train:   lax.scan over G = num_envs * num_steps // train_frequency gradient steps,
         each sampling `batch_size` transitions uniformly
      3. target:  inside the train scan, gradient step g (global index) updates the target
         network when it crosses a multiple of `target_update_period` env steps,
         counting num_envs * num_steps / G (= train_frequency) env steps per gradient step

Everything per seed (params, target params, optimizer state, buffer, env state, key, counters,
swept hyperparameters) lives in `State`, so the runner vmaps seeds and sweeps.

Defaults (CartPole-v1): the CleanRL/PureJaxRL-style DQN settings (Huang et al. 2022, CleanRL
`dqn.py` defaults: Adam lr 2.5e-4, buffer 1e4, batch 128, gamma 0.99, target copy every 500
env steps, 120-84 ReLU MLP, epsilon 1.0 -> 0.05 over half of training, learning_starts 1e4,
one gradient step per 10 env steps), run here with 8 parallel envs.
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
from algorithms.core.networks import DiscreteQNet, flatten_obs
from algorithms.core.returns import td_target
from algorithms.online import _budget
from algorithms.online import _offpolicy as off
from envs.wrappers import episode_metrics

TASK_FLAG = "env"
DEFAULT_TASK = "CartPole-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ("discrete_actions",)
SWEEPABLE = ("lr", "gamma", "end_e", "tau")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


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
    c.total_timesteps = 500_000  # env steps (all envs together), warm-up included
    c.num_envs = 8  # parallel envs stepped in lockstep
    c.num_steps = 10  # vector steps per `update` (num_envs * num_steps env steps)
    c.learning_starts = 10_000  # env steps of uniform random actions before the first update
    c.num_updates = _budget.num_updates_ref(c, warmup=True)
    c.log_every = 125  # updates per jitted chunk (1e4 env steps)
    c.eval_every = 625  # updates between evaluations (5e4 env steps)
    c.eval_episodes = 10  # greedy evaluation episodes
    c.lr = 2.5e-4  # Adam learning rate (CleanRL DQN; Nature DQN used RMSProp 2.5e-4)
    c.gamma = 0.99
    c.buffer_size = 10_000  # replay capacity (transitions)
    c.batch_size = 128
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
    c.hidden_sizes = (120, 84)  # ReLU MLP
    return c


LOSSES = ("mse", "huber")
CONFIG_RULES = {**off.RULES,
                "train_frequency": rules.count,
                "target_update_period": rules.count,
                "start_e": rules.probability,
                "end_e": rules.probability,
                "exploration_fraction": rules.probability,
                "loss": rules.one_of(*LOSSES),
                "huber_delta": rules.positive}
CONFIG_CHECKS = (*off.CHECKS, off.update_fits_buffer)


@struct.dataclass
class State:
    params: Any
    target_params: Any
    opt_state: Any
    buffer: replay.Buffer
    env_state: Any
    obs: jax.Array  # [num_envs, ...] current observations (as the environment gives them)
    key: jax.Array  # typed key
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE values (float32 scalars), read by update


def _network(config, task) -> DiscreteQNet:
    return DiscreteQNet(tuple(config.hidden_sizes), spaces.num_actions(task.env, task.params))


def _q_values(net, params, obs, task):
    return net.apply(params, flatten_obs(obs, spaces.obs_ndim(task.env, task.params)))


def _optimizer(config):
    return optim.optimizer(config.lr, max_grad_norm=config.max_grad_norm)


def _epsilon(env_step, config, hparams) -> jax.Array:
    return linear_epsilon(env_step, start=config.start_e, end=hparams["end_e"],
                          duration=config.exploration_fraction * config.total_timesteps)


def _epsilon_greedy(q_values, epsilon, k_explore, k_random) -> jax.Array:
    """argmax_a q with probability 1 - epsilon, else a uniform random action; q: [B, A]."""
    b, num_actions = q_values.shape
    greedy = jnp.argmax(q_values, axis=-1)
    random = jax.random.randint(k_random, (b,), 0, num_actions)
    return jnp.where(jax.random.uniform(k_explore, (b,)) < epsilon, random, greedy)


def init(key, config, task) -> State:
    k_net, k_env, k_warm, key = jax.random.split(key, 4)
    net = _network(config, task)
    env = off.vec_env(config, task)
    obs, env_state = env.reset(k_env, task.params)
    params = net.init(k_net, flatten_obs(obs[:1], spaces.obs_ndim(task.env, task.params)))
    buffer = replay.buffer_init(off.replay_example(obs[0], jnp.int32(0)), config.buffer_size)
    obs, env_state, buffer = off.random_warmup(env, task, config, env_state, obs, buffer, k_warm,
                                               flatten=False)
    hparams = {name: jnp.float32(config[name]) for name in SWEEPABLE}
    return State(params=params, target_params=params, opt_state=_optimizer(config).init(params),
                 buffer=buffer, env_state=env_state, obs=obs, key=key, step=jnp.int32(0),
                 hparams=hparams)


def _collect(state: State, config, task, key):
    """num_steps epsilon-greedy vector steps; returns (env_state, obs, transitions [T*N], stats,
    last epsilon)."""
    net, env, n = _network(config, task), off.vec_env(config, task), config.num_envs
    steps_before = off.env_steps(state.step, config)

    def step(carry, inputs):
        env_state, obs = carry
        t, k = inputs
        k_explore, k_random, k_env = jax.random.split(k, 3)
        eps = _epsilon(steps_before + t * n, config, state.hparams)
        action = _epsilon_greedy(_q_values(net, state.params, obs, task), eps, k_explore,
                                 k_random)
        obs, env_state, transition, stats = off.env_step(
            env, task, env_state, obs, action.astype(jnp.int32), k_env, flatten=False)
        return (env_state, obs), (transition, stats, eps)

    (env_state, obs), (transitions, stats, eps) = jax.lax.scan(
        step, (state.env_state, state.obs),
        (jnp.arange(config.num_steps), jax.random.split(key, config.num_steps)))
    return env_state, obs, off.flatten_time(transitions), stats, eps[-1]


def update(state: State, config, task):
    """One iteration: num_envs x num_steps env steps, then their gradient steps (see module doc)."""
    net, opt = _network(config, task), _optimizer(config)
    hp = state.hparams
    huber_delta = config.huber_delta if config.loss == "huber" else None
    if config.loss not in LOSSES:
        raise ValueError(f"config.loss must be one of {LOSSES}, got {config.loss!r}")
    key, k_collect, k_train = jax.random.split(state.key, 3)

    env_state, obs, transitions, stats, epsilon = _collect(state, config, task, k_collect)
    buffer = replay.buffer_add(state.buffer, transitions)
    env_steps = off.env_steps(state.step + 1, config)

    def loss_fn(params, target_params, batch):
        q = _q_values(net, params, batch["obs"], task)
        q_taken = jnp.take_along_axis(q, batch["action"][:, None], axis=-1)[:, 0]
        q_next_target = _q_values(net, target_params, batch["next_obs"], task)
        discounts = hp["gamma"] * (1.0 - batch["terminated"])
        if config.double:
            q_next_online = _q_values(net, params, batch["next_obs"], task)
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
        params, opt_state = optim.apply_updates(opt, opt_state, params, grads, lr)
        g = state.step * num_grad + i  # global gradient-step index
        sync = crosses_period(g, per_grad, config.target_update_period)
        target_params = optim.select(sync, optim.polyak(params, target_params, hp["tau"]),
                                     target_params)
        return (params, target_params, opt_state), (loss, q_mean)

    (params, target_params, opt_state), (losses, q_means) = jax.lax.scan(
        grad_step, (state.params, state.target_params, state.opt_state),
        (jnp.arange(num_grad), jax.random.split(k_train, num_grad)))

    metrics = {**episode_metrics(stats), "loss": losses.mean(), "q_mean": q_means.mean(),
               "epsilon": epsilon, "env_steps": env_steps.astype(jnp.float32)}
    new_state = state.replace(params=params, target_params=target_params, opt_state=opt_state,
                              buffer=buffer, env_state=env_state, obs=obs, key=key,
                              step=state.step + 1)
    return new_state, metrics


# ---------------------------------------------------------------------------- acting
def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Actions [B] (int32) for observations [B, *obs_shape]: greedy argmax_a Q(obs, a), or with
    a key epsilon-greedy at the exploration rate of the state's current env step."""
    q = _q_values(_network(config, task), state.params, obs, task)
    if key is None:
        return jnp.argmax(q, axis=-1)
    epsilon = _epsilon(off.env_steps(state.step, config), config, state.hparams)
    return _epsilon_greedy(q, epsilon, *jax.random.split(key))


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of greedy episodes (epsilon = 0)."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.off_policy  # the logs' env / gradient step axes (launch/registry.py)
