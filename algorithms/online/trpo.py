"""Trust region policy optimization (Schulman et al. 2015, Sec. 6 and Appendix C), with GAE.

Each update solves, around the behaviour policy theta_old,

    maximize_theta  L(theta) = mean_i [ pi_theta(a_i|s_i) / pi_old(a_i|s_i) A_i ]      (Eq. 14)
    subject to      KLbar(theta) = mean_i KL(pi_old(.|s_i) || pi_theta(.|s_i)) <= delta

Appendix C: linearize L (gradient g) and take the quadratic model of KLbar, whose Hessian at
theta_old is the Fisher information matrix F. The search direction x ~ F^{-1} g comes from
`cg_iters` conjugate-gradient steps that only need products F v: `fisher_vector_product`
differentiates the KL twice, forward over reverse (jvp of its vjp/grad), so no dense Fisher is
ever formed. The maximal step along x that meets the quadratic constraint is
beta = sqrt(2 delta / x^T F x); the backtracking line search then shrinks it by
`backtrack_coef` until the surrogate improves AND the exact KL is <= delta (all candidate step
fractions are evaluated at once, vectorized, and the largest acceptable one is taken; if none
is, the policy stays). `cg_damping` adds c I to F (the usual Levenberg-style damping).

The value function V (the baseline, Schulman et al. 2016, "High-dimensional continuous
control using GAE") is regressed on the lambda-returns with Adam minibatches after the policy
step; the advantages are GAE(gamma, lambda) of the value before that regression, standardized
per batch. Episodes that end are cut; truncated ones bootstrap from V(final observation).
Defaults: delta = 0.01, 10 CG iterations (Schulman et al. 2015, experiments), damping 0.1
and line search halving 10 times (OpenAI Baselines' TRPO), lambda = 0.95 (GAE paper's range).
"""
from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct
from jax.flatten_util import ravel_pytree

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim, tasks
from algorithms.core.evaluation import evaluate_act
from algorithms.core.returns import gae, normalize_advantages
from algorithms.online import _budget
from algorithms.online import _onpolicy as op

TASK_FLAG = "env"
DEFAULT_TASK = "CartPole-v1"
PRIMARY_METRIC = "eval/return"
REQUIRES = ()  # discrete (Categorical) and continuous (Gaussian) actions
SWEEPABLE = ("lr", "max_kl")


def make_task(name, config):
    return tasks.env_task(name, config, REQUIRES)


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *,
                       iters: int = 10, tol: float = 1e-10) -> jax.Array:
    """Approximately solves A x = b for a symmetric positive-definite A given only x -> A x.

    Hestenes & Stiefel (1952) conjugate gradients from x_0 = 0, as in Schulman et al. (2015),
    Appendix C: at most `iters` iterations (a fixed-length loop, so it jits and vmaps); once the
    squared residual r^T r falls below `tol` the iterate is frozen.

    Args:
      matvec: v [n] -> A v [n].
      b: [n] right-hand side.
    Returns: x [n].
    """
    chex.assert_rank(b, 1)

    def body(_, carry):
        x, r, p, rr = carry
        ap = matvec(p)
        active = rr >= tol
        pap = jnp.where(active, jnp.vdot(p, ap), 1.0)
        alpha = jnp.where(active, rr / pap, 0.0)
        x_new = x + alpha * p
        r_new = r - alpha * ap
        rr_new = jnp.vdot(r_new, r_new)
        p_new = r_new + jnp.where(active, rr_new / jnp.where(active, rr, 1.0), 0.0) * p
        keep = lambda new, old: jnp.where(active, new, old)
        return keep(x_new, x), keep(r_new, r), keep(p_new, p), keep(rr_new, rr)

    init = (jnp.zeros_like(b), b, b, jnp.vdot(b, b))
    x, *_ = jax.lax.fori_loop(0, iters, body, init)
    return x


def fisher_vector_product(kl_fn: Callable[[Any], jax.Array], params: Any, vector: Any, *,
                          damping: float = 0.0) -> Any:
    """(F + damping I) v, F the Hessian of the mean KL at `params` (Schulman et al. 2015, App. C).

    kl_fn(theta) must be the mean KL(pi_old || pi_theta) with pi_old held fixed and `params`
    = theta_old; there the KL's gradient vanishes and its Hessian is the Fisher information
    matrix of the policy, F = E[grad log pi grad log pi^T]. The product is the forward-mode
    derivative (jvp) of the reverse-mode gradient (vjp), so F is never formed.

    Args:
      kl_fn: theta (pytree) -> scalar.
      params: theta_old (pytree).
      vector: v, a pytree like params.
    Returns: (F + damping I) v, a pytree like params.
    """
    _, fv = jax.jvp(jax.grad(kl_fn), (params,), (vector,))
    return jax.tree.map(lambda a, v: a + damping * v, fv, vector)


