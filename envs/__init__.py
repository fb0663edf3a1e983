"""Environment registry: `make(name, **options) -> (env, env_params)`.

Resolves the codebase's own environments (the book's grid worlds, and `mdp:<file.npz>`: a
finite MDP from arrays P[s, a, s'], R[s, a], see `envs.mdp`), every gymnax one and, with
the optional brax extra, brax locomotion (`brax-hopper`, `brax-halfcheetah`, `brax-walker2d`;
see `envs.brax_envs`).
Options are split in two: constructor options of our own environments (static: they fix
shapes, e.g. a grid layout) and fields of the env's `EnvParams` (traced: rewards, slip
probability, episode length). `env_options(name)` lists both with their defaults; this is
what `launch.run` exposes as `--config.env.<option>`.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple

import gymnax
import jax

from envs.brax_envs import BRAX_ENVS, BraxEnv
from envs import mdp
from envs.gridworld import GridWorld
from envs.tabular import TabularMDP
from envs.two_mode_bandit import TwoModeBandit

class Task(NamedTuple):
    """What an RL algorithm trains on: an environment and its params (closed over, shared)."""
    env: Any
    params: Any


# name -> (constructor, fixed constructor kwargs)
_OWN_ENVS: dict[str, tuple[type, dict[str, Any]]] = {
    "gridworld": (GridWorld, {}),
    "gridworld-walls": (GridWorld, {"walls": True}),
    "gridworld-episodic": (GridWorld, {"terminal_target": True}),
    "two-mode-bandit": (TwoModeBandit, {}),  # offline multimodal-policy test bed
    # optional extra: brax locomotion (brax is imported only when one is built)
    **{name: (BraxEnv, {"env_name": brax_name}) for name, brax_name in BRAX_ENVS.items()},
}


def list_envs() -> list[str]:
    """Every name `make` accepts (`mdp:<file.npz>` stands for any .npz path)."""
    return sorted(_OWN_ENVS) + [f"{mdp.PREFIX}<file.npz>"] + sorted(gymnax.registered_envs)


def _is_array_mdp(name: str) -> bool:
    return name.startswith(mdp.PREFIX)


def _check_name(name: str) -> None:
    if _is_array_mdp(name):
        return
    if name not in _OWN_ENVS and name not in gymnax.registered_envs:
        raise ValueError(f"unknown environment {name!r}; valid choices: {', '.join(list_envs())}")


def _scalar_fields(params) -> dict[str, Any]:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)
            if isinstance(getattr(params, f.name), (bool, int, float, str))}


def _gymnax_make(name: str):
    """gymnax.make(name), with a download that fails at construction (bsuite's MNIST bandit
    fetches MNIST into /tmp/mnist the first time it is built) reported in one line."""
    try:
        return gymnax.make(name)
    except OSError as err:  # urllib's URLError, a refused connection, a full disk
        raise ValueError(
            f"environment {name!r} downloads data when it is built, and that failed ({err}); "
            "build it once on a machine with network access (gymnax keeps the files under "
            "/tmp/mnist) or choose another environment") from None


def env_options(name: str) -> dict[str, Any]:
    """All options of environment `name` with their defaults (constructor + EnvParams)."""
    _check_name(name)
    if _is_array_mdp(name):
        return _scalar_fields(mdp.EnvParams())  # the file is read (and checked) by `make`
    if name in _OWN_ENVS:
        cls, fixed = _OWN_ENVS[name]
        # the fixed constructor kwargs define the registered name: they are not options
        ctor = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if k != "self" and k not in fixed and p.default is not inspect.Parameter.empty}
        return {**ctor, **_scalar_fields(cls(**fixed).default_params)}
    _, params = _gymnax_make(name)
    return _scalar_fields(params)


def make(name: str, **options):
    """(env, env_params) for `name` with `options` overriding its defaults.

    Raises ValueError for an unknown name or option, listing the valid ones.
    """
    valid = env_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for environment {name!r}; "
                         f"valid options: {', '.join(sorted(valid))}")
    if _is_array_mdp(name):
        env = mdp.load(mdp.path_of(name))
        params = env.default_params
    elif name in _OWN_ENVS:
        cls, fixed = _OWN_ENVS[name]
        ctor_names = set(inspect.signature(cls.__init__).parameters) - {"self"}
        ctor = {**fixed, **{k: v for k, v in options.items() if k in ctor_names}}
        env = cls(**ctor)
        params = env.default_params
    else:
        env, params = _gymnax_make(name)
    param_opts = {k: v for k, v in options.items() if k in _scalar_fields(params)}
    params = params.replace(**param_opts)
    _spaces_at_trace_time(env)
    return env, params


def _spaces_at_trace_time(env) -> None:
    """Makes env.action_space / observation_space evaluate their jnp code eagerly even inside
    jit: some gymnax envs (Swimmer-misc) build Box bounds with jnp.array, which under jit would
    be tracers, and the action-box helpers need concrete bounds (algorithms/core/spaces.py)."""
    for name in ("action_space", "observation_space"):
        method = getattr(env, name)
        if getattr(method, "at_trace_time", False):
            continue

        def eager(params=None, _method=method):
            with jax.ensure_compile_time_eval():
                return _method(params)

        eager.at_trace_time = True
        setattr(env, name, eager)


def has_tabular_model(env) -> bool:
    """Whether `env` exposes its exact model (needed by dynamic programming)."""
    return callable(getattr(env, "tabular_mdp", None))


__all__ = ["Task", "make", "list_envs", "env_options", "has_tabular_model", "GridWorld",
           "TabularMDP"]
