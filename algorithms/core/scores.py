"""Score normalisations used to report RL results."""
from __future__ import annotations


def normalized_score(returns, ref_min_score: float, ref_max_score: float):
    """D4RL's normalized score 100 (R - R_random) / (R_expert - R_random) (Fu et al. 2020, Sec. 5).

    0 is the random policy's return, 100 the expert's. Works elementwise on Python floats,
    numpy and jax arrays alike, so the same function serves dataset tables and jitted
    evaluation.
    """
    return 100.0 * (returns - ref_min_score) / (ref_max_score - ref_min_score)
