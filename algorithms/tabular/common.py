"""Pieces every tabular algorithm shares: Bellman operators, policies, exact evaluation,
episodes, and the protocol members they have in common (task, `act`, `artifacts`).

Notation of S. Zhao, "Mathematical Foundations of Reinforcement Learning" (2025):
q(s, a) = r(s, a) + gamma * sum_s' p(s'|s, a) v(s')                 (Ch. 2, action values)
v_pi = r_pi + gamma P_pi v_pi  =>  v_pi = (I - gamma P_pi)^-1 r_pi   (Ch. 2, matrix form)
v*   = max_pi (r_pi + gamma P_pi v*)                                 (Ch. 3, Bellman optimality)

Policies are arrays pi[s, a] of probabilities. All functions but `artifacts_from`'s hook and
the config rules are pure and jittable.

Float resolution. The exact references (v* by value iteration to a few ulps, v_pi by a linear
solve) carry rounding errors of order eps |v| / (1 - gamma) (eps: the dtype's machine epsilon;
(1 + gamma) / (1 - gamma) bounds the condition number of I - gamma P_pi, and value iteration's
stopping rule leaves up to 4 eps |v| gamma / (1 - gamma)). `float_resolution` is
8 eps max(1, |v|) / (1 - gamma), chosen to cover both (tests/test_dp.py checks it on the book's
grid and random MDPs): value differences below it (a negative `optimality_gap`, a zero
`bellman_residual`) are rounding; `--config.x64=true` makes it about 5e8 times smaller.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from algorithms.core import config_rules, tasks
from envs import Task
from envs.gridworld import ACTION_SYMBOLS, GridWorld, plot_values_and_policy
from envs.tabular import TabularMDP

# Every tabular algorithm trained on an env needs its exact model: dynamic programming for its
# updates, the sample-based methods for exact evaluation metrics (v_pi, v*, q*) and for the
# fixed reference policies ("optimal") some of them follow.
REQUIRES = ("tabular_model",)


def make_task(name: str, config) -> Task:
    """The protocol's task: environment `name` (with `config.env`'s options) and its params."""
    return tasks.env_task(name, config, REQUIRES)


def no_task(name, config) -> None:
    """The task of an algorithm without an environment (stochastic approximation): None."""
    del name, config
    return None


def tabular_config(num_updates: int, log_every: int, eval_every: int | None = None,
                   gamma: float = 0.9) -> ml_collections.ConfigDict:
    """The fields every tabular config has (the runner reads the first four)."""
    return ml_collections.ConfigDict(dict(
        num_updates=num_updates,  # total calls of `update`
        log_every=log_every,  # updates per jitted chunk; one log row per chunk
        eval_every=eval_every or log_every,  # updates between evaluations
        gamma=gamma,  # discount rate (the book's default 0.9)
        x64=False,  # run in float64 (set before anything is traced)
    ))


def model_of(task: Task) -> TabularMDP:
    """The exact model of a task's env (traced under jit, folded to constants)."""
    return task.env.tabular_mdp(task.params)


def q_from_v(mdp: TabularMDP, v: jax.Array, gamma) -> jax.Array:
    """Action values q[s, a] = r(s, a) + gamma * E[v(s') | s, a]."""
    return mdp.rewards + gamma * mdp.expected_next(v)


def greedy(q: jax.Array) -> jax.Array:
    """Deterministic greedy policy (ties to the lowest action index), one-hot [S, A]."""
    return jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=q.dtype)


def epsilon_greedy(q: jax.Array, epsilon) -> jax.Array:
    """pi(a|s) = 1 - eps (|A|-1)/|A| for the greedy action, eps/|A| for the others (Ch. 5)."""
    n = q.shape[-1]
    return (1.0 - epsilon) * greedy(q) + epsilon / n


def uniform_policy(num_states: int, num_actions: int) -> jax.Array:
    return jnp.full((num_states, num_actions), 1.0 / num_actions)


