"""TD-linear: TD learning with linear value-function approximation
(S. Zhao, Mathematical Foundations of RL, Ch. 8.2 "TD learning of state values with function
approximation", the TD-Linear algorithm and its grid-world examples).

    v_hat(s, w) = phi(s)^T w,
    w_{t+1} = w_t + alpha_t [ r_{t+1} + gamma phi(s_{t+1})^T w_t - phi(s_t)^T w_t ] phi(s_t),

a stochastic-approximation solver of the projected Bellman equation: with states drawn from the
stationary distribution d_pi of the policy, w_t converges to the TD fixed point w_TD solving

    A w = b,  A = Phi^T D (I - gamma P_pi) Phi,  b = Phi^T D r_pi,  D = diag(d_pi)     (Ch. 8)

(where the projected Bellman error is zero), which in general differs from the best
approximation argmin_w ||Phi w - v_pi||.

Features (`config.features`, `config.order`) are computed from the cell's coordinates
x = col / (W - 1), y = row / (H - 1), both in [0, 1]:
* "polynomial": all monomials x^i y^j with i + j <= order, by total degree:
  order 1 -> [1, x, y], order 2 -> [1, x, y, x^2, xy, y^2], ...  ((order+1)(order+2)/2 features)
* "fourier": cos(pi (c1 x + c2 y)) for all c1, c2 in {0, ..., order}  ((order+1)^2 features).

Policy (`config.policy`): "uniform" (the book's example), "optimal", or one written out as in
`td_zero` (arrows per cell, action indices, a .npy). Episode ends: the target
uses the true next state (info['final_observation']); terminated -> no bootstrap, truncated (the
grid world's time limit) -> bootstrap. Step size: "constant" alpha (book: 0.0005) or "decaying"
alpha_t = alpha / (1 + t / alpha_tau) ** alpha_power over the global step count t.

Evaluation (against the exact v_pi = (I - gamma P_pi)^-1 r_pi, over occupiable states, unweighted):
* rmse = sqrt(mean_s (phi(s)^T w - v_pi(s))^2), value_error = max_s |phi(s)^T w - v_pi(s)|;
* best_rmse: rmse of the unweighted least-squares fit argmin_w ||Phi w - v_pi||_2, the best any
  weights can do with these features;
* td_fixed_point_rmse: rmse of w_TD above with D = diag(d_pi), d_pi the stationary distribution of
  P_pi. TD samples from d_pi only in one long episode; with the env's default time limit and
  random restarts the state distribution is a mixture, so the learned w lands near, not at, w_TD
  (raise `--config.env.max_steps_in_episode` to match the theory).
  If P_pi has absorbing states (policy "optimal", or the `gridworld-episodic` target), d_pi sits
  on them and this reference says little; `best_rmse` is the meaningful one then.

One `update` = `config.num_steps` env steps and as many updates of w.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common
from algorithms.tabular.td_zero import (STEP_SIZES, check_choice, env_step, fixed_policy,
                                        float_dtype, step_size)

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/rmse"
make_task = common.make_task

FEATURES = ("polynomial", "fourier")
CONFIG_RULES = {**common.RULES, **common.STEP_SIZE_RULES, "policy": common.policy_spec_rule,
                "features": rules.one_of(*FEATURES), "order": rules.non_negative_count,
                "step_size": rules.one_of(*STEP_SIZES)}


@struct.dataclass
class State:
    w: jax.Array  # weights [F]
    policy: jax.Array  # evaluated policy [S, A] (fixed)
    obs: jax.Array  # int32 current state
    env_state: Any
    key: jax.Array
    step: jax.Array  # int32 updates done
    env_steps: jax.Array  # int32 TD updates of w done (t in the decaying step size)


def default_config():
    config = common.tabular_config(num_updates=500, log_every=50)
    config.policy = "uniform"  # "uniform" (book) or "optimal"
    config.features = "polynomial"  # "polynomial" or "fourier"
    config.order = 2  # polynomial degree / largest Fourier frequency
    config.num_steps = 500  # book: 500 episodes x 500 steps
    config.step_size = "constant"  # "constant" or "decaying"
    config.alpha = 0.0005  # book: 0.0005
    config.alpha_tau = 1e4  # decaying: step-count scale of the decay
    config.alpha_power = 0.75  # decaying: exponent in (0.5, 1]
    return config


def coordinates(height: int, width: int) -> np.ndarray:
    """[S, 2] array of (x, y) = (col / (W-1), row / (H-1)) in [0, 1], row-major states."""
    rows, cols = np.divmod(np.arange(height * width), width)
    return np.stack([cols / max(width - 1, 1), rows / max(height - 1, 1)], axis=1)


def feature_matrix(features: str, order: int, height: int, width: int) -> np.ndarray:
    """Phi [S, F] for every cell (float64 numpy; static)."""
    check_choice("features", features, FEATURES)
    if int(order) < 0:
        raise ValueError(f"config.order must be >= 0, got {order}")
    xy = coordinates(height, width)
    x, y = xy[:, 0], xy[:, 1]
    if features == "polynomial":
        cols = [x ** (d - j) * y ** j for d in range(order + 1) for j in range(d + 1)]
    else:
        cols = [np.cos(np.pi * (c1 * x + c2 * y)) for c1 in range(order + 1)
                for c2 in range(order + 1)]
    return np.stack(cols, axis=1)


def features_of(config, task) -> jax.Array:
    env = task.env
    if not hasattr(env, "height") or not hasattr(env, "width"):
        raise ValueError("td_linear needs a grid env with height and width (e.g. 'gridworld')")
    return jnp.asarray(feature_matrix(config.features, int(config.order), env.height, env.width),
                       float_dtype())


def td_linear_update(w, phi_s, r, phi_next, terminated, alpha, gamma):
    """One TD-Linear update (Ch. 8.2): returns (new w, TD error r + gamma v' - v)."""
    target = r + gamma * jnp.where(terminated, 0.0, phi_next @ w)
    delta = target - phi_s @ w
    return w + alpha * delta * phi_s, delta


def init(key, config, task) -> State:
    check_choice("step_size", config.step_size, STEP_SIZES)
    phi = features_of(config, task)
    key, k_reset = jax.random.split(key)
    obs, env_state = task.env.reset(k_reset, task.params)
    return State(w=jnp.zeros(phi.shape[1], float_dtype()), policy=fixed_policy(config, task),
                 obs=jnp.asarray(obs, jnp.int32), env_state=env_state, key=key,
                 step=jnp.int32(0), env_steps=jnp.int32(0))


def update(state: State, config, task):
    phi = features_of(config, task)
    key, k_steps = jax.random.split(state.key)

    def one_step(carry, step_key):
        w, obs, env_state, t = carry
        k_act, k_env = step_key
        action = common.sample_actions(k_act, state.policy[obs])
        next_obs, env_state, reward, s_next, terminated, _ = env_step(k_env, task, env_state,
                                                                      action)
        alpha = step_size(config, t)
        w, delta = td_linear_update(w, phi[obs], reward, phi[s_next], terminated, alpha,
                                    config.gamma)
        return (w, next_obs, env_state, t + 1), jnp.abs(delta)

    (w, obs, env_state, t), abs_td = jax.lax.scan(
        one_step, (state.w, state.obs, state.env_state, state.env_steps),
        jax.random.split(k_steps, (config.num_steps, 2)))
    metrics = {"td_error": jnp.mean(abs_td), "alpha": step_size(config, t)}
    return state.replace(w=w, obs=obs, env_state=env_state, key=key, step=state.step + 1,
                         env_steps=t.astype(jnp.int32)), metrics


def stationary_distribution(p_pi: jax.Array) -> jax.Array:
    """d with d^T P = d^T, sum d = 1 (unique for an irreducible chain): least squares on
    [(I - P)^T; 1^T] d = [0; 1]."""
    n = p_pi.shape[0]
    a = jnp.concatenate([(jnp.eye(n, dtype=p_pi.dtype) - p_pi).T, jnp.ones((1, n), p_pi.dtype)])
    b = jnp.zeros(n + 1, p_pi.dtype).at[n].set(1.0)
    d = jnp.linalg.lstsq(a, b)[0]
    d = jnp.clip(d, 0.0, None)
    return d / jnp.sum(d)


def td_fixed_point(phi, p_pi, r_pi, d, gamma):
    """w_TD solving Phi^T D (I - gamma P_pi) Phi w = Phi^T D r_pi."""
    a = phi.T @ (d[:, None] * (phi - gamma * p_pi @ phi))
    b = phi.T @ (d * r_pi)
    return jnp.linalg.lstsq(a, b)[0]


def evaluate(state: State, key, config, task):
    del key
    mdp = common.model_of(task)
    phi = features_of(config, task)
    r_pi, p_pi = common.policy_matrices(mdp, state.policy)
    v_pi = common.evaluate_policy_exact(mdp, state.policy, config.gamma)
    mask = common.occupiable_states(task)
    count = jnp.sum(mask)

    def rmse(v):
        return jnp.sqrt(jnp.sum(jnp.where(mask, v - v_pi, 0.0) ** 2) / count)

    v_hat = phi @ state.w
    phi_m = jnp.where(mask[:, None], phi, 0.0)
    w_ls = jnp.linalg.lstsq(phi_m, jnp.where(mask, v_pi, 0.0))[0]
    w_td = td_fixed_point(phi, p_pi, r_pi, stationary_distribution(p_pi), config.gamma)
    return {"rmse": rmse(v_hat),
            "value_error": jnp.max(jnp.where(mask, jnp.abs(v_hat - v_pi), 0.0)),
            "best_rmse": rmse(phi @ w_ls),
            "td_fixed_point_rmse": rmse(phi @ w_td),
            "weight_error_td": jnp.max(jnp.abs(state.w - w_td))}


def solution(state: State, config, task):
    """(v_hat(s) = phi(s)^T w [S], the evaluated policy [S, A])."""
    return features_of(config, task) @ state.w, state.policy


act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
