"""Allowed values of every config field, checked before anything is compiled or written.

A rule says what a field may hold and, when broken, yields one line naming the field, the
value and what is allowed. Rules come from two places:

- `VOCABULARY`: the codebase's shared field names (`gamma`, `lr`, `num_envs`, `hidden_sizes`,
  ...) and name patterns (`*_lr`, `num_*`, `*_coef`, ...), so most fields need nothing more;
- a module's own `CONFIG_RULES = {"field": rule, ...}` (overriding the vocabulary, e.g. DP's
  gamma < 1; nested fields by their dotted path, e.g. "sampler.name"), plus
  `CONFIG_CHECKS = (fn(config) -> message | None, ...)` for conditions that involve several
  fields (e.g. total_timesteps >= num_envs * num_steps).

    check(config, module)        # ValueError("config.gamma=1.5 is not allowed: ...")
    uncovered(config, module)    # fields no rule covers (a test keeps this empty)
"""
from __future__ import annotations

import fnmatch
import math
from typing import Any, Callable, Sequence

Rule = Callable[[Any], "str | None"]  # value -> None if allowed, else what is allowed


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def in_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, integer: bool = False) -> Rule:
    """A number in [low, high] (open ends where asked; None = unbounded), finite."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    kind = "an integer" if integer else "a number"
    text = f"{kind} in {lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"

    def rule(x):
        if not _is_number(x) or (integer and not float(x).is_integer()) or not math.isfinite(x):
            return text
        if low is not None and (x < low or (low_open and x == low)):
            return text
        if high is not None and (x > high or (high_open and x == high)):
            return text
        return None

    return rule


def one_of(*choices) -> Rule:
    def rule(x):
        return None if x in choices else "one of " + ", ".join(repr(c) for c in choices)
    return rule


def finite() -> Rule:
    return in_range()


def positive_int_tuple(allow_empty: bool = False) -> Rule:
    """A tuple of positive integers, e.g. hidden layer widths `256,256`."""
    def rule(x):
        ok = isinstance(x, (tuple, list)) and (allow_empty or len(x) > 0) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in x)
        return None if ok else "a comma-separated list of positive integers, e.g. 256,256"
    return rule


def boolean() -> Rule:
    return one_of(True, False)


def any_string() -> Rule:
    def rule(x):
        return None if isinstance(x, str) else "a string"
    return rule


probability = in_range(0.0, 1.0)
positive = in_range(0.0, low_open=True)
non_negative = in_range(0.0)
count = in_range(1, integer=True)
non_negative_count = in_range(0, integer=True)

# Shared names and patterns, tried in order (exact names first).
VOCABULARY: Sequence[tuple[str, Rule]] = (
    ("gamma", probability),
    ("tau", probability),
    ("lam", probability),
    ("gae_lambda", probability),
    ("epsilon", probability),
    ("hidden_sizes", positive_int_tuple()),
    ("activation", one_of("relu", "tanh", "gelu", "swish", "elu", "mish")),
    ("seed", non_negative_count),
    ("x64", boolean()),
    ("max_grad_norm", non_negative),
    ("lr", positive),
    ("*_lr", positive),
    ("batch_size", count),
    ("*_prob", probability),
    ("*_coef", non_negative),
    ("num_*", count),
    ("*_every", count),
    ("*_episodes", count),
    ("*_timesteps", count),
)


def rule_for(field: str, module=None, value=None) -> Rule | None:
    own = getattr(module, "CONFIG_RULES", {}) if module is not None else {}
    if field in own:
        return own[field]
    if isinstance(value, bool):
        return boolean()  # a flag is a flag whatever its name
    for pattern, rule in VOCABULARY:
        if fnmatch.fnmatchcase(field, pattern):
            return rule
    return None


def _leaves(config, prefix: str = ""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", key, value


def uncovered(config, module=None) -> list[str]:
    """Fields of `config` (outside `env`, whose options envs checks) that no rule covers."""
    return [path for path, key, value in _leaves(config) if not path.startswith("env.")
            and rule_for(path, module, value) is None and rule_for(key, module, value) is None]


def check(config, module=None) -> None:
    """ValueError naming the first field whose value is not allowed (see module docstring)."""
    try:
        leaves = list(_leaves(config))
    except (ArithmeticError, TypeError, ValueError) as e:  # a derived field cannot be computed
        raise ValueError(f"the config cannot be evaluated ({type(e).__name__}: {e}); check the "
                         "fields that derived values (num_updates, ...) come from") from None
    for path, key, value in leaves:
        if path.startswith("env."):
            continue
        rule = rule_for(path, module, value) or rule_for(key, module, value)
        message = rule(value) if rule is not None else None
        if message:
            raise ValueError(f"config.{path}={value!r} is not allowed: it must be {message}")
    for condition in getattr(module, "CONFIG_CHECKS", ()) if module is not None else ():
        message = condition(config)
        if message:
            raise ValueError(message)