def soften(policy: jax.Array, epsilon: float) -> jax.Array:
    """The epsilon-greedy version of a policy: (1 - eps) pi + eps / |A| (Ch. 5.4).

    For a deterministic pi this is the book's epsilon-greedy policy (its action keeps
    1 - eps (|A| - 1) / |A|); epsilon = 0 returns pi itself.
    """
    if epsilon == 0:
        return policy
    return (1.0 - epsilon) * policy + epsilon / policy.shape[-1]


# ---------------------------------------------------------------------- policies given by the user
POLICY_NAMES = ("uniform", "optimal")
POLICY_HELP = ("uniform, optimal, a .npy file of pi[s, a] (or of one action index per "
               "state), action indices per state ('0,2,1'), or one symbol per grid cell with "
               "rows separated by '/' ('^' up, '>' right, 'v' down, '<' left, 'o' stay), e.g. "
               "'>>>>v/^^>>v/^<v>v/^>o<v/^>^<<'")
_POLICY_TEXT = set("/\n ") | {c for symbols in ACTION_SYMBOLS.values() for c in symbols}


def policy_spec_rule(spec) -> str | None:
    """Config rule of a `policy` field (see `given_policy`): None if `spec` can name a policy."""
    if not isinstance(spec, str) or not spec.strip():
        return POLICY_HELP
    if spec in POLICY_NAMES or _is_index_list(spec) or set(spec) <= _POLICY_TEXT:
        return None
    if spec.endswith(".npy"):
        return None if os.path.isfile(spec) else f"an existing file ({POLICY_HELP})"
    return POLICY_HELP


def _is_index_list(spec: str) -> bool:
    return all(part.strip().isdigit() for part in spec.split(","))


def given_policy(spec: str, task, dtype) -> jax.Array:
    """pi [S, A] (in `dtype`) of a policy written by the user: a .npy file, action indices or
    grid text (see `POLICY_HELP`); ValueError naming the problem. Python-level (trace time)."""
    env = task.env
    num_states, num_actions = env.num_states, env.num_actions
    where = f"config.policy={spec!r}"
    if spec.endswith(".npy"):
        if not os.path.isfile(spec):
            raise ValueError(f"{where}: no such file")
        arr = np.load(spec, allow_pickle=False)
        if arr.shape == (num_states,) and arr.dtype.kind in "iu":
            policy = _one_hot_actions(arr, num_actions, where)
        elif arr.shape == (num_states, num_actions) and arr.dtype.kind in "fiu":
            policy = arr.astype(np.float64)
            sums = policy.sum(axis=-1)
            if (not np.all(np.isfinite(policy)) or np.any(policy < 0)
                    or np.any(np.abs(sums - 1.0) > 1e-5)):
                raise ValueError(f"{where}: every row pi[s, :] must hold probabilities (finite, "
                                 ">= 0, summing to 1)")
        else:
            raise ValueError(f"{where}: expected probabilities of shape [S, A] = "
                             f"{(num_states, num_actions)} or integer actions of shape [S] = "
                             f"({num_states},); got {arr.dtype} {arr.shape}")
    elif _is_index_list(spec):
        actions = np.array([int(a) for a in spec.split(",")])
        if actions.shape != (num_states,):
            raise ValueError(f"{where}: {actions.size} action indices for {num_states} states")
        policy = _one_hot_actions(actions, num_actions, where)
    elif isinstance(env, GridWorld):
        policy = env.policy_from_text(spec)
    else:
        raise ValueError(f"{where} is not a policy for this environment: give "
                         f"{', '.join(POLICY_NAMES)}, a .npy file or action indices per state "
                         "(arrows per cell need a grid world)")
    return jnp.asarray(policy, dtype)


def _one_hot_actions(actions: np.ndarray, num_actions: int, where: str) -> np.ndarray:
    if np.any((actions < 0) | (actions >= num_actions)):
        raise ValueError(f"{where}: action indices must be in 0..{num_actions - 1}")
    return np.eye(num_actions)[actions]


