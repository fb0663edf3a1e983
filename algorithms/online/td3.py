"""Twin delayed deep deterministic policy gradient (TD3).

Fujimoto, van Hoof, Meger (2018), "Addressing Function Approximation Error in Actor-Critic
Methods", ICML, arXiv:1802.09477: Algorithm 1, Sec. 4.2 (clipped double Q-learning, Eq. 10),
Sec. 5.2 (delayed policy updates), Sec. 5.3 (target policy smoothing).

Per environment step (one critic gradient step per transition, "UTD 1"):

    a = clip(mu(s) + N(0, exploration_noise), -1, 1)   (uniform random for `learning_starts`)
    a' = clip(mu'(s') + clip(N(0, policy_noise), -noise_clip, noise_clip), -1, 1)
    y  = r + gamma (1 - terminated) min_{i=1,2} Q'_i(s', a')
    critics:  sum_i (Q_i(s, a) - y)^2
    every `policy_delay` critic steps:  actor  -Q_1(s, mu(s)),  then Polyak targets
                                        theta' <- tau theta + (1 - tau) theta' (actor and critics)

Hyperparameters follow the authors' reference implementation (github.com/sfujimoto/TD3), which
uses 256-256 nets, Adam 3e-4 and batch 256 in place of the paper's 400-300, 1e-3 and 100; the
noise scales, tau and the delay are the paper's. The policy and the critics work with actions in
[-1, 1]^|A|; the environment receives `center + scale * a` for its Box [low, high], so the noise
scales above are "times max_action" in environment units, as in the paper.

Pendulum-v1 never terminates, it is truncated at 200 steps: transitions store the pre-reset
`info["final_observation"]` as s' and `terminated`, so targets bootstrap through truncation.

The first `learning_starts` environment steps (uniform random actions, no learning) happen in
`init` (`_offpolicy.random_warmup`, as for DQN, DDPG and SAC); every `update` then runs
`num_steps` vectorised env steps, each followed by `num_envs` critic steps, with an actor + target
step after every `policy_delay`-th critic step. The delay is a static unrolled block, so no
gradient is computed and then thrown away.
"""
from __future__ import annotations

import math
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
from algorithms.core.networks import DeterministicPolicy, QEnsemble, flatten_obs
from algorithms.online import _budget
from algorithms.online import _offpolicy as off
from envs.wrappers import episode_metrics

TASK_FLAG = "env"
DEFAULT_TASK = "Pendulum-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ("continuous_actions",)
SWEEPABLE = ("lr", "tau")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


# ---------------------------------------------------------------------------- losses
def clipped_double_q_target(q1_next: jax.Array, q2_next: jax.Array, rewards: jax.Array,
                            discounts: jax.Array) -> jax.Array:
    """Clipped double Q-learning target y = r + discount * min(Q'_1(s', a'), Q'_2(s', a')).

    Fujimoto et al. (2018), Eq. 10 (with the smoothed target action a' of Sec. 5.3).

    Args:
      q1_next, q2_next: [B] target critics at (s', a').
      rewards: [B].
      discounts: [B] gamma * (1 - terminated): truncated episodes still bootstrap.
    Returns: [B] targets (the caller stops their gradient).
    """
    chex.assert_rank([q1_next, q2_next, rewards, discounts], 1)
    chex.assert_equal_shape([q1_next, q2_next, rewards, discounts])
    return rewards + discounts * jnp.minimum(q1_next, q2_next)


def smoothed_target_actions(key: jax.Array, next_actions: jax.Array, *, policy_noise: float,
                            noise_clip: float, low: float = -1.0,
                            high: float = 1.0) -> jax.Array:
    """Target policy smoothing a' = clip(mu'(s') + clip(eps, -c, c), low, high), eps ~ N(0, sigma).

    Fujimoto et al. (2018), Sec. 5.3 and Algorithm 1 (sigma = 0.2, c = 0.5, in units of
    max_action).

    Args:
      next_actions: [B, A] target actor actions mu'(s').
    Returns: [B, A].
    """
    chex.assert_rank(next_actions, 2)
    noise = policy_noise * jax.random.normal(key, next_actions.shape, next_actions.dtype)
    return jnp.clip(next_actions + jnp.clip(noise, -noise_clip, noise_clip), low, high)


