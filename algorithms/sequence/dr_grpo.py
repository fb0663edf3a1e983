r"""Dr. GRPO, "GRPO done right" (Liu et al. 2025, "Understanding R1-Zero-Like Training").

GRPO (`grpo.py`) without its two normalisations: the advantage is r_i - mean(r) (no division by
the group's std, which up-weights prompts whose rewards barely vary), and each response's token
losses are summed and divided by a constant, the response budget R, instead of by the
response's own length |o_i| (which favours long wrong answers and short right ones). No KL
term (kl_coef = 0). Everything else, clipping included, is GRPO's.

    python -m launch.run --algo=dr_grpo --num_seeds=5
"""
from __future__ import annotations

from algorithms.sequence import grpo
from algorithms.sequence.grpo import (  # noqa: F401
    CONFIG_CHECKS, CONFIG_RULES, DEFAULT_TASK, PRIMARY_METRIC, SWEEPABLE, TASK_FLAG, act,
    evaluate, init, make_task, update)


def default_config():
    c = grpo.default_config()
    c.advantage = "dr_grpo"
    c.aggregation = "seq_sum_norm"
    c.kl_coef = 0.0
    return c
