"""Value iteration (S. Zhao, Mathematical Foundations of RL, Ch. 4.1, Eq. 4.1).

    v_{k+1} = max_pi (r_pi + gamma P_pi v_k),
    i.e. q_k(s, a) = r(s, a) + gamma sum_s' p(s'|s,a) v_k(s'),  pi_{k+1}(s) = argmax_a q_k(s, a),
    v_{k+1}(s) = max_a q_k(s, a).

One `update` is one sweep over all states. The contraction mapping theorem gives
||v_k - v*||_inf <= gamma^k ||v_0 - v*||_inf (Ch. 3).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.tabular import common

DEFAULT_ENV = "gridworld"
REQUIRES = ("tabular_model",)


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
    mdp = common.model_of(task)
    values = jnp.zeros(mdp.num_states, mdp.rewards.dtype)
    return State(values=values, policy=common.uniform_policy(mdp.num_states, mdp.num_actions),
                 step=jnp.int32(0))


def update(state: State, config, task):
    mdp = common.model_of(task)
    q = common.q_from_v(mdp, state.values, config.gamma)
    values = jnp.max(q, axis=-1)
    metrics = {"bellman_residual": jnp.max(jnp.abs(values - state.values))}
    return State(values=values, policy=common.greedy(q), step=state.step + 1), metrics


def evaluate(state: State, key, config, task):
    del key
    return common.policy_metrics(common.model_of(task), state.policy, config.gamma,
                                 common.occupiable_states(task))


def solution(state: State, config, task):
    """(state values [S], policy [S, A]) for reports and plots."""
    return state.values, state.policy