def surrogate_objective(log_probs: jax.Array, old_log_probs: jax.Array,
                        advantages: jax.Array) -> jax.Array:
    """Per-sample importance-sampled surrogate r_i A_i, r_i = pi(a_i|s_i) / pi_old(a_i|s_i)
    (Schulman et al. 2015, Eq. 14). An objective to MAXIMIZE; shapes [B] -> [B]."""
    chex.assert_rank(log_probs, 1)
    chex.assert_equal_shape([log_probs, old_log_probs, advantages])
    return jnp.exp(log_probs - old_log_probs) * advantages


@struct.dataclass
class State:
    policy_params: Any
    value_params: Any
    value_opt: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # "lr" (value function), "max_kl" (delta)


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_timesteps = 500_000
    c.num_envs = 8
    c.num_steps = 256  # 2048 samples per policy step
    c.num_updates = _budget.num_updates_ref(c)
    c.log_every = 5
    c.eval_every = 25
    c.eval_episodes = 16
    c.gamma = 0.99
    c.gae_lambda = 0.95
    c.max_kl = 0.01  # delta
    c.cg_iters = 10
    c.cg_tol = 1e-10
    c.cg_damping = 0.1
    c.backtrack_iters = 10
    c.backtrack_coef = 0.5
    c.normalize_advantages = True
    c.lr = 1e-3  # value function (Adam)
    c.adam_eps = 1e-5
    c.vf_epochs = 5
    c.vf_minibatches = 16
    c.hidden_sizes = (64, 64)
    c.activation = "tanh"
    c.normalize_obs = False
    return c


def _value_minibatches_fit(config) -> str | None:
    batch = config.num_envs * config.num_steps
    return None if config.vf_minibatches <= batch else (
        f"config.vf_minibatches={config.vf_minibatches} is more than the batch of "
        f"num_envs * num_steps = {batch} samples; it must be at most {batch}")


CONFIG_RULES = {**op.RULES,
                "max_kl": rules.positive,
                "cg_iters": rules.count,
                "cg_tol": rules.non_negative,
                "cg_damping": rules.non_negative,
                "backtrack_iters": rules.count,
                "backtrack_coef": rules.in_range(0.0, 1.0, low_open=True, high_open=True),
                "vf_epochs": rules.count,
                "vf_minibatches": rules.count}
CONFIG_CHECKS = (*op.CHECKS, _value_minibatches_fit)


def _value_optimizer(config):
    return optim.optimizer(config.lr, eps=config.adam_eps)


def init(key, config, task) -> State:
    k_net, k_state = jax.random.split(key)
    _, _, pp, vp, _, env_state, obs = op.init_networks(*jax.random.split(k_net, 3), config, task)
    return State(policy_params=pp, value_params=vp,
                 value_opt=_value_optimizer(config).init(vp), env_state=env_state, obs=obs,
                 key=k_state, step=jnp.int32(0),
                 hparams={"lr": jnp.float32(config.lr), "max_kl": jnp.float32(config.max_kl)})