def td3_critic_loss(q_values: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-sample critic loss sum_i (Q_i(s, a) - y)^2 over the two critics.

    Algorithm 1: theta_i <- argmin N^-1 sum (y - Q_theta_i(s, a))^2, both critics regressed onto
    the same target y. No gradient flows into `targets`.

    Args:
      q_values: [num_critics, B] Q_i(s, a).
      targets: [B] from `clipped_double_q_target`.
    Returns: [B] (mean over the batch at the call site).
    """
    chex.assert_rank([q_values, targets], [2, 1])
    chex.assert_equal_shape([q_values[0], targets])
    return jnp.sum((q_values - jax.lax.stop_gradient(targets)[None]) ** 2, axis=0)


def td3_actor_loss(q1_values: jax.Array) -> jax.Array:
    """Per-sample deterministic policy-gradient loss -Q_1(s, mu(s)).

    Algorithm 1: grad_phi J = N^-1 sum grad_a Q_theta1(s, a)|_{a = pi_phi(s)} grad_phi pi_phi(s),
    i.e. gradient descent on -Q_1(s, mu_phi(s)) (only the first critic, Sec. 4.2).

    Args:
      q1_values: [B] Q_1(s, mu(s)), differentiable w.r.t. the actor parameters.
    Returns: [B].
    """
    chex.assert_rank(q1_values, 1)
    return -q1_values


# ---------------------------------------------------------------------------- state & config
@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any  # QEnsemble of 2 critics
    target_actor_params: Any
    target_critic_params: Any
    actor_opt: Any
    critic_opt: Any
    buffer: replay.Buffer  # obs, action (in [-1, 1]), reward, next_obs, terminated
    env_state: Any
    obs: jax.Array  # [num_envs, obs_dim] flattened last observation
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config() -> ml_collections.ConfigDict:
    """TD3 paper / reference-implementation hyperparameters (see the module docstring)."""
    c = ml_collections.ConfigDict()
    c.total_timesteps = 50_000  # environment steps, warm-up included
    c.learning_starts = 5_000  # random steps before learning (paper 1e4 / code 25e3 on MuJoCo)
    c.num_envs = 1  # paper: one environment
    c.num_steps = 250  # vectorised env steps per `update`
    c.num_updates = _budget.num_updates_ref(c, warmup=True)
    c.log_every = 20  # updates per jitted chunk (5000 env steps)
    c.eval_every = 20
    c.eval_episodes = 10
    c.gamma = 0.99  # paper
    c.tau = 0.005  # paper
    c.lr = 3e-4  # Adam, actor and critics (reference code; paper 1e-3)
    c.batch_size = 256  # reference code (paper 100)
    c.buffer_size = 100_000  # paper 10^6; >= total_timesteps, so nothing is overwritten here
    c.hidden_sizes = (256, 256)  # reference code (paper 400-300)
    c.exploration_noise = 0.1  # std of the Gaussian exploration noise, x max_action (paper)
    c.policy_noise = 0.2  # target policy smoothing std, x max_action (paper)
    c.noise_clip = 0.5  # target policy smoothing clip, x max_action (paper)
    c.policy_delay = 2  # critic steps per actor / target step (paper d = 2)
    return c


def _nets(config, task):
    hidden = tuple(config.hidden_sizes)
    return (DeterministicPolicy(hidden, spaces.num_actions(task.env, task.params)),
            QEnsemble(hidden, num=2))


def init(key, config, task) -> State:
    env = off.vec_env(config, task)
    action_dim = spaces.num_actions(task.env, task.params)
    actor, critic = _nets(config, task)
    k_env, k_actor, k_critic, k_warm, key = jax.random.split(key, 5)
    obs, env_state = env.reset(k_env, task.params)
    obs = flatten_obs(obs, spaces.obs_ndim(task.env, task.params))
    actor_params = actor.init(k_actor, obs[0])
    critic_params = critic.init(k_critic, obs[0], jnp.zeros(action_dim))
    opt = optim.optimizer(config.lr, inject_all=True)
    buffer = replay.buffer_init(off.replay_example(obs[0], jnp.zeros(action_dim)),
                                config.buffer_size)
    obs, env_state, buffer = off.random_warmup(env, task, config, env_state, obs, buffer, k_warm)
    return State(actor_params=actor_params, critic_params=critic_params,
                 target_actor_params=actor_params, target_critic_params=critic_params,
                 actor_opt=opt.init(actor_params), critic_opt=opt.init(critic_params),
                 buffer=buffer, env_state=env_state, obs=obs, key=key, step=jnp.int32(0),
                 hparams={"lr": jnp.float32(config.lr), "tau": jnp.float32(config.tau)})


def critic_update(critic_params, critic_opt_state, target_actor_params, target_critic_params,
                  batch: dict, key: jax.Array, discounts: jax.Array, *, actor, critic,
                  learning_rate: jax.Array, policy_noise: float, noise_clip: float):
    """One TD3 critic step: smoothed target action (Sec. 5.3), clipped double-Q target (Eq. 10),
    Adam (`optim.optimizer`) on the critic ensemble.

    Shared by online TD3 and offline TD3+BC, so it takes every input explicitly.

    Args:
      critic_params, critic_opt_state: the `QEnsemble` `critic`'s parameters and their
        optimizer state.
      target_actor_params, target_critic_params: the target networks (Polyak averages).
      batch: obs [B, obs_dim], action [B, A] in [-1, 1], reward [B], next_obs [B, obs_dim].
      key: the target-smoothing noise key.
      discounts: [B] gamma * (1 - terminal) in the caller's terminal convention.
      actor, critic: the `DeterministicPolicy` and `QEnsemble` modules.
      learning_rate: Adam's (traced) rate, written into the optimizer state for this step.
      policy_noise, noise_clip: Sec. 5.3's sigma and c, in normalised action units.
    Returns: (critic_params', critic_opt_state', {"critic_loss", "q_mean"}).
    """
    next_actions = smoothed_target_actions(
        key, actor.apply(target_actor_params, batch["next_obs"]),
        policy_noise=policy_noise, noise_clip=noise_clip)
    next_q = critic.apply(target_critic_params, batch["next_obs"], next_actions)
    targets = clipped_double_q_target(next_q[0], next_q[1], batch["reward"], discounts)

    def objective(params):
        q = critic.apply(params, batch["obs"], batch["action"])
        return td3_critic_loss(q, targets).mean(), q

    (loss, q), grads = jax.value_and_grad(objective, has_aux=True)(critic_params)
    opt = optim.optimizer(learning_rate, inject_all=True)
    params, opt_state = optim.apply_updates(opt, critic_opt_state, critic_params, grads,
                                            learning_rate)
    return params, opt_state, {"critic_loss": loss, "q_mean": q.mean()}


def _critic_step(state: State, key, config, task):
    """Algorithm 1: sample a minibatch, then `critic_update`."""
    actor, critic = _nets(config, task)
    k_batch, k_noise = jax.random.split(key)
    batch = replay.buffer_sample(state.buffer, k_batch, config.batch_size)
    discounts = config.gamma * (1.0 - batch["terminated"])
    critic_params, critic_opt, metrics = critic_update(
        state.critic_params, state.critic_opt,
        state.target_actor_params, state.target_critic_params, batch, k_noise, discounts,
        actor=actor, critic=critic, learning_rate=state.hparams["lr"],
        policy_noise=config.policy_noise, noise_clip=config.noise_clip)
    state = state.replace(critic_params=critic_params, critic_opt=critic_opt)
    return state, metrics, batch["obs"]


def _actor_step(state: State, obs, config, task):
    """Delayed policy update on the last critic minibatch's states, then Polyak targets."""
    actor, critic = _nets(config, task)

    def objective(params):
        q = critic.apply(state.critic_params, obs, actor.apply(params, obs))
        return td3_actor_loss(q[0]).mean()

    loss, grads = jax.value_and_grad(objective)(state.actor_params)
    opt = optim.optimizer(config.lr, inject_all=True)
    params, opt_state = optim.apply_updates(opt, state.actor_opt, state.actor_params, grads,
                                            state.hparams["lr"])
    tau = state.hparams["tau"]
    return state.replace(
        actor_params=params, actor_opt=opt_state,
        target_actor_params=optim.polyak(params, state.target_actor_params, tau),
        target_critic_params=optim.polyak(state.critic_params, state.target_critic_params, tau),
    ), {"actor_loss": loss}


def _block_env_steps(config) -> int:
    """Vectorised env steps per static block containing a whole number of policy delays."""
    d = int(config.policy_delay)
    return d // math.gcd(int(config.num_envs), d)


def _whole_blocks(config) -> str | None:
    """Config check: an update is a whole number of blocks (`_block_env_steps`)."""
    block = _block_env_steps(config)
    return None if config.num_steps % block == 0 else (
        f"config.num_steps={config.num_steps} is not allowed: it must be a multiple of {block} "
        f"(policy_delay / gcd(num_envs, policy_delay))")


CONFIG_RULES = {**off.RULES,
                "exploration_noise": rules.non_negative,
                "policy_noise": rules.non_negative,
                "noise_clip": rules.non_negative,
                "policy_delay": rules.count}
CONFIG_CHECKS = (*off.CHECKS, _whole_blocks)


def update(state: State, config, task):
    """`num_steps` vectorised env steps, each followed by `num_envs` critic steps (UTD 1) and an
    actor + target step after every `policy_delay`-th critic step."""
    env = off.vec_env(config, task)
    actor, _ = _nets(config, task)
    block = _block_env_steps(config)
    if _whole_blocks(config):
        raise ValueError(_whole_blocks(config))

    def run_block(state, _):
        stats_list, critic_metrics, actor_metrics = [], [], []
        critic_steps = 0
        for _ in range(block):  # static unroll: `block` env steps
            key, k_act, k_env, k_learn = jax.random.split(state.key, 4)
            action = off.gaussian_exploration(actor.apply(state.actor_params, state.obs),
                                              config.exploration_noise, k_act)
            obs, env_state, tr, stats = off.env_step(env, task, state.env_state, state.obs,
                                                      action, k_env)
            state = state.replace(buffer=replay.buffer_add(state.buffer, tr),
                                  env_state=env_state, obs=obs, key=key)
            stats_list.append(stats)
            for k in jax.random.split(k_learn, config.num_envs):
                state, m, batch_obs = _critic_step(state, k, config, task)
                critic_metrics.append(m)
                critic_steps += 1
                if critic_steps % config.policy_delay == 0:
                    state, m = _actor_step(state, batch_obs, config, task)
                    actor_metrics.append(m)
        stack = lambda ms: jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *ms)
        stats = jax.tree.map(lambda *x: jnp.stack(x), *stats_list)
        return state, (stats, {**stack(critic_metrics), **stack(actor_metrics)})

    state, (stats, metrics) = jax.lax.scan(run_block, state, None,
                                           length=config.num_steps // block)
    stats = off.flatten_time(stats)  # [num_steps, envs]
    step = state.step + 1
    env_steps = config.learning_starts + step * config.num_steps * config.num_envs
    metrics = {**jax.tree.map(jnp.mean, metrics), **episode_metrics(stats),
               "env_steps": env_steps.astype(jnp.float32)}
    return state.replace(step=step), metrics


# ---------------------------------------------------------------------------- acting
def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions center + scale * a for observations [B, *obs_shape]: a = mu(s), or with a
    key the exploration policy clip(mu(s) + N(0, exploration_noise^2), -1, 1)."""
    actor, _ = _nets(config, task)
    a = actor.apply(state.actor_params, flatten_obs(obs, spaces.obs_ndim(task.env, task.params)))
    if key is not None:
        a = off.gaussian_exploration(a, config.exploration_noise, key)
    return spaces.to_env_action(a, *off.action_box(task))


def evaluate(state: State, key, config, task):
    """Mean return of `eval_episodes` episodes with the deterministic policy mu(s)."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.off_policy  # the logs' env / gradient step axes (launch/registry.py)
