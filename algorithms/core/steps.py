"""Step axes: environment and gradient steps one seed has taken after `updates` runner updates.

A runner `update` means different amounts of work per family (a PPO rollout of
num_envs * num_steps env steps, `steps_per_update` offline gradient steps, one diffusion Adam
step), so learning curves are also logged against the axes other codebases plot:

    env_steps   environment transitions of one seed, all its parallel envs together
                (CleanRL's / PureJaxRL's `global_step`), warm-up steps included
    grad_steps  gradient steps of one seed (the critic's, where actor updates are delayed)

Each family's algorithm modules bind one of these functions as their optional protocol member
`step_counts(config, updates) -> dict[str, int]` (launch/registry.py). Host-side Python on
config values; never traced.
"""
from __future__ import annotations


def on_policy(config, updates: int) -> dict[str, int]:
    """One update collects num_envs * num_steps transitions (then trains on them)."""
    return {"env_steps": int(updates) * int(config.num_envs) * int(config.num_steps)}


def off_policy(config, updates: int) -> dict[str, int]:
    """`learning_starts` uniform warm-up transitions in init, then per update num_envs *
    num_steps transitions and one gradient step per `train_frequency` of them (at least one;
    a config without train_frequency takes one per transition, UTD 1)."""
    per_update = int(config.num_envs) * int(config.num_steps)
    grad_per_update = max(1, per_update // int(config.get("train_frequency", 1)))
    return {"env_steps": int(config.get("learning_starts", 0)) + int(updates) * per_update,
            "grad_steps": int(updates) * grad_per_update}


def offline(config, updates: int) -> dict[str, int]:
    """One update is `steps_per_update` gradient steps on the dataset."""
    return {"grad_steps": int(updates) * int(config.steps_per_update)}


def one_gradient_step(config, updates: int) -> dict[str, int]:
    """One update is one gradient step (diffusion and flow models)."""
    return {"grad_steps": int(updates)}
