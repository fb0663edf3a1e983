"""TD(0) learning of state values (S. Zhao, Mathematical Foundations of RL, Ch. 7.1, Eq. 7.1).

Policy evaluation from experience. A fixed policy pi generates s_0, r_1, s_1, r_2, ...; after
every transition (s_t, r_{t+1}, s_{t+1}) only the visited state moves towards its TD target:

    v_{t+1}(s_t) = v_t(s_t) - alpha_t(s_t) [ v_t(s_t) - (r_{t+1} + gamma v_t(s_{t+1})) ],
    v_{t+1}(s)   = v_t(s)  for s != s_t.

The bracket is the TD error; the update is a Robbins-Monro iteration for the Bellman equation
v_pi(s) = E[R + gamma v_pi(S') | s] (Ch. 6-7), so with step sizes that satisfy
sum_t alpha_t(s) = inf, sum_t alpha_t(s)^2 < inf, v_t -> v_pi for every visited state.

Episode ends. gymnax resets the env inside `step`; the transition's next state is then the true
next state (info['final_observation']), not the reset one:
* truncation (time limit of the continuing grid world) is not an end of the task: we still
  bootstrap with gamma v(s_{t+1});
* termination (e.g. `gridworld-episodic`'s absorbing target) means v(s_{t+1}) = 0: no bootstrap.

One `update` = `config.num_steps` env steps and as many TD updates, done sequentially in a
`lax.scan`. The env state persists across updates (one long stream of experience).

Step size (`config.step_size`):
* "constant": alpha_t = config.alpha (tracks v_pi up to noise of order alpha);
* "decaying": alpha_t(s) = config.alpha / (1 + n_t(s) / config.alpha_tau) ** config.alpha_power,
  n_t(s) = earlier visits of s; with 0.5 < power <= 1 this meets the Robbins-Monro conditions.

Policies (`config.policy`): "uniform" (pi(a|s) = 1/|A|, the book's running example),
"optimal" (the greedy policy of q*, ties to the lowest action index), or a policy written out
(arrows per grid cell, action indices, a .npy of probabilities: `common.given_policy`); with
`config.epsilon` > 0 its epsilon-greedy version (1 - eps) pi + eps / |A| is followed and
evaluated.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/rmse"
make_task = common.make_task

STEP_SIZES = ("constant", "decaying")
CONFIG_RULES = {**common.RULES, **common.STEP_SIZE_RULES, "policy": common.policy_spec_rule,
                "epsilon": rules.probability, "step_size": rules.one_of(*STEP_SIZES),
                "init_value": rules.finite()}


@struct.dataclass
class State:
    values: jax.Array  # v_t [S]
    visits: jax.Array  # n_t(s) [S] int32, TD updates applied to each state so far
    policy: jax.Array  # the evaluated policy pi [S, A] (fixed)
    obs: jax.Array  # int32 current state s_t of the env
    env_state: Any  # gymnax env state
    key: jax.Array
    step: jax.Array  # int32 updates done


def default_config():
    config = common.tabular_config(num_updates=1000, log_every=100)
    config.policy = "uniform"  # "uniform", "optimal", arrows per cell, or a .npy (module doc)
    config.epsilon = 0.0  # follow the epsilon-greedy version of that policy (0: the policy)
    config.num_steps = 100  # env steps (= TD updates) per `update`
    config.step_size = "decaying"  # "constant" or "decaying" (see module docstring)
    config.alpha = 0.1  # alpha (constant) or alpha_0 (decaying)
    config.alpha_tau = 500.0  # decaying: visit-count scale of the decay (alpha_0 until ~tau visits)
    config.alpha_power = 0.75  # decaying: exponent, in (0.5, 1] for Robbins-Monro
    config.init_value = 0.0  # v_0(s) for all s
    return config


# ---------------------------------------------------------------------- helpers shared by Ch. 7-8
def check_choice(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(valid)}")


def float_dtype():
    return jnp.result_type(float)


def env_step(key, task, env_state, action):
    """One gymnax step with auto-reset.

    Returns (next_obs, env_state, reward, true_next_obs, terminated, done): `next_obs` is where
    the agent continues (the reset state after an episode end), `true_next_obs` the state the
    action led to (the bootstrap state), `done` = terminated | truncated.
    """
    obs, env_state, reward, terminated, truncated, info = task.env.step(
        key, env_state, action, task.params)
    return (obs.astype(jnp.int32), env_state, reward.astype(float_dtype()),
            info["final_observation"].astype(jnp.int32), terminated, terminated | truncated)


def step_size(config, count):
    """alpha for the `count`-th update (count: visits of the state, or global steps)."""
    check_choice("step_size", config.step_size, STEP_SIZES)
    if config.step_size == "constant":
        return jnp.asarray(config.alpha, float_dtype())
    decay = 1.0 + count.astype(float_dtype()) / config.alpha_tau
    return config.alpha / decay ** config.alpha_power


def td_target(reward, next_value, terminated, gamma):
    """r + gamma v(s') unless the episode terminated in s' (then just r)."""
    return reward + gamma * jnp.where(terminated, 0.0, next_value)


def fixed_policy(config, task) -> jax.Array:
    """The evaluated policy pi [S, A]: `config.policy`, softened by `config.epsilon` if the
    config has one."""
    message = common.policy_spec_rule(config.policy)
    if message:
        raise ValueError(f"unknown policy {config.policy!r}; valid choices: {message}")
    mdp = common.model_of(task)
    if config.policy == "uniform":
        policy = common.uniform_policy(mdp.num_states, mdp.num_actions)
    elif config.policy == "optimal":
        v_star = common.optimal_values(mdp, config.gamma)
        policy = common.greedy(common.q_from_v(mdp, v_star, config.gamma))
    else:
        policy = common.given_policy(config.policy, task, float_dtype())
    return common.soften(policy, config.get("epsilon", 0.0))


# ---------------------------------------------------------------------- protocol
def td_update(values, s, r, s_next, terminated, alpha, gamma):
    """The TD(0) update of one transition (Eq. 7.1): returns (new values, TD error)."""
    delta = values[s] - td_target(r, values[s_next], terminated, gamma)
    return values.at[s].add(-alpha * delta), delta


def init(key, config, task) -> State:
    check_choice("step_size", config.step_size, STEP_SIZES)
    key, k_reset = jax.random.split(key)
    obs, env_state = task.env.reset(k_reset, task.params)
    n = task.env.num_states
    return State(values=jnp.full(n, config.init_value, float_dtype()),
                 visits=jnp.zeros(n, jnp.int32), policy=fixed_policy(config, task),
                 obs=jnp.asarray(obs, jnp.int32), env_state=env_state, key=key,
                 step=jnp.int32(0))


def update(state: State, config, task):
    key, k_steps = jax.random.split(state.key)

    def one_step(carry, step_key):
        values, visits, obs, env_state = carry
        k_act, k_env = step_key
        action = common.sample_actions(k_act, state.policy[obs])
        next_obs, env_state, reward, true_next, terminated, _ = env_step(
            k_env, task, env_state, action)
        alpha = step_size(config, visits[obs])
        values, delta = td_update(values, obs, reward, true_next, terminated, alpha, config.gamma)
        visits = visits.at[obs].add(1)
        return (values, visits, next_obs, env_state), (jnp.abs(delta), reward, alpha)

    carry = (state.values, state.visits, state.obs, state.env_state)
    (values, visits, obs, env_state), (abs_td, rewards, alphas) = jax.lax.scan(
        one_step, carry, jax.random.split(k_steps, (config.num_steps, 2)))
    metrics = {"td_error": jnp.mean(abs_td), "reward": jnp.mean(rewards),
               "alpha": jnp.mean(alphas)}
    return State(values=values, visits=visits, policy=state.policy, obs=obs,
                 env_state=env_state, key=key, step=state.step + 1), metrics


def evaluate(state: State, key, config, task):
    """Errors of v_t against the exact v_pi = (I - gamma P_pi)^-1 r_pi (over occupiable states)."""
    del key
    v_pi = common.evaluate_policy_exact(common.model_of(task), state.policy, config.gamma)
    mask = common.occupiable_states(task)
    err = jnp.where(mask, state.values - v_pi, 0.0)
    return {"value_error": jnp.max(jnp.abs(err)),
            "rmse": jnp.sqrt(jnp.sum(err ** 2) / jnp.sum(mask)),
            "mean_abs_error": jnp.sum(jnp.abs(err)) / jnp.sum(mask)}


solution = common.stored_solution  # (estimated v_pi [S], the evaluated policy [S, A])
act = common.act_by_policy
artifacts = common.artifacts_from(solution, __name__)
