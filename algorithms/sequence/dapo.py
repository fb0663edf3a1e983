r"""DAPO's objective (Yu et al. 2025): GRPO with clip-higher and the token-level loss.

    1/sum_i |o_i| sum_i sum_t min(rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i)

with eps_low = 0.2, eps_high = 0.28 (Sec. 3.1: a higher upper clip leaves room for unlikely
tokens to grow and keeps entropy up), every token weighted equally (Sec. 3.3) and no KL term.
Dynamic sampling (Sec. 3.2: refilling the batch until no group has all-equal rewards) and
overlong reward shaping (Sec. 3.4) are not implemented: a fixed-shape batch keeps groups with
zero advantage (`uniform_groups` in the logs counts them).

    python -m launch.run --algo=dapo --num_seeds=5
"""
from __future__ import annotations

from algorithms.sequence import grpo
from algorithms.sequence.grpo import (  # noqa: F401
    CONFIG_CHECKS, CONFIG_RULES, DEFAULT_TASK, PRIMARY_METRIC, SWEEPABLE, TASK_FLAG, act,
    evaluate, init, make_task, update)


def default_config():
    c = grpo.default_config()
    c.clip_eps_high = 0.28
    c.aggregation = "token_mean"
    c.kl_coef = 0.0
    return c
