"""Policy iteration (S. Zhao, Mathematical Foundations of RL, Ch. 4.2, Algorithm 4.2).

Alternates exact policy evaluation and greedy policy improvement:

    policy evaluation:   v_{pi_k} = (I - gamma P_{pi_k})^-1 r_{pi_k}                  (Ch. 2.7)
    policy improvement:  pi_{k+1}(s) = argmax_a [ r(s, a) + gamma sum_s' p(s'|s, a) v_{pi_k}(s') ]

The improvement lemma (Ch. 4.2) gives v_{pi_{k+1}} >= v_{pi_k} element-wise, and since there are
finitely many deterministic policies the sequence reaches an optimal policy in finitely many
iterations (the values v_{pi_k} -> v*).

Indexing. One `update` is one improvement followed by one evaluation: from the state
(v_k, pi_k) it forms pi_{k+1} = greedy(q(v_k)) and then v_{k+1} = v_{pi_{k+1}}. This is the book's
iteration with its two steps written in the other order, so that the state always holds a policy
together with its own exact value. The start is v_0 = 0 (and a uniform placeholder pi_0, as in
value iteration), so the first evaluated policy is pi_1 = greedy w.r.t. the immediate rewards.
With this indexing truncated policy iteration (`truncated_policy_iteration`) reproduces this
algorithm as its number of evaluation sweeps grows, and value iteration with one sweep.

Metrics of an update:
    bellman_residual  ||max_a q(v_k)(., a) - v_k||_inf, the Bellman-optimality residual of v_k
                      (zero exactly when v_k = v*; the same quantity value iteration reports)
    policy_changes    number of states whose greedy action differs between pi_k and pi_{k+1}
                      (the first update compares with the placeholder's argmax, action 0)
    value_change      ||v_{k+1} - v_k||_inf
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
    values: jax.Array  # v_k = v_{pi_k} [S] (v_0 = 0)
    policy: jax.Array  # pi_k [S, A], deterministic one-hot after the first update
    step: jax.Array  # int32


def default_config():
    # Policy iteration converges in a handful of iterations on the book's grid.
    config = common.tabular_config(num_updates=20, log_every=5)
    return config


def init(key, config, task) -> State:
    del key  # deterministic
    values, policy = common.initial_dp_estimates(common.model_of(task))
    return State(values=values, policy=policy, step=jnp.int32(0))


def update(state: State, config, task):
    mdp = common.model_of(task)
    # Policy improvement: greedy with respect to q_{pi_k} (Ch. 4.2).
    q = common.q_from_v(mdp, state.values, config.gamma)
    policy = common.greedy(q)
    # Policy evaluation: exact linear solve (Ch. 2.7).
    values = common.evaluate_policy_exact(mdp, policy, config.gamma)
    metrics = common.iteration_metrics(q, state.values, state.policy, policy, values)
    return State(values=values, policy=policy, step=state.step + 1), metrics


evaluate = common.evaluate_stored_policy
solution = common.stored_solution
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
