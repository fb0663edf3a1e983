"""Policy evaluation (S. Zhao, Mathematical Foundations of RL, Ch. 2.7; Ch. 4.2 step 1).

The state values of a fixed policy pi solve the Bellman equation in matrix form (Ch. 2.7)

    v_pi = r_pi + gamma P_pi v_pi,
    r_pi(s) = sum_a pi(a|s) r(s, a),   P_pi(s, s') = sum_a pi(a|s) p(s'|s, a).

Two solvers (`config.method`):

* "closed_form": v_pi = (I - gamma P_pi)^-1 r_pi, one linear solve (done in `init`, and again in
  every `update`, so the values never change).
* "iterative":   v_{k+1} = r_pi + gamma P_pi v_k from v_0 = 0, one sweep per `update`.
  The map is a gamma-contraction in the sup norm, so
  ||v_k - v_pi||_inf <= gamma^k ||v_0 - v_pi||_inf.

The default is "iterative" with 100 sweeps, the book's iterative algorithm (Ch. 2.7.2) as a
learning curve; it stops up to gamma^100 ||v_pi||_inf away from v_pi (2.7e-5 ||v_pi||_inf for
gamma = 0.9). For the exact values of a model this small, use `--config.method=closed_form`.

Metrics of an update: bellman_residual ||T_pi v - v||_inf of the values before the sweep
(iterative; = ||v_{k+1} - v_k||_inf) or of the solution (closed form), and value_error_bound, a
bound on ||v - v_pi||_inf that holds in floating point: gamma / (1 - gamma) times the residual
(iterative; the contraction bound) or residual / (1 - gamma) (closed form), plus
`common.float_resolution`.

The policy evaluated (`config.policy`): "uniform" (every action with probability 1/|A|, the
book's Ch. 2 examples), "optimal" (greedy with respect to v*, computed by
`common.optimal_values`; its value is v*, the optimal state values of the book's Ch. 3), or a
policy written out (`common.given_policy`): one arrow per grid cell (the book's policies of
Figs. 2.7 and 4.4, e.g. "always right", '>>>>>/>>>>>/>>>>>/>>>>>/>>>>>'), action indices per
state, or a .npy of probabilities. With `config.epsilon` > 0 the evaluated policy is its
epsilon-greedy version (1 - eps) pi + eps / |A| (the book's Fig. 5.6).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/value_error"
make_task = common.make_task

METHODS = ("closed_form", "iterative")
CONFIG_RULES = {**common.RULES, "method": rules.one_of(*METHODS),
                "policy": common.policy_spec_rule, "epsilon": rules.probability}


@struct.dataclass
class State:
    values: jax.Array  # v_k [S], the current estimate of v_pi
    policy: jax.Array  # pi [S, A], fixed
    step: jax.Array  # int32


def default_config():
    # 100 iterative sweeps end within gamma^100 ||v_pi|| of v_pi (module docstring); the exact
    # values come from method "closed_form".
    config = common.tabular_config(num_updates=100, log_every=10)
    config.method = "iterative"  # "closed_form" (linear solve) or "iterative" (Bellman sweeps)
    config.policy = "uniform"  # "uniform", "optimal" (greedy of v*), arrows per cell, or a .npy
    config.epsilon = 0.0  # evaluate the epsilon-greedy version of that policy (0: the policy)
    return config


def _check(config) -> None:
    """Python-level validation of the static config (raises at trace time)."""
    if config.method not in METHODS:
        raise ValueError(f"unknown policy_evaluation method {config.method!r}; "
                         f"valid choices: {', '.join(METHODS)}")
    message = common.policy_spec_rule(config.policy)
    if message:
        raise ValueError(f"unknown policy_evaluation policy {config.policy!r}; valid choices: "
                         f"{message}")


def target_policy(task, config) -> jax.Array:
    """The fixed policy pi [S, A] that `config.policy` and `config.epsilon` name."""
    _check(config)
    mdp = common.model_of(task)
    if config.policy == "uniform":
        policy = common.uniform_policy(mdp.num_states, mdp.num_actions).astype(mdp.rewards.dtype)
    elif config.policy == "optimal":
        v_star = common.optimal_values(mdp, config.gamma)
        policy = common.greedy(common.q_from_v(mdp, v_star, config.gamma))
    else:
        policy = common.given_policy(config.policy, task, mdp.rewards.dtype)
    return common.soften(policy, config.epsilon)


def init(key, config, task) -> State:
    del key  # deterministic
    _check(config)
    mdp = common.model_of(task)
    policy = target_policy(task, config)
    if config.method == "closed_form":
        values = common.evaluate_policy_exact(mdp, policy, config.gamma)
    else:
        values = jnp.zeros(mdp.num_states, mdp.rewards.dtype)
    return State(values=values, policy=policy, step=jnp.int32(0))


def update(state: State, config, task):
    _check(config)
    mdp = common.model_of(task)
    if config.method == "closed_form":
        values = common.evaluate_policy_exact(mdp, state.policy, config.gamma)
        # How far the solution is from satisfying v = r_pi + gamma P_pi v (rounding only).
        residual = jnp.max(jnp.abs(
            common.bellman_expectation(mdp, state.policy, values, config.gamma) - values))
        bound = residual / (1.0 - config.gamma)
    else:
        values = common.bellman_expectation(mdp, state.policy, state.values, config.gamma)
        residual = jnp.max(jnp.abs(values - state.values))  # ||T_pi v_k - v_k||_inf
        bound = config.gamma * residual / (1.0 - config.gamma)  # on ||v_{k+1} - v_pi||_inf
    metrics = {"bellman_residual": residual,
               "value_error_bound": bound + common.float_resolution(values, config.gamma)}
    return State(values=values, policy=state.policy, step=state.step + 1), metrics


def evaluate(state: State, key, config, task):
    """value_error = max_s |v_k(s) - v_pi(s)| against the exact solve, plus the policy's quality."""
    del key
    mdp = common.model_of(task)
    v_pi = common.evaluate_policy_exact(mdp, state.policy, config.gamma)
    metrics = {"value_error": jnp.max(jnp.abs(state.values - v_pi))}
    metrics.update(common.policy_metrics(mdp, state.policy, config.gamma,
                                         common.occupiable_states(task)))
    return metrics


solution = common.stored_solution
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
