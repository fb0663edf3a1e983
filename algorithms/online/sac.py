"""Soft actor-critic with automatic entropy temperature.

Haarnoja, Zhou, Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel, Levine (2018),
"Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905: Algorithm 1, Sec. 4.2 (soft
policy iteration with function approximators) and Sec. 5 (automating entropy adjustment).

Per environment step (one gradient step per transition, "UTD 1"):

    a_t ~ pi(.|s_t) (uniform random for the first `learning_starts` steps), store the transition
    critics   J_Q   = E[ 1/2 (Q_i(s, a) - y)^2 ],  i = 1, 2
              y     = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')),
                      a' ~ pi(.|s')   (soft Bellman backup with the clipped double-Q minimum)
    actor     J_pi  = E[ alpha log pi(f(eps; s)|s) - min_j Q_j(s, f(eps; s)) ]
                      (reparameterised: f(eps; s) = tanh(mu(s) + sigma(s) eps))
    alpha     J(alpha) = E[ -alpha (log pi(a|s) + target_entropy) ], target_entropy = -|A|,
                      optimised over log alpha (see `sac_alpha_loss` for the exact form)
    targets   theta' <- tau theta + (1 - tau) theta'

Actions live in [-1, 1]^|A| for the policy, the critics and the replay buffer (as in the authors'
softlearning code, which rescales the environment's action space); the environment receives
`center + scale * a` for its Box [low, high]. Log-probabilities, hence the entropy target, are
therefore those of the normalised action and do not depend on the action units.

Pendulum-v1 never terminates, it is truncated at 200 steps: transitions store the pre-reset
`info["final_observation"]` as s' and `terminated`, so targets bootstrap through truncation.

The first `learning_starts` environment steps (uniform random actions, no learning, as in the
paper's reference implementation) happen in `init` (`_offpolicy.random_warmup`); every `update`
then runs `num_steps` vectorised environment steps, each followed by `num_envs` gradient steps,
in one `lax.scan`.
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
from algorithms.core.networks import QEnsemble, TanhGaussianPolicy, flatten_obs
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
def soft_q_target(next_q_values: jax.Array, next_log_probs: jax.Array, rewards: jax.Array,
                  discounts: jax.Array, *, alpha: jax.Array | float) -> jax.Array:
    """Soft clipped double-Q target y = r + discount (min_j Q'_j(s', a') - alpha log pi(a'|s')).

    The soft Bellman backup of Sec. 4.2 (J_Q with V(s') = E_a'[Q(s', a') - alpha log pi(a'|s')],
    one sample a' ~ pi(.|s')), using the minimum of the two target critics (Sec. 6 / Fujimoto
    et al. 2018).

    Args:
      next_q_values: [num_critics, B] target critics Q'_j(s', a').
      next_log_probs: [B] log pi(a'|s') of the same a'.
      rewards: [B].
      discounts: [B] gamma * (1 - terminated): 0 at true terminal states only, so truncated
        episodes bootstrap.
      alpha: entropy temperature (scalar).
    Returns: [B] targets (the caller stops their gradient).
    """
    chex.assert_rank([next_q_values, next_log_probs, rewards, discounts], [2, 1, 1, 1])
    chex.assert_equal_shape([next_q_values[0], next_log_probs, rewards, discounts])
    soft_value = jnp.min(next_q_values, axis=0) - alpha * next_log_probs
    return rewards + discounts * soft_value


def sac_critic_loss(q_values: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-sample soft Bellman residual summed over critics: sum_i 1/2 (Q_i(s, a) - y)^2.

    J_Q of Sec. 4.2 for each of the critics (trained on the same target). Gradients do not
    flow into `targets`.

    Args:
      q_values: [num_critics, B] Q_i(s, a).
      targets: [B] from `soft_q_target`.
    Returns: [B] loss per sample (mean over the batch at the call site).
    """
    chex.assert_rank([q_values, targets], [2, 1])
    chex.assert_equal_shape([q_values[0], targets])
    return 0.5 * jnp.sum((q_values - jax.lax.stop_gradient(targets)[None]) ** 2, axis=0)


def sac_actor_loss(log_probs: jax.Array, q_values: jax.Array,
                   alpha: jax.Array | float) -> jax.Array:
    """Per-sample policy loss alpha log pi(a|s) - Q(s, a), a = f(eps; s) reparameterised.

    J_pi of Sec. 4.2 (the KL projection onto exp(Q / alpha), written with the reparameterisation
    trick). Minimised w.r.t. the policy parameters through both `log_probs` and `q_values`
    (the caller passes Q = min_j Q_j(s, a) of the online critics); alpha is treated as a constant.

    Args:
      log_probs: [B] log pi(a|s) of the sampled actions.
      q_values: [B] Q(s, a) of the same actions.
      alpha: entropy temperature (scalar).
    Returns: [B].
    """
    chex.assert_rank([log_probs, q_values], 1)
    chex.assert_equal_shape([log_probs, q_values])
    return jax.lax.stop_gradient(alpha) * log_probs - q_values


def sac_alpha_loss(log_alpha: jax.Array, log_probs: jax.Array, *,
                   target_entropy: float) -> jax.Array:
    """Per-sample temperature loss -log_alpha * (log pi(a|s) + target_entropy).

    Sec. 5, J(alpha) = E_a~pi[-alpha log pi(a|s) - alpha H_bar], optimised, as in the authors'
    implementation, over log alpha and with alpha replaced by log alpha in the objective:
    d/d(log alpha) = -(log pi + H_bar), so log alpha goes up exactly when the policy's entropy
    -log pi is below the target H_bar, and down when it is above (the same sign as the
    alpha-form, whose gradient is alpha times this one). `log_probs` are constants here.

    Args:
      log_alpha: scalar, the trained parameter.
      log_probs: [B] log pi(a|s) of actions sampled from the current policy.
      target_entropy: H_bar, -|A| by default (Sec. 5 / Appendix).
    Returns: [B].
    """
    chex.assert_rank([log_alpha, log_probs], [0, 1])
    return -log_alpha * jax.lax.stop_gradient(log_probs + target_entropy)


# ---------------------------------------------------------------------------- state & config
@struct.dataclass
class State:
    actor_params: Any
    critic_params: Any  # QEnsemble of 2 critics
    target_critic_params: Any
    log_alpha: jax.Array  # scalar
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    buffer: replay.Buffer  # obs, action (in [-1, 1]), reward, next_obs, terminated
    env_state: Any
    obs: jax.Array  # [num_envs, obs_dim] flattened last observation
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config() -> ml_collections.ConfigDict:
    """Hyperparameters of Haarnoja et al. (2018), Table 1 / App. D, unless noted."""
    c = ml_collections.ConfigDict()
    c.total_timesteps = 50_000  # environment steps, warm-up included
    c.learning_starts = 5_000  # uniform random steps before learning (reference code; counted)
    c.num_envs = 1  # paper: one environment
    c.num_steps = 250  # vectorised env steps per `update` (each followed by num_envs grad steps)
    c.num_updates = _budget.num_updates_ref(c, warmup=True)
    c.log_every = 20  # updates per jitted chunk (5000 env steps)
    c.eval_every = 20
    c.eval_episodes = 10
    c.gamma = 0.99  # paper
    c.tau = 0.005  # Polyak target smoothing (paper)
    c.lr = 3e-4  # Adam, same for critics, actor and temperature (paper)
    c.batch_size = 256  # paper
    c.buffer_size = 100_000  # paper 10^6; >= total_timesteps, so nothing is overwritten here
    c.hidden_sizes = (256, 256)  # 2 hidden ReLU layers of 256 (paper)
    c.init_alpha = 1.0  # initial temperature (authors' code)
    c.target_entropy = -1.0  # per action dimension: H_bar = target_entropy * |A| (paper: -|A|)
    return c


CONFIG_RULES = {**off.RULES,
                "init_alpha": rules.positive,  # trained as log alpha
                "target_entropy": rules.finite()}
CONFIG_CHECKS = off.CHECKS


def _nets(config, task):
    hidden = tuple(config.hidden_sizes)
    return (TanhGaussianPolicy(hidden, spaces.num_actions(task.env, task.params)),
            QEnsemble(hidden, num=2))


def _policy_sample(actor, params, obs, key):
    """a in [-1, 1]^|A| reparameterised, and log pi(a|s) (`TanhNormal`, SAC App. C)."""
    return actor.apply(params, obs).sample_and_log_prob(seed=key)


def init(key, config, task) -> State:
    env = off.vec_env(config, task)
    action_dim = spaces.num_actions(task.env, task.params)
    actor, critic = _nets(config, task)
    k_env, k_actor, k_critic, k_warm, key = jax.random.split(key, 5)
    obs, env_state = env.reset(k_env, task.params)
    obs = flatten_obs(obs, spaces.obs_ndim(task.env, task.params))
    actor_params = actor.init(k_actor, obs[0])
    critic_params = critic.init(k_critic, obs[0], jnp.zeros(action_dim))
    log_alpha = jnp.log(jnp.float32(config.init_alpha))
    opt = optim.optimizer(config.lr, inject_all=True)
    buffer = replay.buffer_init(off.replay_example(obs[0], jnp.zeros(action_dim)),
                                config.buffer_size)
    obs, env_state, buffer = off.random_warmup(env, task, config, env_state, obs, buffer, k_warm)
    return State(actor_params=actor_params, critic_params=critic_params,
                 target_critic_params=critic_params, log_alpha=log_alpha,
                 actor_opt=opt.init(actor_params), critic_opt=opt.init(critic_params),
                 alpha_opt=opt.init(log_alpha), buffer=buffer, env_state=env_state, obs=obs,
                 key=key, step=jnp.int32(0),
                 hparams={"lr": jnp.float32(config.lr), "tau": jnp.float32(config.tau)})


def _gradient_step(state: State, key, config, task):
    """Algorithm 1's inner gradient step: critics, actor, temperature, then targets."""
    action_dim = spaces.num_actions(task.env, task.params)
    actor, critic = _nets(config, task)
    opt = optim.optimizer(config.lr, inject_all=True)
    lr, tau = state.hparams["lr"], state.hparams["tau"]
    k_batch, k_next, k_pi = jax.random.split(key, 3)
    batch = replay.buffer_sample(state.buffer, k_batch, config.batch_size)
    alpha = jnp.exp(state.log_alpha)

    # Critics.
    next_actions, next_log_probs = _policy_sample(actor, state.actor_params, batch["next_obs"],
                                                  k_next)
    next_q = critic.apply(state.target_critic_params, batch["next_obs"], next_actions)
    discounts = config.gamma * (1.0 - batch["terminated"])
    targets = soft_q_target(next_q, next_log_probs, batch["reward"], discounts, alpha=alpha)

    def critic_objective(params):
        q = critic.apply(params, batch["obs"], batch["action"])
        return sac_critic_loss(q, targets).mean(), q

    (critic_loss, q), grads = jax.value_and_grad(critic_objective, has_aux=True)(
        state.critic_params)
    critic_params, critic_opt = optim.apply_updates(opt, state.critic_opt, state.critic_params,
                                                    grads, lr)

    # Actor (against the updated critics).
    def actor_objective(params):
        actions, log_probs = _policy_sample(actor, params, batch["obs"], k_pi)
        q_pi = jnp.min(critic.apply(critic_params, batch["obs"], actions), axis=0)
        return sac_actor_loss(log_probs, q_pi, alpha).mean(), log_probs

    (actor_loss, log_probs), grads = jax.value_and_grad(actor_objective, has_aux=True)(
        state.actor_params)
    actor_params, actor_opt = optim.apply_updates(opt, state.actor_opt, state.actor_params,
                                                  grads, lr)

    # Temperature.
    target_entropy = config.target_entropy * action_dim
    alpha_loss, grad = jax.value_and_grad(
        lambda la: sac_alpha_loss(la, log_probs, target_entropy=target_entropy).mean())(
        state.log_alpha)
    log_alpha, alpha_opt = optim.apply_updates(opt, state.alpha_opt, state.log_alpha, grad, lr)

    # Targets.
    target_critic_params = optim.polyak(critic_params, state.target_critic_params, tau)
    metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss,
               "alpha": alpha, "entropy": -log_probs.mean(), "q_mean": q.mean()}
    return state.replace(actor_params=actor_params, critic_params=critic_params,
                         target_critic_params=target_critic_params, log_alpha=log_alpha,
                         actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt), metrics


