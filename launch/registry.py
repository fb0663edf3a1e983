"""Algorithm registry: snake_case name -> module implementing the algorithm protocol.

Each module offers `default_config()`, `init(key, config, task)`, `update(state, config, task)`,
`evaluate(state, key, config, task)`, plus the constants `DEFAULT_ENV` (None: no env) and
`REQUIRES` (capabilities the env must have), and optionally `solution(state, config, task)`
-> (values [S], policy [S, A]) for tabular reports.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import envs

# Packages whose modules are algorithms (every module but the shared ones below), in the
# order the chapters come; a new file there is registered under its module name.
PACKAGES = ("algorithms.tabular", "algorithms.online", "algorithms.offline", "diffusion.models")
_SHARED = {"common", "losses"}
# The tabular chapters' order (Ch. 2-8), so `--help` reads like the book.
_ORDER = ["policy_evaluation", "value_iteration", "policy_iteration", "truncated_policy_iteration",
          "mc_basic", "mc_exploring_starts", "mc_epsilon_greedy", "robbins_monro",
          "sgd_mean_estimation", "td_zero", "sarsa", "expected_sarsa", "n_step_sarsa",
          "q_learning", "q_learning_off_policy", "td_linear",
          "dqn", "reinforce", "a2c", "ppo", "trpo", "ddpg", "td3", "sac",
          "bc", "td3_bc", "awac", "cql", "iql", "sac_n", "edac"]


def _discover() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        folder = os.path.join(_ROOT, *package.split("."))
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext == ".py" and not stem.startswith("_") and stem not in _SHARED:
                found[stem] = f"{package}.{stem}"
    rank = {n: i for i, n in enumerate(_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[1])))


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGORITHMS: dict[str, str] = _discover()

# What each REQUIRES capability means, and how to test an env for it.
def _action_space(env):
    try:
        return env.action_space(env.default_params)
    except Exception:  # noqa: BLE001 - an env without a usable action space lacks both
        return None


CAPABILITIES = {
    "tabular_model": (envs.has_tabular_model,
                      "an exact tabular model (env.tabular_mdp), as the grid worlds have"),
    "discrete_actions": (lambda env: type(_action_space(env)).__name__ == "Discrete",
                         "discrete actions"),
    "continuous_actions": (lambda env: type(_action_space(env)).__name__ == "Box",
                           "continuous (Box) actions"),
}
_EXAMPLES = {"tabular_model": "gridworld, gridworld-walls, gridworld-episodic",
             "discrete_actions": "CartPole-v1, Acrobot-v1, Breakout-MinAtar, gridworld",
             "continuous_actions": "Pendulum-v1, MountainCarContinuous-v0, Reacher-misc"}


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
            raise ValueError(
                f"algorithm {algo_name!r} needs {meaning}; environment {env_name!r} has none. "
                f"Environments that have it include: {_EXAMPLES[need]}")
