"""The environment-step budget of an online run, shared by every online algorithm.

A run is `total_timesteps` environment steps (all envs together): `learning_starts` uniform
random warm-up steps in `init` (off-policy agents only), then `num_updates` updates of
`num_envs * num_steps` steps each. `num_updates_ref` derives num_updates lazily, so it follows
overrides of the other fields; `enough_timesteps` is the config check that refuses a budget too
small for one update, naming total_timesteps (the field the user set) and the minimum.
"""
from __future__ import annotations

from algorithms.core import config_rules as rules

# num_updates is derived (`num_updates_ref`) and checked by `enough_timesteps`, which can say
# which field to change; the rule itself accepts any integer.
RULES = {"num_updates": rules.in_range(integer=True)}


def num_updates_ref(c, warmup: bool = False):
    """(total_timesteps [- learning_starts]) // (num_envs * num_steps) as a FieldReference of
    the ConfigDict `c`.

    The divisor is max(num_envs * num_steps, 1), written in FieldReference arithmetic
    (p + 1 // (|p| + 1) is p for p != 0 and 1 for p = 0), so a zero num_envs or num_steps
    reaches the config rules, which name it, instead of raising ZeroDivisionError wherever the
    config is first read.
    """
    per_update = c.get_ref("num_envs") * c.get_ref("num_steps")
    budget = c.get_ref("total_timesteps")
    if warmup:
        budget = budget - c.get_ref("learning_starts")
    return budget // (per_update + 1 // (abs(per_update) + 1))


def enough_timesteps(config) -> str | None:
    """Config check: at least one update fits in total_timesteps (after the warm-up)."""
    if config.num_updates >= 1:
        return None
    per_update = config.num_envs * config.num_steps
    warmup = int(config.get("learning_starts", 0))
    if config.num_updates != (config.total_timesteps - warmup) // per_update:
        return (f"config.num_updates={config.num_updates} is not allowed: it must be an "
                f"integer >= 1")
    after = f" after learning_starts={warmup} warm-up steps" if "learning_starts" in config else ""
    return (f"config.total_timesteps={config.total_timesteps} leaves no update{after}: one "
            f"update takes num_envs * num_steps = {config.num_envs} * {config.num_steps} = "
            f"{per_update} env steps, so total_timesteps must be at least {warmup + per_update}")


CHECKS = (enough_timesteps,)
