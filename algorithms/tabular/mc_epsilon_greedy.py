"""MC epsilon-Greedy (S. Zhao, Mathematical Foundations of RL, Ch. 5.4, Algorithm 5.3).

MC control without exploring starts: the behavior policy itself explores. With |A| actions,

    pi(a|s) = 1 - eps (|A| - 1) / |A|   for a = argmax_a' q(s, a'),
    pi(a|s) = eps / |A|                 for the other actions               (Ch. 5.4),

so every action keeps probability >= eps / |A| and long episodes visit every pair many times.

    episode:     start from the env's start distribution (for the book grid: a uniformly random
                 cell) and follow the eps-greedy policy for `episode_length` steps;
    returns:     backward, g <- gamma g + r_{t+1} (reverse lax.scan, shared with mc_basic);
    evaluation:  Returns(s_t, a_t) += g, Num(s_t, a_t) += 1, q = Returns / Num, every visit
                 (`first_visit=True`: first visits only);
    improvement: pi(.|s_t) <- eps-greedy w.r.t. q(s_t, .) for every visited s_t. The policy is
                 stored as q and derived from it (unvisited states' q and hence policy do not
                 change, so this is the same thing).

The book's examples run ONE very long episode (1e6 steps). Here one `update` is
`episodes_per_update` vmapped episodes of `episode_length` (default 16 x 100) followed by one
improvement; the env's `max_steps_in_episode` is set to `episode_length`.

Sample efficiency: once the policy is decent the agent spends most steps at the target, so far
states are visited mostly as start states and their non-greedy actions (probability eps/|A|
each) get few returns, many from early, poor policies, which the lifetime averages forget
slowly; single far states stay off longest where the q values of two actions nearly tie.

The eps-greedy policy is what the algorithm optimizes: it converges towards the best policy
among eps-greedy ones, whose greedy part is optimal for small eps; the book shows that large
eps can change it. `evaluate` reports the exact value of both policies: "policy_value" /
"optimality_gap" for the GREEDY policy argmax_a q(s, a) and "eps_policy_value" /
"eps_optimality_gap" for the eps-greedy behavior policy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common
from algorithms.tabular.mc_basic import episode_task
from algorithms.tabular.mc_exploring_starts import episode_statistics

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = {**common.RULES, "epsilon": rules.probability,
                "episode_length": rules.count, "episodes_per_update": rules.count}


@struct.dataclass
class State:
    q: jax.Array  # Returns / Num (0 where Num = 0) [S, A]
    returns_sum: jax.Array  # Returns(s, a) [S, A]
    counts: jax.Array  # Num(s, a) [S, A] int32
    key: jax.Array  # typed PRNG key
    step: jax.Array  # int32


def default_config():
    config = common.tabular_config(num_updates=300, log_every=10)
    config.epsilon = 0.1  # exploration rate (the book's examples also use larger ones)
    config.episode_length = 100  # steps per episode (the book: one episode of 1e6 steps)
    config.episodes_per_update = 16  # vmapped episodes between improvements
    config.first_visit = False  # Alg. 5.3 uses every visit
    return config


def behavior_policy(q, config):
    return common.epsilon_greedy(q, config.epsilon)


def init(key, config, task) -> State:
    mdp = common.model_of(task)
    shape = (mdp.num_states, mdp.num_actions)
    dtype = mdp.rewards.dtype
    return State(q=jnp.zeros(shape, dtype), returns_sum=jnp.zeros(shape, dtype),
                 counts=jnp.zeros(shape, jnp.int32), key=key, step=jnp.int32(0))


def update(state: State, config, task):
    env = task.env
    num_s, num_a = env.num_states, env.num_actions
    key, k_roll = jax.random.split(state.key)
    policy = behavior_policy(state.q, config)
    ep_task = episode_task(task, config.episode_length)

    def one_episode(k):
        traj = common.rollout(k, ep_task, policy, config.episode_length)
        ret, cnt, g = episode_statistics(traj, num_s, num_a, config.gamma, config.first_visit)
        return ret, cnt, g[0]

    ret, cnt, g0 = jax.vmap(one_episode)(jax.random.split(k_roll, config.episodes_per_update))
    returns_sum = state.returns_sum + ret.sum(0).astype(state.returns_sum.dtype)
    counts = state.counts + cnt.sum(0)
    q = jnp.where(counts > 0, returns_sum / jnp.maximum(counts, 1), 0.0).astype(state.q.dtype)
    greedy_changes = jnp.argmax(q, -1) != jnp.argmax(state.q, -1)
    metrics = {"greedy_changes": jnp.sum(greedy_changes).astype(jnp.int32),
               "visited_pairs_frac": jnp.mean(counts > 0),
               "start_return": jnp.mean(g0)}  # mean g_0 of this update's episodes
    return State(q=q, returns_sum=returns_sum, counts=counts, key=key,
                 step=state.step + 1), metrics


def evaluate(state: State, key, config, task):
    del key
    mdp = common.model_of(task)
    greedy_m = common.policy_metrics(mdp, common.greedy(state.q), config.gamma,
                                     common.occupiable_states(task))
    eps_m = common.policy_metrics(mdp, behavior_policy(state.q, config), config.gamma,
                                  common.occupiable_states(task))
    return {**greedy_m, "eps_policy_value": eps_m["policy_value"],
            "eps_optimality_gap": eps_m["optimality_gap"]}


def solution(state: State, config, task):
    """(estimated values sum_a pi(a|s) q(s, a) [S], eps-greedy policy [S, A])."""
    policy = behavior_policy(state.q, config)
    return jnp.sum(policy * state.q, axis=-1), policy


act = common.act_epsilon_greedy
artifacts = common.artifacts_from(solution, __name__)