# ---------------------------------------------------------------------- config rules
def _discount(gamma) -> str | None:
    allowed = config_rules.in_range(0.0, 1.0, high_open=True)(gamma)
    return allowed and (allowed + " (the values of a continuing task, sum_t gamma^t r_t, are "
                        "finite only for gamma < 1: I - gamma P_pi is singular at gamma = 1)")


def _step_size(alpha) -> str | None:
    allowed = config_rules.in_range(0.0, 1.0, low_open=True)(alpha)
    return allowed and allowed + " (a step size: 0 never learns, > 1 overshoots the target)"


def _decay_power(power) -> str | None:
    allowed = config_rules.in_range(0.5, 1.0, low_open=True)(power)
    return allowed and allowed + (" (alpha_t ~ t^-power meets the Robbins-Monro conditions, "
                                  "sum alpha = inf and sum alpha^2 < inf, only for power in "
                                  "(0.5, 1])")


# Rules every tabular algorithm on an environment shares (`CONFIG_RULES = {**common.RULES,
# ...}`); the other fields of `tabular_config` are covered by the shared vocabulary.
RULES = {"gamma": _discount}
STEP_SIZE_RULES = {"alpha": _step_size, "alpha_tau": config_rules.positive,
                   "alpha_power": _decay_power}


def iteration_metrics(q, old_values, old_policy, policy, new_values) -> dict[str, jax.Array]:
    """Metrics of one (policy improvement + evaluation) iteration:
    bellman_residual ||max_a q(v_k) - v_k||_inf, policy_changes (states whose greedy action
    changed), value_change ||v_{k+1} - v_k||_inf."""
    return {
        "bellman_residual": jnp.max(jnp.abs(jnp.max(q, axis=-1) - old_values)),
        "policy_changes": jnp.sum(jnp.argmax(policy, -1) != jnp.argmax(old_policy, -1)
                                  ).astype(jnp.int32),
        "value_change": jnp.max(jnp.abs(new_values - old_values)),
    }


def policy_matrices(mdp: TabularMDP, policy: jax.Array):
    """(r_pi[S], P_pi[S, S]) of a policy."""
    chex.assert_shape(policy, (mdp.num_states, mdp.num_actions))
    r_pi = jnp.sum(policy * mdp.rewards, axis=-1)
    weights = policy[..., None] * mdp.probs  # [S, A, K]
    rows = jnp.broadcast_to(jnp.arange(mdp.num_states)[:, None, None], weights.shape)
    p_pi = jnp.zeros((mdp.num_states, mdp.num_states), weights.dtype)
    p_pi = p_pi.at[rows, mdp.next_states].add(weights)
    return r_pi, p_pi


def evaluate_policy_exact(mdp: TabularMDP, policy: jax.Array, gamma) -> jax.Array:
    """Closed-form policy evaluation v_pi = (I - gamma P_pi)^-1 r_pi (book Ch. 2.7)."""
    r_pi, p_pi = policy_matrices(mdp, policy)
    eye = jnp.eye(mdp.num_states, dtype=p_pi.dtype)
    return jnp.linalg.solve(eye - gamma * p_pi, r_pi)


def bellman_expectation(mdp: TabularMDP, policy: jax.Array, v: jax.Array, gamma) -> jax.Array:
    """One iterative-evaluation sweep v <- r_pi + gamma P_pi v (book Ch. 2.7)."""
    return jnp.sum(policy * q_from_v(mdp, v, gamma), axis=-1)


def optimal_values(mdp: TabularMDP, gamma, tol: float | None = None,
                   max_iters: int = 100_000):
    """v* by value iteration until the sup-norm change is below `tol` (a reference).

    The default tolerance is a few ulps of the value scale in the model's dtype, so float32
    stops at float32 precision instead of running to `max_iters` chasing 1e-10.
    """
    dtype = mdp.rewards.dtype
    ulp = float(jnp.finfo(dtype).eps)

    def cond(carry):
        v, delta, i = carry
        limit = tol if tol is not None else 4 * ulp * jnp.maximum(1.0, jnp.max(jnp.abs(v)))
        return (delta > limit) & (i < max_iters)

    def body(carry):
        v, _, i = carry
        v_new = jnp.max(q_from_v(mdp, v, gamma), axis=-1)
        return v_new, jnp.max(jnp.abs(v_new - v)), i + 1

    v0 = jnp.zeros(mdp.num_states, dtype)
    v, _, _ = jax.lax.while_loop(cond, body, (v0, jnp.asarray(jnp.inf, dtype), 0))
    return v


