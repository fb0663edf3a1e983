"""Algorithm registry: snake_case name -> module implementing the algorithm protocol.

Each module offers `default_config()`, `init(key, config, task)`, `update(state, config, task)`,
`evaluate(state, key, config, task)`, plus the constants `DEFAULT_ENV` (None: no env) and
`REQUIRES` (capabilities the env must have), and optionally `solution(state, config, task)`
-> (values [S], policy [S, A]) for tabular reports.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import envs

ALGORITHMS: dict[str, str] = {
    # Ch. 2-4: Bellman equation, dynamic programming
    "policy_evaluation": "algorithms.tabular.policy_evaluation",
    "value_iteration": "algorithms.tabular.value_iteration",
    "policy_iteration": "algorithms.tabular.policy_iteration",
    "truncated_policy_iteration": "algorithms.tabular.truncated_policy_iteration",
    # Ch. 5: Monte Carlo
    "mc_basic": "algorithms.tabular.mc_basic",
    "mc_exploring_starts": "algorithms.tabular.mc_exploring_starts",
    "mc_epsilon_greedy": "algorithms.tabular.mc_epsilon_greedy",
    # Ch. 6: stochastic approximation
    "robbins_monro": "algorithms.tabular.robbins_monro",
    "sgd_mean_estimation": "algorithms.tabular.sgd_mean_estimation",
    # Ch. 7: temporal difference
    "td_zero": "algorithms.tabular.td_zero",
    "sarsa": "algorithms.tabular.sarsa",
    "expected_sarsa": "algorithms.tabular.expected_sarsa",
    "n_step_sarsa": "algorithms.tabular.n_step_sarsa",
    "q_learning": "algorithms.tabular.q_learning",
    "q_learning_off_policy": "algorithms.tabular.q_learning_off_policy",
    # Ch. 8: value-function approximation
    "td_linear": "algorithms.tabular.td_linear",
}

# What each REQUIRES capability means, and how to test an env for it.
CAPABILITIES = {
    "tabular_model": (envs.has_tabular_model,
                      "an exact tabular model (env.tabular_mdp), as the grid worlds have"),
}


def names() -> list[str]:
    return list(ALGORITHMS)


def get(name: str) -> ModuleType:
    """The algorithm module `name`; ValueError listing the valid names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid choices: {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name])


def check_compatible(algo_name: str, algo: ModuleType, env_name: str | None, env) -> None:
    """Raise ValueError if `env` lacks what `algo` requires (e.g. DP on CartPole)."""
    for need in getattr(algo, "REQUIRES", ()):
        test, meaning = CAPABILITIES[need]
        if env is None or not test(env):
            with_it = [n for n in envs.list_envs() if n.startswith("gridworld")]
            raise ValueError(
                f"algorithm {algo_name!r} needs {meaning}; environment {env_name!r} has none. "
                f"Environments that have it: {', '.join(with_it)}")
