"""Offline RL datasets in the D4RL layout: storage, loading, validation and normalization.

(Skeleton: the helper owning this file completes it; see /tmp/offline_contract.md.)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# The D4RL key names (Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven RL", arXiv:2004.07219).
KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")


class DatasetError(ValueError):
    """A dataset file or array set is malformed (missing key, wrong shape, non-finite values)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Flat arrays of transitions (leading axis N) plus metadata (env, policy, reference returns).

    observations [N, obs_dim] float32, actions [N, act_dim] float32 (environment units),
    rewards [N] float32, next_observations [N, obs_dim] float32, terminals [N] bool (true
    termination: no bootstrap), timeouts [N] bool (truncation: the episode ends but bootstraps).
    """
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.arrays["rewards"].shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.arrays["observations"].shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.arrays["actions"].shape[1])