def update(state: State, config, task):
    """`num_steps` vectorised env steps, each followed by `num_envs` gradient steps (UTD 1)."""
    env = off.vec_env(config, task)
    actor, _ = _nets(config, task)

    def env_and_learn(state, _):
        key, k_act, k_env, k_learn = jax.random.split(state.key, 4)
        action, _ = _policy_sample(actor, state.actor_params, state.obs, k_act)
        obs, env_state, tr, stats = off.env_step(env, task, state.env_state, state.obs, action,
                                                  k_env)
        state = state.replace(buffer=replay.buffer_add(state.buffer, tr), env_state=env_state,
                              obs=obs, key=key)
        state, metrics = jax.lax.scan(
            lambda s, k: _gradient_step(s, k, config, task), state,
            jax.random.split(k_learn, config.num_envs))
        return state, (stats, jax.tree.map(jnp.mean, metrics))

    state, (stats, metrics) = jax.lax.scan(env_and_learn, state, None, length=config.num_steps)
    step = state.step + 1
    env_steps = config.learning_starts + step * config.num_steps * config.num_envs
    metrics = {**jax.tree.map(jnp.mean, metrics), **episode_metrics(stats),
               "env_steps": env_steps.astype(jnp.float32)}
    return state.replace(step=step), metrics


# ---------------------------------------------------------------------------- acting
def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions center + scale * a for observations [B, *obs_shape]: the deterministic
    a = tanh(mean(s)), or with a key a sample a ~ pi(.|s)."""
    actor, _ = _nets(config, task)
    dist = actor.apply(state.actor_params,
                       flatten_obs(obs, spaces.obs_ndim(task.env, task.params)))
    a = dist.mode() if key is None else dist.sample_and_log_prob(seed=key)[0]
    return spaces.to_env_action(a, *off.action_box(task))


def evaluate(state: State, key, config, task):
    """Mean return of `eval_episodes` episodes with the deterministic tanh(mean) policy."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.off_policy  # the logs' env / gradient step axes (launch/registry.py)
