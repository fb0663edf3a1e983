"""MC Basic (S. Zhao, Mathematical Foundations of RL, Ch. 5.2, Algorithm 5.1).

Policy iteration with the model-based evaluation step replaced by Monte Carlo estimation:

    policy evaluation:   q_{pi_k}(s, a) = E[G_t | S_t = s, A_t = a]
                         ~ (1/N) sum_{i=1}^N g^{(i)}(s, a),
                         the mean discounted return g = sum_{t=0}^{L-1} gamma^t r_{t+1} of N
                         episodes of length L that start with (s, a) and then follow pi_k;
    policy improvement:  pi_{k+1}(s) = argmax_a q_{pi_k}(s, a)   (deterministic, greedy).

One `update` is one (evaluation, improvement) iteration: it samples `episodes_per_pair`
episodes from EVERY state-action pair (vmapped over the |S| |A| pairs and the episodes) and
replaces q with the fresh means; it keeps no memory of older policies' returns.

Episode length (book Ch. 5.2.3, Fig. 5.5): a return truncated after L steps ignores the rewards
from step L on, so a state more than about L steps from the target never "sees" it and its
estimated q values all tie (greedy ties go to action 0); the region of states with correct
values grows outward from the target as L grows. Even with the right policy the estimates stay
off by up to gamma^L r_target / (1 - gamma). The greedy policy needs a shorter L than the
values do; tests/test_mc.py checks that the default L = 30 reaches an optimal policy and that
L = 1 does not.

The grid world and a deterministic policy make every episode deterministic, so one episode per
pair is exact (the book's remark); with `slip_prob > 0` raise `episodes_per_pair`.

Episodes: the env's own `max_steps_in_episode` is replaced by `episode_length`, so each rollout
is exactly one episode (or shorter if the env terminates it, e.g. `terminal_target=True`; the
return then stops at the end of that episode).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.core import returns as core_returns
from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = {**common.RULES, "episode_length": rules.count,
                "episodes_per_pair": rules.count}


@struct.dataclass
class State:
    q: jax.Array  # q_{pi_{k-1}} estimated in the last update [S, A] (zeros before the first)
    policy: jax.Array  # pi_k, deterministic, one-hot [S, A]
    key: jax.Array  # typed PRNG key
    step: jax.Array  # int32


def default_config():
    config = common.tabular_config(num_updates=20, log_every=1)
    config.episode_length = 30  # L; long enough for the book grid (module doc)
    config.episodes_per_pair = 1  # N; 1 is exact for a deterministic env and policy
    return config


# ---------------------------------------------------------------------- shared MC pieces
def discounted_returns(rewards: jax.Array, dones: jax.Array, gamma) -> jax.Array:
    """Returns g_t of every step of a trajectory, by the backward recursion of Alg. 5.2.

    g_t = r_{t+1} + gamma g_{t+1} (book indexing; here `rewards[t]` is r_{t+1}), with g_L = 0 at
    the end of the trajectory and the recursion cut after a step that ended its episode
    (`dones[t]`: the next step belongs to a new episode): the shared reverse scan of
    `algorithms.core.returns.discounted_returns`.
    """
    return core_returns.discounted_returns(rewards, dones.astype(rewards.dtype), gamma)


def episode_task(task: common.Task, length: int) -> common.Task:
    """`task` with the env's episode limit set to `length`: one rollout = one episode."""
    return common.Task(task.env, task.params.replace(max_steps_in_episode=int(length)))


def random_deterministic_policy(key, num_states: int, num_actions: int, dtype) -> jax.Array:
    """A uniformly random deterministic policy (one-hot rows): the initial pi_0."""
    actions = jax.random.randint(key, (num_states,), 0, num_actions)
    return jax.nn.one_hot(actions, num_actions, dtype=dtype)


# ---------------------------------------------------------------------- protocol
def init(key, config, task) -> State:
    mdp = common.model_of(task)
    key, sub = jax.random.split(key)
    policy = random_deterministic_policy(sub, mdp.num_states, mdp.num_actions, mdp.rewards.dtype)
    return State(q=jnp.zeros((mdp.num_states, mdp.num_actions), mdp.rewards.dtype),
                 policy=policy, key=key, step=jnp.int32(0))


def estimate_q(key, policy, config, task) -> jax.Array:
    """MC estimate of q_pi(s, a) for every pair: mean first-step return of N episodes [S, A]."""
    env = task.env
    num_s, num_a = env.num_states, env.num_actions
    n = config.episodes_per_pair
    ep_task = episode_task(task, config.episode_length)
    states = jnp.repeat(jnp.arange(num_s, dtype=jnp.int32), num_a * n)
    actions = jnp.tile(jnp.repeat(jnp.arange(num_a, dtype=jnp.int32), n), num_s)
    keys = jax.random.split(key, num_s * num_a * n)

    def first_return(k, s, a):
        traj = common.rollout(k, ep_task, policy, config.episode_length, start_state=s,
                              start_action=a)
        g = discounted_returns(traj.reward, traj.terminated | traj.truncated, config.gamma)
        return g[0]

    returns = jax.vmap(first_return)(keys, states, actions)  # [S * A * N]
    return returns.reshape(num_s, num_a, n).mean(axis=-1)


def update(state: State, config, task):
    key, sub = jax.random.split(state.key)
    q = estimate_q(sub, state.policy, config, task).astype(state.q.dtype)
    policy = common.greedy(q)
    changed = jnp.any(policy != state.policy, axis=-1)
    metrics = {"policy_changes": jnp.sum(changed).astype(jnp.int32),
               "q_change": jnp.max(jnp.abs(q - state.q))}
    return State(q=q, policy=policy, key=key, step=state.step + 1), metrics


def solution(state: State, config, task):
    """(estimated values max_a q(s, a) [S], greedy policy [S, A])."""
    return jnp.max(state.q, axis=-1), state.policy


evaluate = common.evaluate_stored_policy
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
