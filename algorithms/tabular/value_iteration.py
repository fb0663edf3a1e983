"""Value iteration (S. Zhao, Mathematical Foundations of RL, Ch. 4.1, Eq. 4.1).

    v_{k+1} = max_pi (r_pi + gamma P_pi v_k),
    i.e. q_k(s, a) = r(s, a) + gamma sum_s' p(s'|s,a) v_k(s'),  pi_{k+1}(s) = argmax_a q_k(s, a),
    v_{k+1}(s) = max_a q_k(s, a).

One `update` is one sweep over all states. The contraction mapping theorem gives
||v_k - v*||_inf <= gamma^k ||v_0 - v*||_inf (Ch. 3).

Metrics of an update: bellman_residual ||v_{k+1} - v_k||_inf and value_error_bound, a bound on
||v_{k+1} - v*||_inf that holds in floating point: gamma / (1 - gamma) times the residual (the
contraction bound) plus `common.float_resolution` of the values. In float32 the sweeps can
reach a rounding fixed point (residual 0) that is not v*; the bound stays above that error, and
`--config.x64=true` shrinks it by the ratio of the machine epsilons (about 5e8).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = common.RULES


@struct.dataclass
class State:
    values: jax.Array  # v_k [S]
    policy: jax.Array  # pi_k [S, A], greedy w.r.t. q_{k-1}
    step: jax.Array  # int32


def default_config():
    config = common.tabular_config(num_updates=200, log_every=20)
    return config


def init(key, config, task) -> State:
    del key  # deterministic
    values, policy = common.initial_dp_estimates(common.model_of(task))
    return State(values=values, policy=policy, step=jnp.int32(0))


def update(state: State, config, task):
    mdp = common.model_of(task)
    q = common.q_from_v(mdp, state.values, config.gamma)
    values = jnp.max(q, axis=-1)
    residual = jnp.max(jnp.abs(values - state.values))
    metrics = {"bellman_residual": residual,
               "value_error_bound": config.gamma * residual / (1.0 - config.gamma)
               + common.float_resolution(values, config.gamma)}
    return State(values=values, policy=common.greedy(q), step=state.step + 1), metrics


evaluate = common.evaluate_stored_policy
solution = common.stored_solution
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
