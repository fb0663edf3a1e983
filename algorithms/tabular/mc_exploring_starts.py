"""MC Exploring Starts (S. Zhao, Mathematical Foundations of RL, Ch. 5.3, Algorithm 5.2).

A sample-efficient MC Basic: each episode is used for every (s, a) pair it visits, and the
policy is improved episode by episode instead of after a full evaluation.

    episode:     (s_0, a_0) drawn uniformly from all pairs (the exploring start: every pair
                 must be started from infinitely often), then a_t ~ pi(s_t) for t >= 1,
                 of `episode_length` steps;
    returns:     backward, t = T-1, ..., 0:   g <- gamma g + r_{t+1}      (lax.scan, reverse)
    evaluation:  Returns(s_t, a_t) += g,  Num(s_t, a_t) += 1,  q(s_t, a_t) = Returns / Num
                 for every visit (`first_visit=True`: only the first visit of a pair in an
                 episode counts, the first-visit strategy of Ch. 5.3.1);
    improvement: pi(s_t) = argmax_a q(s_t, a) for every visited state s_t (greedy, deterministic).

q is the running average of all returns ever collected for a pair, including those of earlier
policies (as in the book); unvisited pairs keep q = 0. One `update` processes
`episodes_per_update` independent episodes (vmapped, all from the same policy) and then applies
their summed statistics at once (with 1 it is the book's one-episode step exactly).

Every visit vs first visit: Alg. 5.2 as printed averages every visit. Early policies are
random deterministic ones that often loop (e.g. bump into a wall for the whole episode), and
every-visit averaging then stores up to `episode_length` poor returns per episode for the pairs
on the loop; these dominate the averages long after the policy has improved, so the default is
`first_visit=True`. The states whose two best actions nearly tie in q* are the last to settle,
since the averages of old returns fade slowly.

Episodes: the env's `max_steps_in_episode` is set to `episode_length` (one rollout = one
episode). Returns near the end of an episode see fewer future rewards (truncated at the
episode's end); the book's algorithm uses them anyway, and so do we.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common
from algorithms.tabular.mc_basic import (discounted_returns, episode_task,
                                         random_deterministic_policy)

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = {**common.RULES, "episode_length": rules.count,
                "episodes_per_update": rules.count}


@struct.dataclass
class State:
    q: jax.Array  # Returns / Num (0 where Num = 0) [S, A]
    returns_sum: jax.Array  # Returns(s, a) [S, A]
    counts: jax.Array  # Num(s, a) [S, A] int32
    policy: jax.Array  # current deterministic policy, one-hot [S, A]
    key: jax.Array  # typed PRNG key
    step: jax.Array  # int32


def default_config():
    config = common.tabular_config(num_updates=600, log_every=20)
    config.episode_length = 30  # T; long enough for the 5x5 grid (see mc_basic's doc)
    config.episodes_per_update = 64  # episodes per update (vmapped); the book's step is 1
    config.first_visit = True  # Alg. 5.2 averages every visit (False); see module doc
    return config


def init(key, config, task) -> State:
    mdp = common.model_of(task)
    key, sub = jax.random.split(key)
    shape = (mdp.num_states, mdp.num_actions)
    dtype = mdp.rewards.dtype
    return State(q=jnp.zeros(shape, dtype), returns_sum=jnp.zeros(shape, dtype),
                 counts=jnp.zeros(shape, jnp.int32),
                 policy=random_deterministic_policy(sub, *shape, dtype),
                 key=key, step=jnp.int32(0))


def first_visit_mask(pairs: jax.Array, num_pairs: int) -> jax.Array:
    """mask[t] = True iff pair index `pairs[t]` does not occur at any t' < t."""
    steps = jnp.arange(pairs.shape[0], dtype=jnp.int32)
    first = jnp.full((num_pairs,), pairs.shape[0], jnp.int32).at[pairs].min(steps)
    return first[pairs] == steps


def episode_statistics(traj: common.Transition, num_states: int, num_actions: int, gamma,
                       first_visit: bool):
    """(sum of returns [S, A], visit counts [S, A] int32, returns g_t [T]) of one trajectory."""
    g = discounted_returns(traj.reward, traj.terminated | traj.truncated, gamma)
    pairs = traj.state * num_actions + traj.action
    num_pairs = num_states * num_actions
    weight = (first_visit_mask(pairs, num_pairs) if first_visit
              else jnp.ones(pairs.shape, bool)).astype(jnp.int32)
    ret = jnp.zeros(num_pairs, g.dtype).at[pairs].add(g * weight)
    cnt = jnp.zeros(num_pairs, jnp.int32).at[pairs].add(weight)
    return ret.reshape(num_states, num_actions), cnt.reshape(num_states, num_actions), g


def update(state: State, config, task):
    env = task.env
    num_s, num_a = env.num_states, env.num_actions
    key, k_start, k_roll = jax.random.split(state.key, 3)
    n = config.episodes_per_update
    # Exploring starts: (s0, a0) uniform over the startable states (all but walls / a terminal
    # target) and all actions.
    startable = jnp.asarray(env.startable)
    k_s, k_a = jax.random.split(k_start)
    s0 = jax.random.choice(k_s, num_s, (n,), p=startable / startable.sum()).astype(jnp.int32)
    a0 = jax.random.randint(k_a, (n,), 0, num_a).astype(jnp.int32)
    ep_task = episode_task(task, config.episode_length)

    def one_episode(k, s, a):
        traj = common.rollout(k, ep_task, state.policy, config.episode_length,
                              start_state=s, start_action=a)
        ret, cnt, g = episode_statistics(traj, num_s, num_a, config.gamma, config.first_visit)
        visited = jnp.zeros(num_s, bool).at[traj.state].set(True)
        return ret, cnt, visited, g[0]

    ret, cnt, visited, g0 = jax.vmap(one_episode)(jax.random.split(k_roll, n), s0, a0)
    returns_sum = state.returns_sum + ret.sum(0).astype(state.returns_sum.dtype)
    counts = state.counts + cnt.sum(0)
    q = jnp.where(counts > 0, returns_sum / jnp.maximum(counts, 1), 0.0).astype(state.q.dtype)
    visited = jnp.any(visited, axis=0)
    policy = jnp.where(visited[:, None], common.greedy(q), state.policy)
    metrics = {"policy_changes": jnp.sum(jnp.any(policy != state.policy, -1)).astype(jnp.int32),
               "visited_pairs_frac": jnp.mean(counts > 0),
               "start_return": jnp.mean(g0)}  # mean g_0 of this update's episodes
    return State(q=q, returns_sum=returns_sum, counts=counts, policy=policy, key=key,
                 step=state.step + 1), metrics


def solution(state: State, config, task):
    """(estimated values sum_a pi(a|s) q(s, a) [S], current policy [S, A])."""
    return jnp.sum(state.policy * state.q, axis=-1), state.policy


evaluate = common.evaluate_stored_policy
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
