r"""Proximal Policy Optimization (Schulman, Wolski, Dhariwal, Radford, Klimov 2017, 1707.06347).

One `update` = one iteration of Algorithm 1 ("PPO, Actor-Critic Style"):

    1. run the current policy pi_old for `num_steps` steps in each of `num_envs` envs;
    2. advantages by GAE(gamma, lambda) (Schulman et al. 2016, Eq. 16; PPO Eq. 11-12), value
       targets A + V, bootstrapping through truncation (V of the final observation);
    3. `update_epochs` epochs of minibatch Adam on  L = L^pi + c1 L^VF - c2 S[pi]  (Eq. 9, as a
       loss to minimize), minibatches drawn by shuffling the batch each epoch, advantages
       normalized per minibatch; the value term is `value_loss` (see below); the policy term is
         variant="clip":        L^CLIP, the clipped surrogate of Eq. 7, or
         variant="kl_penalty": L^KLPEN, the KL-penalized surrogate of Eq. 8 with an adaptive beta
                               (Sec. 4): after the update, with d = mean KL[pi_old, pi] (batch),
                               d > kl_max -> beta *= kl_beta_factor;  d < kl_min -> beta /= factor.
                               The paper's rule is kl_max = 1.5 d_targ, kl_min = d_targ / 1.5,
                               factor 2; both bounds are config fields (derived from kl_target
                               unless set). beta is not bounded (the paper does not bound it):
                               once the per-update KL stays below kl_min, beta halves every
                               update until it underflows to 0 and the objective is the plain
                               surrogate r_t A_t.

The value term: Eq. 9 has L^VF_t = (V(s_t) - V^targ_t)^2 with coefficient c1. The defaults
follow CleanRL's ppo.py / PureJaxRL instead: `vf_loss_half=True` halves the squared error (so
vf_coef=0.5 weighs it by 0.25), and `clip_vf=True` clips V around the old values (Engstrom et
al. 2020) with `vf_clip_eps`, which defaults to clip_eps and, while equal to it, is the same
traced epsilon (a clip_eps sweep moves both). Eq. 9 exactly: `--config.vf_loss_half=false
--config.clip_vf=false --config.vf_coef=1` (c1 = 1 is the paper's Atari value, Table 5).

Rollouts, networks and acting are the on-policy family's (`_onpolicy.py`): a categorical policy
for Discrete actions, a Gaussian with a state-independent log std for Box actions (its unclipped
sample is what is stored and scored; the env wrapper clips it). Actor and critic are separate
64-64 tanh MLPs with orthogonal init (Engstrom et al. 2020; Andrychowicz et al. 2021), one Adam
(eps 1e-5) over both with global gradient-norm clipping.

Defaults are the well-known CartPole-v1 settings of CleanRL's ppo.py / PureJaxRL (4 envs x 128
steps, 4 epochs x 4 minibatches, lr 2.5e-4 linearly annealed, gamma 0.99, lambda 0.95, clip 0.2,
entropy 0.01, value 0.5, max grad norm 0.5, 5e5 steps); the paper's Atari/MuJoCo tables
(Tables 3-5) use the same clip 0.2, lambda 0.95, gamma 0.99, c1 = 1, c2 = 0.01.
For Pendulum-v1 the README's run uses the paper's MuJoCo settings (Table 3: 2048 steps per
batch = 16 envs x 128, Adam 3e-4, 10 epochs, minibatch 64) with normalize_obs, no entropy bonus,
reward_scale 0.1 and gamma 0.95 (Pendulum's reward is dense and its horizon short).

The learning rate, clip epsilon and entropy coefficient are traced leaves (`state.hparams`), so
`--sweep='lr=2.5e-4,1e-3'` trains all values in one vmapped program.
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim, returns, tasks
from algorithms.core.evaluation import evaluate_act
from algorithms.online import _budget
from algorithms.online import _onpolicy as op

TASK_FLAG = "env"
DEFAULT_TASK = "CartPole-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ()  # discrete (categorical policy) and continuous (Gaussian policy) actions
SWEEPABLE = ("lr", "clip_eps", "ent_coef")
VARIANTS = ("clip", "kl_penalty")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


# ---------------------------------------------------------------------------- public losses
def clipped_surrogate_loss(ratio: jax.Array, adv: jax.Array, *, eps: float) -> jax.Array:
    """Negated clipped surrogate objective, elementwise (PPO, Schulman et al. 2017, Eq. 7).

        L^CLIP_t = min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t),   returned as  -L^CLIP_t

    Args:
      ratio: [B] probability ratios r_t = pi(a_t|s_t) / pi_old(a_t|s_t).
      adv: [B] advantage estimates A_t (treated as constants).
      eps: clip range epsilon (keyword-only; may be a traced scalar).
    Returns: [B] losses to MINIMIZE (mean them at the call site); the gradient pushes r_t up where
      A_t > 0 until r_t > 1 + eps, and down where A_t < 0 until r_t < 1 - eps.
    """
    chex.assert_rank([ratio, adv], 1)
    chex.assert_equal_shape([ratio, adv])
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * adv
    return -jnp.minimum(unclipped, clipped)


def kl_penalty_loss(ratio: jax.Array, adv: jax.Array, kl: jax.Array, *, beta: float) -> jax.Array:
    """Negated KL-penalized surrogate, elementwise (PPO, Schulman et al. 2017, Sec. 4, Eq. 8).

        L^KLPEN_t = r_t A_t - beta KL[pi_old(.|s_t), pi(.|s_t)],   returned as  -L^KLPEN_t

    Args:
      ratio: [B] probability ratios pi(a_t|s_t) / pi_old(a_t|s_t).
      adv: [B] advantage estimates.
      kl: [B] KL[pi_old(.|s_t) || pi(.|s_t)] per state (>= 0; differentiable in pi's params).
      beta: penalty coefficient (keyword-only; adapted between updates by `adapt_kl_beta`).
    Returns: [B] losses to MINIMIZE.
    """
    chex.assert_rank([ratio, adv, kl], 1)
    chex.assert_equal_shape([ratio, adv, kl])
    return -(ratio * adv - beta * kl)


def adapt_kl_beta(beta: jax.Array, kl: jax.Array, *, kl_min: float, kl_max: float,
                  factor: float = 2.0) -> jax.Array:
    """The adaptive penalty coefficient of PPO Sec. 4, applied after each policy update.

        d = mean KL[pi_old, pi];   d > kl_max -> beta * factor;   d < kl_min -> beta / factor;
        otherwise beta unchanged.

    The paper uses kl_max = 1.5 d_targ, kl_min = d_targ / 1.5 and factor 2 (it notes the
    result is insensitive to 1.5 and 2). Scalars in, scalar out.
    """
    chex.assert_rank([beta, kl], 0)
    beta = jnp.where(kl > kl_max, beta * factor, beta)
    return jnp.where(kl < kl_min, beta / factor, beta)


def value_loss(values: jax.Array, old_values: jax.Array, targets: jax.Array, *,
               clip_eps: float | None = None, half: bool = True) -> jax.Array:
    """Squared-error value loss L^VF_t (PPO Eq. 9), optionally clipped and halved.

        Eq. 9:      (V(s_t) - V^targ_t)^2
        clipped:    max((V - V^targ)^2, (V_old + clip(V - V_old, -eps, eps) - V^targ)^2)
        half:       either of them times 1/2

    The clipped form is the one of the OpenAI baselines implementation (Engstrom et al. 2020,
    "value function clipping"); `clip_eps=None` gives the unclipped error. The factor 1/2 is
    CleanRL's / PureJaxRL's convention (`half=True`); `half=False, clip_eps=None` is Eq. 9's
    L^VF_t.
    Args: values, old_values, targets: [B]. Returns: [B] losses to minimize.
    """
    chex.assert_rank([values, old_values, targets], 1)
    chex.assert_equal_shape([values, old_values, targets])
    loss = jnp.square(values - targets)
    if clip_eps is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        loss = jnp.maximum(loss, jnp.square(clipped - targets))
    return 0.5 * loss if half else loss


# ---------------------------------------------------------------------------- config & state
def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_timesteps = 500_000  # env steps per seed
    c.num_envs = 4  # parallel envs per seed (CleanRL / PureJaxRL CartPole)
    c.num_steps = 128  # rollout length per env; one update = num_envs * num_steps env steps
    c.num_updates = _budget.num_updates_ref(c)
    c.update_epochs = 4  # K epochs per batch (paper: 3-10)
    c.num_minibatches = 4  # minibatch size = num_envs * num_steps / num_minibatches
    c.lr = 2.5e-4  # Adam step size (paper Atari: 2.5e-4 x annealing)
    c.anneal_lr = True  # linear decay to 0 over num_updates (paper: alpha annealed 1 -> 0)
    c.gamma = 0.99
    c.gae_lambda = 0.95
    c.variant = "clip"  # "clip" (Eq. 7) or "kl_penalty" (Eq. 8, adaptive beta)
    c.clip_eps = 0.2  # epsilon of Eq. 7
    c.clip_vf = True  # clip the value loss around the old values (not in Eq. 9)
    # value-clipping range: follows clip_eps until set (a derived reference: setting it leaves
    # clip_eps alone)
    c.vf_clip_eps = c.get_ref("clip_eps").identity()
    c.vf_loss_half = True  # L^VF = 1/2 (V - V^targ)^2 (CleanRL); False: Eq. 9's (V - V^targ)^2
    c.kl_target = 0.01  # d_targ of Sec. 4 (paper's best for the adaptive KL variant)
    c.kl_max = c.get_ref("kl_target") * 1.5  # beta *= factor when KL > kl_max
    c.kl_min = c.get_ref("kl_target") / 1.5  # beta /= factor when KL < kl_min
    c.kl_beta_init = 1.0  # initial beta (paper: 1)
    c.kl_beta_factor = 2.0  # (paper: 2)
    c.ent_coef = 0.01  # c2 of Eq. 9
    c.vf_coef = 0.5  # c1 of Eq. 9 (with vf_loss_half, 0.25 on the squared error)
    c.max_grad_norm = 0.5  # global gradient-norm clip (0: none)
    c.normalize_advantages = True  # per-minibatch advantage normalization
    c.normalize_obs = False  # running mean/std of observations (envs.wrappers)
    c.reward_scale = 1.0  # rewards multiplied by this for learning only (e.g. 0.1 on Pendulum)
    c.hidden_sizes = (64, 64)
    c.activation = "tanh"  # or relu, gelu, swish, elu, mish
    c.log_every = 16  # updates per jitted chunk
    c.eval_every = 128  # updates between evaluations
    c.eval_episodes = 16
    return c


def _minibatches_divide_batch(config) -> str | None:
    batch = config.num_envs * config.num_steps
    return None if batch % config.num_minibatches == 0 else (
        f"config.num_minibatches={config.num_minibatches} does not divide the batch of "
        f"num_envs * num_steps = {batch} samples; it must be a divisor of {batch}")


def _kl_bounds_ordered(config) -> str | None:
    return None if config.kl_min <= config.kl_max else (
        f"config.kl_min={config.kl_min} must be <= config.kl_max={config.kl_max} (the adaptive "
        f"beta's band around kl_target)")


CONFIG_RULES = {
    **op.RULES,
    "update_epochs": rules.count,
    "variant": rules.one_of(*VARIANTS),
    "clip_eps": rules.positive,
    "vf_clip_eps": rules.positive,
    "kl_target": rules.positive,
    "kl_max": rules.positive,
    "kl_min": rules.non_negative,
    "kl_beta_init": rules.non_negative,
    "kl_beta_factor": rules.in_range(1.0),  # 1: a fixed beta; < 1 would invert the rule
}
CONFIG_CHECKS = (*op.CHECKS, _minibatches_divide_batch, _kl_bounds_ordered)


@struct.dataclass
class State:
    params: Any  # {"actor": ..., "critic": ...}
    opt_state: Any
    env_state: Any  # vectorized (and optionally normalized) env state
    obs: jax.Array  # [num_envs, ...] last observation
    kl_beta: jax.Array  # float32, the adaptive penalty coefficient (kl_penalty variant)
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE values as float32 scalars


def _optimizer(config):
    return optim.optimizer(config.lr, eps=1e-5, max_grad_norm=config.max_grad_norm)


def init(key, config, task) -> State:
    # The runner checks every rule first; these two guard direct callers of init.
    if config.variant not in VARIANTS:
        raise ValueError(f"config.variant must be one of {VARIANTS}, got {config.variant!r}")
    if _minibatches_divide_batch(config):
        raise ValueError(_minibatches_divide_batch(config))
    k_env, k_actor, k_critic, key = jax.random.split(key, 4)
    _, _, actor_params, critic_params, _, env_state, obs = op.init_networks(
        k_actor, k_critic, k_env, config, task)
    params = {"actor": actor_params, "critic": critic_params}
    hparams = {name: jnp.float32(config[name]) for name in SWEEPABLE}
    return State(params=params, opt_state=_optimizer(config).init(params), env_state=env_state,
                 obs=obs, kl_beta=jnp.float32(config.kl_beta_init), key=key, step=jnp.int32(0),
                 hparams=hparams)


# ---------------------------------------------------------------------------- update
class _Batch(struct.PyTreeNode):
    obs: jax.Array  # [B, obs_dim] flattened (normalized if normalize_obs)
    action: jax.Array
    log_prob: jax.Array  # log pi_old(a|s)
    value: jax.Array  # V_old(s)
    adv: jax.Array
    target: jax.Array


def update(state: State, config, task):
    actor, critic = op.build_networks(config, task)
    hp = state.hparams
    key, k_roll = jax.random.split(state.key)
    env_state, obs, traj, episode_stats = op.collect(
        k_roll, op.make_env(config, task), task.params, state.env_state, state.obs,
        op.sample_fn(actor, state.params["actor"]), int(config.num_steps), task)
    state = state.replace(env_state=env_state, obs=obs, key=key)

    # Advantages: V on the observations and on the observations after each step (the final
    # observation before an auto-reset, so truncated episodes bootstrap from it).
    values = critic.apply(state.params["critic"], traj.obs)
    next_values = critic.apply(state.params["critic"], traj.next_obs)
    adv, targets = returns.gae(traj.rewards * config.reward_scale, values, next_values,
                               traj.terminated, traj.dones, config.gamma, config.gae_lambda)
    batch = _Batch(obs=traj.obs, action=traj.actions, log_prob=traj.log_probs,
                   value=values, adv=adv, target=targets)
    batch = jax.tree.map(op.flatten_time, batch)
    batch_size = config.num_envs * config.num_steps
    mb_size = batch_size // config.num_minibatches
    old_params = state.params

    # The value clip is the policy's (possibly swept) epsilon until vf_clip_eps is set apart.
    vf_clip_eps = (hp["clip_eps"] if config.vf_clip_eps == config.clip_eps
                   else config.vf_clip_eps)
    frac = 1.0 - state.step.astype(jnp.float32) / config.num_updates if config.anneal_lr else 1.0
    opt_state = optim.set_learning_rate(state.opt_state, hp["lr"] * frac)
    tx = _optimizer(config)

    def loss_fn(params, mb: _Batch):
        dist = actor.apply(params["actor"], mb.obs)
        log_prob = dist.log_prob(mb.action)
        log_ratio = log_prob - mb.log_prob
        ratio = jnp.exp(log_ratio)
        adv = returns.normalize_advantages(mb.adv) if config.normalize_advantages else mb.adv
        if config.variant == "clip":
            pg = clipped_surrogate_loss(ratio, adv, eps=hp["clip_eps"]).mean()
        else:
            old_dist = actor.apply(jax.lax.stop_gradient(old_params["actor"]), mb.obs)
            kl = old_dist.kl_divergence(dist)
            pg = kl_penalty_loss(ratio, adv, kl, beta=state.kl_beta).mean()
        v = critic.apply(params["critic"], mb.obs)
        vf = value_loss(v, mb.value, mb.target, clip_eps=vf_clip_eps if config.clip_vf else None,
                        half=config.vf_loss_half).mean()
        entropy = dist.entropy().mean()
        loss = pg + config.vf_coef * vf - hp["ent_coef"] * entropy
        aux = {"policy_loss": pg, "value_loss": vf, "entropy": entropy,
               # k3 estimator of KL[pi_old, pi] (unbiased, >= 0)
               "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
               "clip_frac": (jnp.abs(ratio - 1.0) > hp["clip_eps"]).astype(jnp.float32).mean()}
        return loss, aux

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def minibatch_step(carry, mb):
        params, opt_state = carry
        grads, aux = grad_fn(params, mb)
        aux["grad_norm"] = optax.tree.norm(grads)
        return optim.apply_updates(tx, opt_state, params, grads), aux

    def epoch(carry, epoch_key):
        perm = jax.random.permutation(epoch_key, batch_size)
        mbs = jax.tree.map(
            lambda x: x[perm].reshape((config.num_minibatches, mb_size) + x.shape[1:]), batch)
        return jax.lax.scan(minibatch_step, carry, mbs)

    key, k_epochs = jax.random.split(state.key)
    (params, opt_state), aux = jax.lax.scan(epoch, (state.params, opt_state),
                                            jax.random.split(k_epochs, config.update_epochs))

    metrics = {k: v.mean() for k, v in aux.items()}
    kl_beta = state.kl_beta
    if config.variant == "kl_penalty":
        # Exact mean KL[pi_old, pi_new] on the batch after the update adapts beta (Sec. 4).
        # The clip variant reports only approx_kl: two more actor passes over the whole batch
        # would be for a metric alone.
        kl = actor.apply(old_params["actor"], batch.obs).kl_divergence(
            actor.apply(params["actor"], batch.obs)).mean()
        kl_beta = adapt_kl_beta(kl_beta, kl, kl_min=config.kl_min, kl_max=config.kl_max,
                                factor=config.kl_beta_factor)
        metrics["kl"] = kl
    metrics.update(episode_stats)
    metrics.update(lr=opt_state.hyperparams["learning_rate"],
                   explained_variance=1.0 - jnp.var(batch.target - batch.value)
                   / (jnp.var(batch.target) + 1e-8))
    if config.variant == "kl_penalty":
        metrics["kl_beta"] = kl_beta
    state = state.replace(params=params, opt_state=opt_state, kl_beta=kl_beta, key=key,
                          step=state.step + 1)
    return state, metrics


# ---------------------------------------------------------------------------- acting & evaluation
def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions for raw observations [B, *obs_shape] (normalized with the training env's
    statistics when normalize_obs): the policy's mode, or with a key a sample."""
    actor, _ = op.build_networks(config, task)
    return op.act(actor, state.params["actor"], state.env_state, obs, task, key)


def evaluate(state: State, key, config, task):
    """Mean undiscounted return / length of `eval_episodes` greedy (mode-action) episodes."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.on_policy  # the logs' env / gradient step axes (launch/registry.py)
