"""Q-learning, off-policy version (S. Zhao, Mathematical Foundations of RL, Ch. 7.4 "TD learning
of optimal action values: Q-learning", Algorithm 7.3).

    q_{t+1}(s_t, a_t) = q_t(s_t, a_t)
                        - alpha [ q_t(s_t, a_t) - (r_{t+1} + gamma max_a q_t(s_{t+1}, a)) ]

The data come from a fixed behaviour policy pi_b that never changes with q (default: uniform
random, as in the book's example of one long 1e5-step episode); the target policy is greedy in q.
Q-learning solves the Bellman optimality equation, so q -> q* as long as pi_b keeps visiting every
state-action pair; in a deterministic env (the default grid world, slip_prob = 0) the TD target is
noise-free given q, so even a constant alpha gives q -> q* exactly.

Behaviour policies (`config.behavior_policy`):
* "uniform": pi_b(a|s) = 1/|A|;
* "epsilon_optimal": epsilon-greedy (config.behavior_epsilon) w.r.t. q* -- a policy that explores
  less, to show how coverage slows learning.

Episode ends: the TD target uses the true next state (info['final_observation']); a terminated
step does not bootstrap, a truncated one (the continuing grid world's time limit) does.

One `update` = `config.num_steps` behaviour steps (generated first by a `lax.scan`) and
then the same number of sequential Q-learning updates over that batch; the env state persists
across updates, so successive batches are pieces of one long stream of experience.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common, sarsa
from algorithms.tabular.td_zero import check_choice, env_step, float_dtype

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task

BEHAVIOR_POLICIES = ("uniform", "epsilon_optimal")
CONFIG_RULES = {**common.RULES, "alpha": common.STEP_SIZE_RULES["alpha"],
                "behavior_policy": rules.one_of(*BEHAVIOR_POLICIES),
                "behavior_epsilon": rules.probability, "init_q": rules.finite()}


@struct.dataclass
class State:
    q: jax.Array  # q_t [S, A]
    behavior: jax.Array  # pi_b [S, A] (fixed)
    obs: jax.Array  # int32 current state of the behaviour stream
    env_state: Any
    key: jax.Array
    step: jax.Array  # int32 updates done


def default_config():
    config = common.tabular_config(num_updates=100, log_every=10)
    config.num_steps = 1000  # behaviour steps per update (100 x 1000 = the book's 1e5)
    config.alpha = 0.1  # constant step size (book: 0.1)
    config.behavior_policy = "uniform"  # "uniform" or "epsilon_optimal"
    config.behavior_epsilon = 0.5  # only for "epsilon_optimal"
    config.init_q = 0.0  # q_0(s, a)
    return config


def behavior_policy(config, task) -> jax.Array:
    check_choice("behavior_policy", config.behavior_policy, BEHAVIOR_POLICIES)
    mdp = common.model_of(task)
    if config.behavior_policy == "uniform":
        return common.uniform_policy(mdp.num_states, mdp.num_actions)
    q_star = common.q_from_v(mdp, common.optimal_values(mdp, config.gamma), config.gamma)
    return common.epsilon_greedy(q_star, config.behavior_epsilon)


def init(key, config, task) -> State:
    key, k_reset = jax.random.split(key)
    obs, env_state = task.env.reset(k_reset, task.params)
    q = jnp.full((task.env.num_states, task.env.num_actions), config.init_q, float_dtype())
    return State(q=q, behavior=behavior_policy(config, task), obs=jnp.asarray(obs, jnp.int32),
                 env_state=env_state, key=key, step=jnp.int32(0))


def q_learning_target(q, reward, s_next, terminated, gamma):
    """r + gamma max_a q(s', a), or r alone if the episode terminated."""
    return reward + gamma * jnp.where(terminated, 0.0, jnp.max(q[s_next]))


def update(state: State, config, task):
    key, k_steps = jax.random.split(state.key)

    def behave(carry, step_key):  # data: fixed behaviour policy, independent of q
        obs, env_state = carry
        k_act, k_env = step_key
        action = common.sample_actions(k_act, state.behavior[obs])
        next_obs, env_state, reward, s_next, terminated, _ = env_step(k_env, task, env_state,
                                                                      action)
        return (next_obs, env_state), (obs, action, reward, s_next, terminated)

    (obs, env_state), batch = jax.lax.scan(
        behave, (state.obs, state.env_state),
        jax.random.split(k_steps, (config.num_steps, 2)))

    def learn(q, tr):  # sequential updates over the batch (Alg. 7.3)
        s, a, r, s_next, terminated = tr
        target = q_learning_target(q, r, s_next, terminated, config.gamma)
        q, delta = sarsa.q_update(q, s, a, target, config.alpha)
        return q, jnp.abs(delta)

    q, abs_td = jax.lax.scan(learn, state.q, batch)
    metrics = {"td_error": jnp.mean(abs_td), "reward": jnp.mean(batch[2])}
    return state.replace(q=q, obs=obs, env_state=env_state, key=key,
                         step=state.step + 1), metrics


def evaluate(state: State, key, config, task):
    """Exact quality of the greedy target policy and max |q - q*|."""
    del key
    metrics = common.policy_metrics(common.model_of(task), common.greedy(state.q), config.gamma,
                                    common.occupiable_states(task))
    metrics["q_error"] = sarsa.q_error(state.q, config, task)
    return metrics


solution = common.greedy_solution  # (max_a q(s, a), greedy policy): estimates of v*, pi*
# Greedy in q; with a key, a draw from the fixed behaviour policy pi_b.
act = common.make_act(lambda state, config: state.q, lambda state, config: state.behavior)
artifacts = common.artifacts_from(solution, __name__)
