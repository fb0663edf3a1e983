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

The policy evaluated (`config.policy`): "uniform" (every action with probability 1/|A|, the
book's Ch. 2 examples) or "optimal" (greedy with respect to v*, computed by
`common.optimal_values`; its value is v*, the optimal state values of the book's Ch. 3).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/value_error"
make_task = common.make_task

METHODS = ("closed_form", "iterative")
POLICIES = ("uniform", "optimal")


@struct.dataclass
class State:
    values: jax.Array  # v_k [S], the current estimate of v_pi
    policy: jax.Array  # pi [S, A], fixed
    step: jax.Array  # int32


def default_config():
    config = common.tabular_config(num_updates=100, log_every=10)
    config.method = "iterative"  # "closed_form" (linear solve) or "iterative" (Bellman sweeps)
    config.policy = "uniform"  # the policy evaluated: "uniform" random or "optimal" (greedy of v*)
    return config


def _check(config) -> None:
    """Python-level validation of the static config (raises at trace time)."""
    if config.method not in METHODS:
        raise ValueError(f"unknown policy_evaluation method {config.method!r}; "
                         f"valid choices: {', '.join(METHODS)}")
    if config.policy not in POLICIES:
        raise ValueError(f"unknown policy_evaluation policy {config.policy!r}; "
                         f"valid choices: {', '.join(POLICIES)}")


def target_policy(mdp, config) -> jax.Array:
    """The fixed policy pi [S, A] that `config.policy` names."""
    _check(config)
    if config.policy == "uniform":
        return common.uniform_policy(mdp.num_states, mdp.num_actions).astype(mdp.rewards.dtype)
    v_star = common.optimal_values(mdp, config.gamma)
    return common.greedy(common.q_from_v(mdp, v_star, config.gamma))


def init(key, config, task) -> State:
    del key  # deterministic
    _check(config)
    mdp = common.model_of(task)
    policy = target_policy(mdp, config)
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
    else:
        values = common.bellman_expectation(mdp, state.policy, state.values, config.gamma)
        residual = jnp.max(jnp.abs(values - state.values))  # ||T_pi v_k - v_k||_inf
    metrics = {"bellman_residual": residual}
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