def occupiable_states(task) -> jax.Array:
    """bool [S]: states the agent can be in (grid walls never are; other envs: all states).

    Sample-based methods never visit the others, so quality metrics are taken over these.
    """
    mask = getattr(task.env, "occupiable", None)
    if mask is None:
        return jnp.ones(model_of(task).num_states, bool)
    return jnp.asarray(mask)


def float_resolution(values: jax.Array, gamma) -> jax.Array:
    """8 eps max(1, |values|) / (1 - gamma): the rounding scale of exact values in the values'
    dtype (module docstring); differences below it are not resolved."""
    eps = float(jnp.finfo(values.dtype).eps)
    return 8 * eps * jnp.maximum(1.0, jnp.max(jnp.abs(values))) / (1.0 - gamma)


def policy_metrics(mdp: TabularMDP, policy: jax.Array, gamma,
                   mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Exact quality of a policy: mean v_pi over (occupiable) states, the worst gap to v*, and
    `gap_resolution` (`float_resolution` of v*): a gap within +-gap_resolution is zero up to
    rounding, i.e. the policy is optimal at the dtype's precision."""
    v_pi = evaluate_policy_exact(mdp, policy, gamma)
    v_star = optimal_values(mdp, gamma)
    if mask is None:
        mask = jnp.ones(mdp.num_states, bool)
    gap = jnp.where(mask, v_star - v_pi, -jnp.inf)
    return {"policy_value": jnp.sum(jnp.where(mask, v_pi, 0.0)) / jnp.sum(mask),
            "optimality_gap": jnp.max(gap),
            "gap_resolution": float_resolution(v_star, gamma)}


def evaluate_stored_policy(state, key, config, task) -> dict[str, jax.Array]:
    """The protocol's `evaluate` of an agent that stores its policy `state.policy` [S, A]:
    `policy_metrics` of that policy over the occupiable states (exact, so `key` is unused)."""
    del key
    return policy_metrics(model_of(task), state.policy, config.gamma, occupiable_states(task))


def initial_dp_estimates(mdp: TabularMDP) -> tuple[jax.Array, jax.Array]:
    """(v_0 = 0 [S], the uniform placeholder policy pi_0 [S, A]), in the model's dtype: where
    value iteration and (truncated) policy iteration start."""
    dtype = mdp.rewards.dtype
    return (jnp.zeros(mdp.num_states, dtype),
            uniform_policy(mdp.num_states, mdp.num_actions).astype(dtype))


def sample_actions(key: jax.Array, policy_rows: jax.Array) -> jax.Array:
    """One action per row of probabilities (int32)."""
    return jax.random.categorical(key, jnp.log(policy_rows), axis=-1).astype(jnp.int32)


class Transition(NamedTuple):
    state: jax.Array
    action: jax.Array
    reward: jax.Array
    next_state: jax.Array
    next_action: jax.Array  # a_{t+1} drawn from the same policy (Sarsa needs it)
    terminated: jax.Array
    truncated: jax.Array


def rollout(key: jax.Array, task: Task, policy: jax.Array, length: int,
            start_state=None, start_action=None) -> Transition:
    """A `length`-step trajectory of `policy` in the env ([length] leaves).

    Episodes that end (terminated or truncated) are reset by gymnax inside `step`; `next_state`
    is then the final state of the ended episode (info['final_observation']). With
    `start_state` / `start_action` the trajectory starts from that pair (exploring starts).
    """
    env, params = task.env, task.params
    k_reset, k_first, k_steps = jax.random.split(key, 3)
    if start_state is None:
        obs, env_state = env.reset(k_reset, params)
    else:
        obs, env_state = env.reset_to(start_state)
    action = (sample_actions(k_first, policy[obs]) if start_action is None
              else jnp.int32(start_action))

    def step(carry, step_key):
        obs, env_state, action = carry
        k_env, k_act = jax.random.split(step_key)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, action, params)
        final_obs = info["final_observation"]
        k_next, k_boot = jax.random.split(k_act)
        next_action = sample_actions(k_next, policy[next_obs])
        # The action the policy would take in the true next state (before any auto-reset).
        bootstrap_action = jnp.where(terminated | truncated,
                                     sample_actions(k_boot, policy[final_obs]), next_action)
        t = Transition(obs, action, reward, final_obs, bootstrap_action, terminated, truncated)
        return (next_obs, env_state, next_action), t

    _, traj = jax.lax.scan(step, (obs, env_state, action), jax.random.split(k_steps, length))
    return traj


