"""Truncated policy iteration (S. Zhao, Mathematical Foundations of RL, Ch. 4.3, Algorithm 4.3).

Policy iteration whose evaluation step is cut short after `j_truncate` (here
`config.eval_sweeps`) sweeps of the Bellman expectation operator, started from the previous
value estimate instead of solved exactly:

    policy improvement:  pi_{k+1}(s) = argmax_a [ r(s, a) + gamma sum_s' p(s'|s, a) v_k(s') ]
    policy evaluation:   v^(0) = v_k,  v^(j+1) = r_{pi_{k+1}} + gamma P_{pi_{k+1}} v^(j)
                         (j = 0 .. eval_sweeps - 1),   v_{k+1} = v^(eval_sweeps)

Indexing (the same as `policy_iteration`): one `update` is one improvement followed by the
truncated evaluation, from the start v_0 = 0 with a uniform placeholder pi_0. The book's
interpolation (Ch. 4.3) then holds exactly, update by update:

* eval_sweeps = 1: pi_{k+1} = greedy(v_k) and v_{k+1} = r_{pi_{k+1}} + gamma P_{pi_{k+1}} v_k
  = max_a q(v_k)(., a), which is value iteration (Ch. 4.1): the same values and policies.
* eval_sweeps -> infinity: v^(j) -> v_{pi_{k+1}}, which is policy iteration.

The book leaves j_truncate free; the default of 5 sweeps is our choice (any value >= 1
converges to v*, Ch. 4.3).

Metrics of an update: bellman_residual (||max_a q(v_k) - v_k||_inf, as value iteration reports),
policy_changes (states whose greedy action changed; the first update compares with
the placeholder's argmax, action 0), value_change (||v_{k+1} - v_k||_inf).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = {**common.RULES, "eval_sweeps": rules.count}


@struct.dataclass
class State:
    values: jax.Array  # v_k [S], an estimate of v_{pi_k} (v_0 = 0)
    policy: jax.Array  # pi_k [S, A], deterministic one-hot after the first update
    step: jax.Array  # int32


def default_config():
    config = common.tabular_config(num_updates=100, log_every=10)
    config.eval_sweeps = 5  # j_truncate: Bellman-expectation sweeps per evaluation (>= 1)
    return config


def _check(config) -> None:
    sweeps = config.eval_sweeps
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 1:
        raise ValueError(f"eval_sweeps must be an integer >= 1, got {sweeps!r}")


def init(key, config, task) -> State:
    del key  # deterministic
    _check(config)
    values, policy = common.initial_dp_estimates(common.model_of(task))
    return State(values=values, policy=policy, step=jnp.int32(0))


def update(state: State, config, task):
    _check(config)
    mdp = common.model_of(task)
    # Policy improvement with respect to the current estimate v_k.
    q = common.q_from_v(mdp, state.values, config.gamma)
    policy = common.greedy(q)
    # Truncated policy evaluation: eval_sweeps Bellman-expectation sweeps from v_k.
    values = jax.lax.fori_loop(
        0, config.eval_sweeps,
        lambda _, v: common.bellman_expectation(mdp, policy, v, config.gamma), state.values)
    metrics = common.iteration_metrics(q, state.values, state.policy, policy, values)
    return State(values=values, policy=policy, step=state.step + 1), metrics


evaluate = common.evaluate_stored_policy
solution = common.stored_solution
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