def policy_step(policy, params, obs, actions, advantages, *, max_kl, cg_iters, cg_tol,
                cg_damping, backtrack_iters, backtrack_coef):
    """One TRPO step on a batch ([B, ...] leaves): (new params, diagnostics)."""
    old_dist = policy.apply(params, obs)
    old_log_probs = old_dist.log_prob(actions)
    flat0, unravel = ravel_pytree(params)

    def surrogate(p):
        return surrogate_objective(policy.apply(p, obs).log_prob(actions), old_log_probs,
                                   advantages).mean()

    def mean_kl(p):
        return old_dist.kl_divergence(policy.apply(p, obs)).mean()

    surr0, g = jax.value_and_grad(surrogate)(params)
    g = ravel_pytree(g)[0]

    def fvp(v):
        return ravel_pytree(fisher_vector_product(mean_kl, params, unravel(v),
                                                  damping=cg_damping))[0]

    x = conjugate_gradient(fvp, g, iters=cg_iters, tol=cg_tol)
    xfx = jnp.vdot(x, fvp(x))
    full_step = jnp.sqrt(2.0 * max_kl / jnp.maximum(xfx, 1e-12)) * x
    fractions = backtrack_coef ** jnp.arange(backtrack_iters, dtype=jnp.float32)

    def candidate(frac):
        p = unravel(flat0 + frac * full_step)
        return surrogate(p) - surr0, mean_kl(p)

    improve, kls = jax.vmap(candidate)(fractions)
    ok = (improve > 0.0) & (kls <= max_kl) & jnp.isfinite(improve) & jnp.isfinite(kls)
    accepted = ok.any()
    first = jnp.argmax(ok)  # largest acceptable fraction
    frac = jnp.where(accepted, fractions[first], 0.0)
    new_params = unravel(flat0 + frac * full_step)
    info = {"kl": jnp.where(accepted, kls[first], 0.0),
            "surrogate_improvement": jnp.where(accepted, improve[first], 0.0),
            "expected_improvement": jnp.vdot(g, full_step),
            "step_fraction": frac, "accepted": accepted.astype(jnp.float32),
            "grad_norm": jnp.linalg.norm(g), "entropy": old_dist.entropy().mean()}
    return new_params, info


def update(state: State, config, task):
    policy, value = op.build_networks(config, task)
    env = op.make_env(config, task)
    key, k_roll, k_vf = jax.random.split(state.key, 3)
    env_state, obs, batch, metrics = op.collect(
        k_roll, env, task.params, state.env_state, state.obs,
        op.sample_fn(policy, state.policy_params), int(config.num_steps), task)

    values = value.apply(state.value_params, batch.obs)
    next_values = value.apply(state.value_params, batch.next_obs)
    advantages, targets = gae(batch.rewards, values, next_values, batch.terminated, batch.dones,
                              config.gamma, config.gae_lambda)
    obs_b, act_b, adv_b, tgt_b = map(op.flatten_time, (batch.obs, batch.actions, advantages,
                                                       targets))
    if config.normalize_advantages:
        adv_b = normalize_advantages(adv_b)

    policy_params, info = policy_step(
        policy, state.policy_params, obs_b, act_b, adv_b, max_kl=state.hparams["max_kl"],
        cg_iters=int(config.cg_iters), cg_tol=float(config.cg_tol),
        cg_damping=float(config.cg_damping), backtrack_iters=int(config.backtrack_iters),
        backtrack_coef=float(config.backtrack_coef))

    # Value regression on the lambda-returns: vf_epochs passes of shuffled minibatches.
    n = obs_b.shape[0]
    num_mb = int(config.vf_minibatches)
    mb = n // num_mb
    vtx = _value_optimizer(config)
    vopt = optim.set_learning_rate(state.value_opt, state.hparams["lr"])

    def value_loss(params, o, t):
        return 0.5 * jnp.mean(jnp.square(t - value.apply(params, o)))

    def epoch(carry, ekey):
        perm = jax.random.permutation(ekey, n)[: mb * num_mb].reshape(num_mb, mb)

        def minibatch(carry, idx):
            params, opt = carry
            loss, g = jax.value_and_grad(value_loss)(params, obs_b[idx], tgt_b[idx])
            return optim.apply_updates(vtx, opt, params, g), loss

        return jax.lax.scan(minibatch, carry, perm)

    (value_params, vopt), vf_losses = jax.lax.scan(
        epoch, (state.value_params, vopt), jax.random.split(k_vf, int(config.vf_epochs)))

    metrics = {**metrics, **info, "value_loss": vf_losses.mean()}
    new = state.replace(policy_params=policy_params, value_params=value_params, value_opt=vopt,
                        env_state=env_state, obs=obs, key=key, step=state.step + 1)
    return new, metrics


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Env actions for raw observations [B, *obs_shape]: the policy's mode, or a sample."""
    policy, _ = op.build_networks(config, task)
    return op.act(policy, state.policy_params, state.env_state, obs, task, key)


def evaluate(state: State, key, config, task):
    """Mean undiscounted return of greedy (mode-action) episodes."""
    return evaluate_act(act, state, key, config, task)


step_counts = step_axes.on_policy  # the logs' env / gradient step axes (launch/registry.py)
