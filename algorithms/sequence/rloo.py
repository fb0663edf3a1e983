r"""REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics"; Kool et al. 2019).

k = G responses per prompt; response i's baseline is the mean reward of the other k - 1,

    grad J = 1/k sum_i [ R_i - 1/(k-1) sum_{j != i} R_j ] grad log pi_theta(o_i | q),

with the KL to the reference folded into the sequence reward, R_i = r_i - beta log[pi(o_i|q) /
pi_ref(o_i|q)]. REINFORCE at the level of whole responses: no per-token credit, ratio, clipping
or value model. `reinforce_seq` with baseline "leave_one_out" and beta = 0.04 (the same beta
as GRPO here).

    python -m launch.run --algo=rloo --num_seeds=5
"""
from __future__ import annotations

from algorithms.sequence import reinforce_seq
from algorithms.sequence.reinforce_seq import (  # noqa: F401
    CONFIG_CHECKS, CONFIG_RULES, DEFAULT_TASK, PRIMARY_METRIC, SWEEPABLE, TASK_FLAG, act,
    evaluate, init, make_task, update)


def default_config():
    c = reinforce_seq.default_config()
    c.baseline = "leave_one_out"
    c.kl_coef = 0.04
    return c