# ---------------------------------------------------------------------- protocol: act, artifacts
def make_act(greedy_scores, behaviour_policy):
    """The protocol's `act(state, obs, config, task, key=None)` of a tabular agent.

    `greedy_scores(state, config)` -> [S, A]: without a key the action is its argmax in each
    observed state (ties to the lowest action index, as `greedy`). `behaviour_policy(state,
    config)` -> [S, A] probabilities: with a key one action per observed state is sampled from
    its row. `obs` holds state indices [B] (the grid worlds' observations); actions come back
    int32 [B].
    """
    def act(state, obs, config, task, key=None):
        del task
        obs = jnp.asarray(obs, jnp.int32)
        if key is None:
            return jnp.argmax(greedy_scores(state, config)[obs], axis=-1).astype(jnp.int32)
        return sample_actions(key, behaviour_policy(state, config)[obs])

    return act


# Agents that store their policy pi [S, A] (DP, MC with greedy policies, fixed-policy
# prediction): its most probable action, or a draw from it.
act_by_policy = make_act(lambda state, config: state.policy,
                         lambda state, config: state.policy)
# Agents that store q [S, A] and follow its epsilon-greedy policy (config.epsilon).
act_epsilon_greedy = make_act(lambda state, config: state.q,
                              lambda state, config: epsilon_greedy(state.q, config.epsilon))


def stored_solution(state, config, task):
    """(v [S], pi [S, A]) as the state stores them (`state.values`, `state.policy`)."""
    return state.values, state.policy


def greedy_solution(state, config, task):
    """(max_a q(s, a) [S], the greedy policy of q [S, A]): estimates of v* and pi*."""
    return jnp.max(state.q, axis=-1), greedy(state.q)


def artifacts_from(solution, algo_name: str):
    """The protocol's `artifacts(state, config, task, workdir)` hook of a tabular algorithm.

    `solution(state, config, task) -> (values [S], policy [S, A])` of one seed. The hook writes
    values.npy [seeds, S] and policy.npy [seeds, S, A] for every seed and, on a `GridWorld`,
    gridworld.png drawing seed 0's values and policy; it returns the file names written.
    `algo_name` (a module's `__name__`) titles the picture when the workdir has no
    config.json naming the run.
    """
    def artifacts(state, config, task, workdir) -> list[str]:
        values, policy = jax.device_get(
            jax.jit(jax.vmap(lambda s: solution(s, config, task)))(state))
        np.save(os.path.join(workdir, "values.npy"), np.asarray(values))
        np.save(os.path.join(workdir, "policy.npy"), np.asarray(policy))
        written = ["values.npy", "policy.npy"]
        if isinstance(task.env, GridWorld):
            plot_values_and_policy(task.env, values[0], policy[0],
                                   os.path.join(workdir, "gridworld.png"),
                                   f"{run_title(workdir, algo_name)}: state values and policy "
                                   "(seed 0)")
            written.append("gridworld.png")
        return written

    return artifacts


def run_title(workdir: str, algo_name: str) -> str:
    """'<algo> on <env>' from the run's config.json, else from the module name."""
    run = {}
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            run = json.load(f)
    return f"{run.get('algo', algo_name.rsplit('.', 1)[-1])} on {run.get('env', '-')}"
