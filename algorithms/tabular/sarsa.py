"""Sarsa (S. Zhao, Mathematical Foundations of RL, Ch. 7.2 "TD learning of action values:
Sarsa", Algorithm 7.1).

On-policy TD control with action values. The agent follows the epsilon-greedy policy pi_t of its
current estimate q_t; after each experience sample (s_t, a_t, r_{t+1}, s_{t+1}, a_{t+1}), with
a_{t+1} drawn from pi_t(.|s_{t+1}), only the visited pair moves:

    q_{t+1}(s_t, a_t) = q_t(s_t, a_t)
                        - alpha [ q_t(s_t, a_t) - (r_{t+1} + gamma q_t(s_{t+1}, a_{t+1})) ]

and the policy is improved right away: pi_{t+1}(.|s) is epsilon-greedy w.r.t. q_{t+1}(s, .)
(greedy action 1 - eps (|A|-1)/|A|, others eps/|A|). Sarsa solves the Bellman equation of the
current policy by stochastic approximation; with a decaying epsilon it reaches q* (the book
keeps epsilon fixed, e.g. 0.1, and gets the best epsilon-greedy policy).

This module also holds the online engine shared by expected Sarsa (a variant in Ch. 7.2) and
on-policy Q-learning (Ch. 7.4): they differ only in the TD target's value of the next state,

    sarsa:           q(s', a'),                a' ~ pi_t(.|s')
    expected_sarsa:  sum_a pi_t(a|s') q(s', a)
    q_learning:      max_a q(s', a).

Episode ends (gymnax auto-resets inside `step`): the TD target uses the true next state
s' = info['final_observation']; terminated -> the target is r alone; truncated (the grid world's
time limit; the task is continuing) -> bootstrap as usual, with a' drawn at s' for Sarsa.
The next step then continues from the reset state with a fresh action.

One `update` = `config.num_steps` online steps in a `lax.scan`; the env state, the current
state-action pair and the episode statistics persist in `State`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common
from algorithms.tabular.td_zero import check_choice, env_step, float_dtype

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task

TARGETS = ("sarsa", "expected_sarsa", "q_learning")
# Rules of `online_config` (shared by expected_sarsa, q_learning and n_step_sarsa).
CONFIG_RULES = {**common.RULES, "alpha": common.STEP_SIZE_RULES["alpha"],
                "epsilon": rules.probability, "init_q": rules.finite()}


@struct.dataclass
class State:
    q: jax.Array  # q_t [S, A]
    obs: jax.Array  # int32 s_t
    action: jax.Array  # int32 a_t, already drawn from pi_t(.|s_t)
    env_state: Any  # gymnax env state
    key: jax.Array
    step: jax.Array  # int32 updates done
    episode_return: jax.Array  # undiscounted return of the running episode so far
    episode_length: jax.Array  # int32 steps of the running episode so far
    last_return: jax.Array  # return of the last finished (terminated or truncated) episode
    last_length: jax.Array  # int32 its length


def online_config(num_updates=2000, num_steps=100):
    """Config fields of the online TD-control algorithms (the book's Sarsa example values)."""
    config = common.tabular_config(num_updates=num_updates, log_every=100)
    config.num_steps = num_steps  # env steps (= q updates) per `update`
    config.alpha = 0.1  # constant step size (book: 0.1)
    config.epsilon = 0.1  # exploration of the epsilon-greedy behaviour policy (book: 0.1)
    config.init_q = 0.0  # q_0(s, a) for all pairs
    return config


def default_config():
    return online_config()


# ---------------------------------------------------------------------- shared online engine
def behaviour(q_row, epsilon):
    """pi(.|s) epsilon-greedy in q(s, .) (Ch. 5, the policy every online method follows)."""
    return common.epsilon_greedy(q_row, epsilon)


def next_value(kind: str, q, s_next, a_boot, epsilon):
    """Value of the next state inside the TD target for the three one-step methods."""
    check_choice("TD target", kind, TARGETS)
    if kind == "sarsa":
        return q[s_next, a_boot]
    if kind == "expected_sarsa":
        return jnp.sum(behaviour(q[s_next], epsilon) * q[s_next])
    return jnp.max(q[s_next])


def q_update(q, s, a, target, alpha):
    """q(s, a) <- q(s, a) - alpha [q(s, a) - target]; returns (q, TD error q(s,a) - target)."""
    delta = q[s, a] - target
    return q.at[s, a].add(-alpha * delta), delta


def init_online(key, config, task):
    """Shared init pieces: (q, obs, action, env_state, key)."""
    key, k_reset, k_act = jax.random.split(key, 3)
    obs, env_state = task.env.reset(k_reset, task.params)
    obs = jnp.asarray(obs, jnp.int32)
    q = jnp.full((task.env.num_states, task.env.num_actions), config.init_q, float_dtype())
    action = common.sample_actions(k_act, behaviour(q[obs], config.epsilon))
    return q, obs, action, env_state, key


def interact(step_keys, q, obs, action, env_state, config, task):
    """Take a_t in s_t and draw the actions the epsilon-greedy pi_t picks next.

    step_keys: [2] keys (env step, action draws), pre-split outside the scan.

    Returns (next_obs, env_state, reward, s_next, terminated, done, a_next, a_boot): `next_obs`
    and `a_next` are where the agent continues (after a reset if `done`); `s_next` is the true
    next state and `a_boot` ~ pi_t(.|s_next) the action used to bootstrap (= a_next when not done).
    """
    k_env, k_act = step_keys
    next_obs, env_state, reward, s_next, terminated, done = env_step(k_env, task, env_state, action)
    # One draw for both rows: pi_t(.|next_obs) and pi_t(.|s_next) (they differ only after a reset).
    rows = behaviour(q[jnp.stack([next_obs, s_next])], config.epsilon)
    a_next, a_boot = common.sample_actions(k_act, rows)
    a_boot = jnp.where(done, a_boot, a_next)
    return next_obs, env_state, reward, s_next, terminated, done, a_next, a_boot


def episode_stats(ep_ret, ep_len, last_ret, last_len, reward, done):
    """Running (return, length) of the episode; copied to last_* when it ends."""
    ep_ret, ep_len = ep_ret + reward, ep_len + 1
    last_ret = jnp.where(done, ep_ret, last_ret)
    last_len = jnp.where(done, ep_len, last_len)
    return (jnp.where(done, 0.0, ep_ret).astype(ep_ret.dtype),
            jnp.where(done, 0, ep_len).astype(jnp.int32), last_ret, last_len)


def online_init(key, config, task) -> State:
    q, obs, action, env_state, key = init_online(key, config, task)
    zero = jnp.zeros((), float_dtype())
    return State(q=q, obs=obs, action=action, env_state=env_state, key=key, step=jnp.int32(0),
                 episode_return=zero, episode_length=jnp.int32(0), last_return=zero,
                 last_length=jnp.int32(0))


def online_update(kind: str, state: State, config, task):
    """`config.num_steps` online steps of Sarsa / expected Sarsa / Q-learning."""
    check_choice("TD target", kind, TARGETS)
    key, k_steps = jax.random.split(state.key)

    def one_step(carry, step_key):
        q, obs, action, env_state, stats = carry
        next_obs, env_state, reward, s_next, terminated, done, a_next, a_boot = interact(
            step_key, q, obs, action, env_state, config, task)
        target = reward + config.gamma * jnp.where(
            terminated, 0.0, next_value(kind, q, s_next, a_boot, config.epsilon))
        q, delta = q_update(q, obs, action, target, config.alpha)
        stats = episode_stats(*stats, reward, done)
        return (q, next_obs, a_next, env_state, stats), (jnp.abs(delta), reward, done)

    stats = (state.episode_return, state.episode_length, state.last_return, state.last_length)
    carry = (state.q, state.obs, state.action, state.env_state, stats)
    (q, obs, action, env_state, stats), (abs_td, rewards, dones) = jax.lax.scan(
        one_step, carry, jax.random.split(k_steps, (config.num_steps, 2)))
    ep_ret, ep_len, last_ret, last_len = stats
    metrics = {"td_error": jnp.mean(abs_td), "reward": jnp.mean(rewards),
               "episodes": jnp.sum(dones).astype(jnp.int32), "episode_return": last_ret,
               "episode_length": last_len}
    new_state = state.replace(q=q, obs=obs, action=action, env_state=env_state, key=key,
                              step=state.step + 1, episode_return=ep_ret,
                              episode_length=ep_len, last_return=last_ret, last_length=last_len)
    return new_state, metrics


def control_metrics(q, config, task):
    """Exact quality of the greedy policy of q and of the epsilon-greedy one being followed."""
    mdp = common.model_of(task)
    metrics = common.policy_metrics(mdp, common.greedy(q), config.gamma,
                                    common.occupiable_states(task))
    eps_policy = behaviour(q, config.epsilon)
    metrics["behaviour_value"] = jnp.mean(
        common.evaluate_policy_exact(mdp, eps_policy, config.gamma))
    return metrics


def q_error(q, config, task):
    """max |q - q*| over occupiable states (q* = r + gamma E[v*(s')])."""
    mdp = common.model_of(task)
    q_star = common.q_from_v(mdp, common.optimal_values(mdp, config.gamma), config.gamma)
    mask = common.occupiable_states(task)[:, None]
    return jnp.max(jnp.where(mask, jnp.abs(q - q_star), 0.0))


# ---------------------------------------------------------------------- protocol (Sarsa)
init = online_init


def update(state: State, config, task):
    return online_update("sarsa", state, config, task)


def evaluate(state: State, key, config, task):
    del key
    return control_metrics(state.q, config, task)


def solution(state: State, config, task):
    """(v of the followed policy as q estimates it: sum_a pi(a|s) q(s, a); that policy)."""
    policy = behaviour(state.q, config.epsilon)
    return jnp.sum(policy * state.q, axis=-1), policy


act = common.act_epsilon_greedy
artifacts = common.artifacts_from(solution, __name__)
