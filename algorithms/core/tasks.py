"""Tasks built from an environment name: `env_task(name, config, requires)`.

An RL algorithm trained on an environment declares `TASK_FLAG = "env"` and builds its task as

    def make_task(name, config):
        return tasks.env_task(name, config, REQUIRES)

`config.env` holds the environment's options (`envs.env_options(name)`, which `launch.run`
exposes as `--config.env.<option>`); `requires` names capabilities the algorithm needs, checked
here with an error that names environments that have them.

`make_env(name, **options)` is `envs.make` widened to gymnasium's MuJoCo envs: a name
"gymnasium:<id>" (e.g. "gymnasium:Hopper-v5", the optional mujoco extra) builds
`envs.gymnasium_env.GymnasiumEnv`, a gymnax-interface env simulated on the host.
"""
from __future__ import annotations

import math

import envs
from algorithms.core import spaces

# capability -> (test on (env, params), what it means, environments that have it)
CAPABILITIES = {
    "tabular_model": (lambda env, params: envs.has_tabular_model(env),
                      "an exact tabular model (env.tabular_mdp), as the grid worlds have",
                      "gridworld, gridworld-walls, gridworld-episodic, mdp:<file.npz>"),
    "discrete_actions": (spaces.is_discrete, "discrete actions",
                         "CartPole-v1, Acrobot-v1, Breakout-MinAtar, gridworld"),
    "continuous_actions": (lambda env, params: not spaces.is_discrete(env, params),
                           "continuous (Box) actions",
                           "Pendulum-v1, MountainCarContinuous-v0, Reacher-misc"),
}


def check_requirements(name: str, env, params, requires) -> None:
    """ValueError if environment `name` lacks a capability in `requires`."""
    for need in requires:
        if need not in CAPABILITIES:
            raise ValueError(f"unknown capability {need!r}; valid: {', '.join(CAPABILITIES)}")
        test, meaning, examples = CAPABILITIES[need]
        if not test(env, params):
            raise ValueError(f"this algorithm needs {meaning}; environment {name!r} has none. "
                             f"Environments that have it include: {examples}")


def check_env_options(name: str, options: dict) -> None:
    """ValueError naming an environment option whose value is impossible: every number must
    be finite, probabilities (`*_prob`) in [0, 1], `max_steps_in_episode` >= 1."""
    for key, value in options.items():
        allowed = None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            allowed = "a finite number"
        elif key.endswith("_prob") and not 0.0 <= value <= 1.0:
            allowed = "a probability in [0, 1]"
        elif key == "max_steps_in_episode" and value < 1:
            allowed = "an integer >= 1"
        if allowed:
            raise ValueError(f"config.env.{key}={value!r} is not allowed for {name!r}: it must "
                             f"be {allowed}")


def make_env(name: str, **options):
    """(env, params): `envs.make(name, **options)`, or for "gymnasium:<id>"
    `envs.gymnasium_env.make` (ImportError naming the extra when it is not installed)."""
    from envs import gymnasium_env

    if gymnasium_env.is_gymnasium_name(name):
        return gymnasium_env.make(name, **options)
    return envs.make(name, **options)


def env_options(name: str) -> dict:
    """The options `make_env` accepts for `name`, with their defaults."""
    from envs import gymnasium_env

    if gymnasium_env.is_gymnasium_name(name):
        return gymnasium_env.env_options(name)
    return envs.env_options(name)


def env_task(name: str, config, requires=()) -> envs.Task:
    """`envs.Task(env, params)` for environment `name` with the options in `config.env`."""
    options = dict(config.env) if "env" in config else {}
    check_env_options(name, options)
    env, params = make_env(name, **options)
    check_requirements(name, env, params, requires)
    return envs.Task(env, params)
