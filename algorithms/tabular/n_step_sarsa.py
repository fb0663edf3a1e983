"""n-step Sarsa (S. Zhao, Mathematical Foundations of RL, Ch. 7.3 "TD learning of action values:
n-step Sarsa").

Between Sarsa (n = 1) and Monte Carlo (n = inf): the target of q(s_t, a_t) is the n-step return

    G_t^(n) = r_{t+1} + gamma r_{t+2} + ... + gamma^{n-1} r_{t+n} + gamma^n q(s_{t+n}, a_{t+n}),
    q(s_t, a_t) <- q(s_t, a_t) - alpha [ q(s_t, a_t) - G_t^(n) ],

which can only be formed once r_{t+n}, s_{t+n}, a_{t+n} are known: at time t + n - 1 the pair
of n steps ago, (s_{t-n+1}, a_{t-n+1}), is updated. The behaviour is the epsilon-greedy policy of
the current q, as in Sarsa.

Implementation: a ring buffer of the last n state-action pairs in `State`, each slot holding the
pair, its partially accumulated discounted return sum_k gamma^k r and its age (rewards collected).
Every step adds the new pair, adds gamma^age r_{t+1} to every pending slot and then updates, oldest
first, the slots whose return is complete:

* age == n: bootstrap with gamma^n q(s_{t+1}, a_{t+1});
* the episode ended at s_{t+1} (all pending slots are flushed, shorter returns):
  terminated -> no bootstrap (G = sum of the remaining rewards);
  truncated (time limit of the continuing grid world) -> bootstrap gamma^age q(s', a') with s'
  the true next state (info['final_observation']) and a' ~ pi(.|s').

So every pair gets exactly one update with its own (possibly shortened) n-step return, and with
n = 1 this is step-for-step identical to `sarsa.py` (same random numbers).

One `update` = `config.num_steps` env steps.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common, sarsa
from algorithms.tabular.td_zero import float_dtype

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = {**sarsa.CONFIG_RULES, "n": rules.count}


@struct.dataclass
class State:
    q: jax.Array  # q_t [S, A]
    obs: jax.Array  # int32 s_t
    action: jax.Array  # int32 a_t, drawn from pi_t(.|s_t)
    env_state: Any
    key: jax.Array
    step: jax.Array  # int32 updates done
    buf_states: jax.Array  # [n] int32 pending s_k
    buf_actions: jax.Array  # [n] int32 pending a_k
    buf_returns: jax.Array  # [n] float sum_{j < age} gamma^j r_{k+1+j}
    buf_ages: jax.Array  # [n] int32 rewards collected for slot k
    buf_pending: jax.Array  # [n] bool slot holds a pair not yet updated
    slot: jax.Array  # int32 slot the next pair goes to (t mod n)
    episode_return: jax.Array
    episode_length: jax.Array  # int32
    last_return: jax.Array
    last_length: jax.Array  # int32


def default_config():
    config = sarsa.online_config()  # alpha 0.1, epsilon 0.1
    config.n = 3  # steps before bootstrapping (n = 1: Sarsa; large n: Monte Carlo like)
    return config


def init(key, config, task) -> State:
    if int(config.n) < 1:
        raise ValueError(f"n-step Sarsa needs config.n >= 1, got {config.n}")
    q, obs, action, env_state, key = sarsa.init_online(key, config, task)
    n = int(config.n)
    zero = jnp.zeros((), float_dtype())
    return State(q=q, obs=obs, action=action, env_state=env_state, key=key, step=jnp.int32(0),
                 buf_states=jnp.zeros(n, jnp.int32), buf_actions=jnp.zeros(n, jnp.int32),
                 buf_returns=jnp.zeros(n, float_dtype()), buf_ages=jnp.zeros(n, jnp.int32),
                 buf_pending=jnp.zeros(n, bool), slot=jnp.int32(0),
                 episode_return=zero, episode_length=jnp.int32(0), last_return=zero,
                 last_length=jnp.int32(0))


def process_step(q, buf, slot, s, a, reward, s_boot, a_boot, terminated, done, n, alpha, gamma):
    """Add (s, a) and reward r_{t+1} to the buffer, then apply the completed n-step updates.

    buf = (states, actions, returns, ages, pending). Returns (q, buf, sum |TD error|, #updates).
    """
    states, actions, returns, ages, pending = buf
    states, actions = states.at[slot].set(s), actions.at[slot].set(a)
    returns = returns.at[slot].set(0.0)
    ages = ages.at[slot].set(0)
    pending = pending.at[slot].set(True)
    discount = gamma ** ages.astype(returns.dtype)
    returns = jnp.where(pending, returns + discount * reward, returns)
    ages = jnp.where(pending, ages + 1, ages)
    ready = pending & ((ages >= n) | done)
    boot_gain = jnp.where(terminated, 0.0, gamma ** ages.astype(returns.dtype))

    def apply(carry, j):
        q, abs_td = carry
        k = (slot + 1 + j) % n  # oldest slot first; the newest (slot) comes last
        target = returns[k] + boot_gain[k] * q[s_boot, a_boot]
        delta = q[states[k], actions[k]] - target
        upd = ready[k]
        q = q.at[states[k], actions[k]].add(jnp.where(upd, -alpha * delta, 0.0))
        return (q, abs_td + jnp.where(upd, jnp.abs(delta), 0.0)), None

    (q, abs_td), _ = jax.lax.scan(apply, (q, jnp.zeros((), q.dtype)), jnp.arange(n))
    pending = pending & ~ready
    return q, (states, actions, returns, ages, pending), abs_td, jnp.sum(ready)


def update(state: State, config, task):
    n = int(config.n)
    key, k_steps = jax.random.split(state.key)

    def one_step(carry, step_key):
        q, obs, action, env_state, buf, slot, stats = carry
        next_obs, env_state, reward, s_next, terminated, done, a_next, a_boot = sarsa.interact(
            step_key, q, obs, action, env_state, config, task)
        q, buf, abs_td, n_upd = process_step(q, buf, slot, obs, action, reward, s_next, a_boot,
                                             terminated, done, n, config.alpha, config.gamma)
        stats = sarsa.episode_stats(*stats, reward, done)
        slot = ((slot + 1) % n).astype(jnp.int32)
        return (q, next_obs, a_next, env_state, buf, slot, stats), (abs_td, n_upd, reward, done)

    buf = (state.buf_states, state.buf_actions, state.buf_returns, state.buf_ages,
           state.buf_pending)
    stats = (state.episode_return, state.episode_length, state.last_return, state.last_length)
    carry = (state.q, state.obs, state.action, state.env_state, buf, state.slot, stats)
    (q, obs, action, env_state, buf, slot, stats), (abs_td, n_upd, rewards, dones) = \
        jax.lax.scan(one_step, carry, jax.random.split(k_steps, (config.num_steps, 2)))
    ep_ret, ep_len, last_ret, last_len = stats
    metrics = {"td_error": jnp.sum(abs_td) / jnp.maximum(jnp.sum(n_upd), 1),
               "reward": jnp.mean(rewards), "episodes": jnp.sum(dones).astype(jnp.int32),
               "episode_return": last_ret, "episode_length": last_len}
    states, actions, returns, ages, pending = buf
    new_state = state.replace(
        q=q, obs=obs, action=action, env_state=env_state, key=key, step=state.step + 1,
        buf_states=states, buf_actions=actions, buf_returns=returns, buf_ages=ages,
        buf_pending=pending, slot=slot, episode_return=ep_ret, episode_length=ep_len,
        last_return=last_ret, last_length=last_len)
    return new_state, metrics


evaluate = sarsa.evaluate  # exact quality of the greedy and the followed policy
solution = sarsa.solution  # (sum_a pi(a|s) q(s, a), the epsilon-greedy policy followed)
act = common.act_epsilon_greedy
artifacts = common.artifacts_from(solution, __name__)
