"""The best epsilon-greedy policy, exactly: policy iteration restricted to epsilon-greedy policies
(S. Zhao, Mathematical Foundations of RL, Ch. 5.4-5.5; the exact counterpart of the sample-based
`mc_epsilon_greedy`, whose target this is).

With |A| actions, the epsilon-greedy policies are

    Pi_eps = { pi : pi(a|s) = 1 - eps (|A| - 1) / |A| for one action a*(s), eps / |A| otherwise }.

Policy iteration (Ch. 4.2) with both steps kept inside Pi_eps:

    policy evaluation:   v_{pi_k} = (I - gamma P_{pi_k})^-1 r_{pi_k}                  (Ch. 2.7)
    policy improvement:  pi_{k+1} = argmax_{pi in Pi_eps} (r_pi + gamma P_pi v_{pi_k}),
                         i.e. a*(s) = argmax_a q_{pi_k}(s, a): the epsilon-greedy policy of q.

The improvement is the maximum over Pi_eps (only the greedy share 1 - eps can be moved), so the
argument of the book's policy improvement lemma (Ch. 4.2) goes through inside Pi_eps:
v_{pi_{k+1}} >= v_{pi_k} element-wise, and with finitely many policies in Pi_eps the iteration
ends, in finitely many steps, at a policy solving the Bellman optimality equation restricted to
Pi_eps, v = max_{pi in Pi_eps} (r_pi + gamma P_pi v): the optimal epsilon-greedy policy of the
book's Fig. 5.7 (its values are unique; its greedy action need not be). eps = 0 is policy
iteration (`policy_iteration`, the same operations); for eps > 0 its greedy actions can differ
from an optimal policy's, e.g. leave the target when the forbidden cells around it are likely
to be entered by the exploring actions (the book's discussion of Fig. 5.7).

Indexing as in `policy_iteration`: one `update` maps (v_k, pi_k) to pi_{k+1} = eps-greedy(q(v_k))
and v_{k+1} = v_{pi_{k+1}}, from v_0 = 0 and a uniform placeholder pi_0.

Metrics of an update:
    bellman_residual  ||max_{pi in Pi_eps} (r_pi + gamma P_pi v_k) - v_k||_inf, the residual of
                      the restricted optimality equation at v_k (zero exactly at the optimum)
    policy_changes    states whose greedy action a*(s) differs between pi_k and pi_{k+1}
    value_change      ||v_{k+1} - v_k||_inf
`evaluate` reports the epsilon-greedy policy's exact quality against the unrestricted v*
(policy_value, optimality_gap > 0 for eps > 0: the price of exploring) and that of its greedy
part argmax_a pi(a|s) (greedy_policy_value, greedy_optimality_gap).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = {**common.RULES, "epsilon": rules.probability}


@struct.dataclass
class State:
    values: jax.Array  # v_k = v_{pi_k} [S] (v_0 = 0)
    policy: jax.Array  # pi_k [S, A], epsilon-greedy after the first update
    step: jax.Array  # int32


def default_config():
    # Like policy iteration, a handful of iterations converge on the book's grid.
    config = common.tabular_config(num_updates=20, log_every=5)
    config.epsilon = 0.1  # the exploration rate that defines Pi_eps (the book: 0.1, 0.2, 0.5)
    return config


def init(key, config, task) -> State:
    del key  # deterministic
    values, policy = common.initial_dp_estimates(common.model_of(task))
    return State(values=values, policy=policy, step=jnp.int32(0))


def update(state: State, config, task):
    mdp = common.model_of(task)
    # Policy improvement inside Pi_eps: epsilon-greedy with respect to q_{pi_k}.
    q = common.q_from_v(mdp, state.values, config.gamma)
    policy = common.epsilon_greedy(q, config.epsilon)
    # Policy evaluation: exact linear solve (Ch. 2.7).
    values = common.evaluate_policy_exact(mdp, policy, config.gamma)
    metrics = {
        "bellman_residual": jnp.max(jnp.abs(jnp.sum(policy * q, axis=-1) - state.values)),
        "policy_changes": jnp.sum(jnp.argmax(policy, -1) != jnp.argmax(state.policy, -1)
                                  ).astype(jnp.int32),
        "value_change": jnp.max(jnp.abs(values - state.values)),
    }
    return State(values=values, policy=policy, step=state.step + 1), metrics


def evaluate(state: State, key, config, task):
    del key
    mdp = common.model_of(task)
    mask = common.occupiable_states(task)
    metrics = common.policy_metrics(mdp, state.policy, config.gamma, mask)
    greedy_part = common.policy_metrics(mdp, common.greedy(state.policy), config.gamma, mask)
    return {**metrics, "greedy_policy_value": greedy_part["policy_value"],
            "greedy_optimality_gap": greedy_part["optimality_gap"]}


solution = common.stored_solution
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
