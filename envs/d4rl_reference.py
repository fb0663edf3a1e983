"""D4RL's published reference returns and evaluation environments, looked up by dataset name.

D4RL's HDF5 files carry neither the environment nor the reference returns of the normalized
score; the d4rl package keeps them in its own tables (`d4rl/infos.py`, REF_MIN_SCORE and
REF_MAX_SCORE: Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven Reinforcement Learning",
arXiv:2004.07219, Sec. 5 and its code at https://github.com/Farama-Foundation/D4RL). The
numbers below are those tables' entries: ref_min_score is the mean return of a uniformly random
policy, ref_max_score that of an expert (locomotion: SAC). Every version (v0, v1, v2) of a
locomotion task shares the v0 numbers, as infos.py assigns them.

    lookup("hopper-medium-v2")           # D4RLReference(name, -20.272305, 3234.3, env, 1000)
    lookup("/data/hopper_medium_replay-v2.hdf5")   # a file name works too
    dataset_name("walker_mixed.hdf5")    # "walker2d-medium-replay-v0" (the v0 download name)

`env` is the environment the task is evaluated in here: gymnasium's MuJoCo v5 envs for
hopper / halfcheetah / walker2d (same observation layout as the mujoco-py v2/v3 envs D4RL
recorded: 11 / 17 / 17 features, actions in [-1, 1]); None where no env of this codebase
reproduces D4RL's (ant: gymnasium's Ant-v5 has 105 observation features against D4RL's 111;
maze2d, adroit, antmaze, kitchen need d4rl's own envs), so such runs name one with
`--config.eval_env` or train without evaluation (`--config.eval_env=none`).
"""
from __future__ import annotations

import pathlib
import re
from typing import NamedTuple

# Locomotion (d4rl/infos.py: the "-random-v0" entries, copied to every kind and version).
_LOCOMOTION = {
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "hopper": (-20.272305, 3234.3),
    "ant": (-325.6, 3879.7),
}
_LOCOMOTION_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
_LOCOMOTION_KINDS_V1 = _LOCOMOTION_KINDS + ("full-replay",)
_EVAL_ENVS = {"hopper": "gymnasium:Hopper-v5", "halfcheetah": "gymnasium:HalfCheetah-v5",
              "walker2d": "gymnasium:Walker2d-v5"}

# Other D4RL families (d4rl/infos.py), keyed by dataset name.
_MAZE2D = {
    "maze2d-open-v0": (0.01, 20.66), "maze2d-umaze-v1": (23.85, 161.86),
    "maze2d-medium-v1": (13.13, 277.39), "maze2d-large-v1": (6.7, 273.99),
    "maze2d-open-dense-v0": (11.17817, 27.166538620695782),
    "maze2d-umaze-dense-v1": (68.537689, 193.66285642381482),
    "maze2d-medium-dense-v1": (44.264742, 297.4552547777125),
    "maze2d-large-dense-v1": (30.569041, 303.4857382709002),
}
_ADROIT = {"pen": (96.262799, 3076.8331017826877), "hammer": (-274.856578, 12794.134825156867),
           "relocate": (-6.425911, 4233.877797728884), "door": (-56.512833, 2880.5693087298737)}
_ANTMAZE = ("antmaze-umaze", "antmaze-umaze-diverse", "antmaze-medium-play",
            "antmaze-medium-diverse", "antmaze-large-play", "antmaze-large-diverse")
_KITCHEN = ("kitchen-complete-v0", "kitchen-partial-v0", "kitchen-mixed-v0")

# The v0 locomotion download names that differ from the dataset names (DATASET_URLS).
_V0_FILE_ALIASES = {"mixed": "medium-replay"}


class D4RLReference(NamedTuple):
    """A D4RL dataset's reference returns, the env it is evaluated in here (or None) and its
    episode length limit (locomotion: 1000, the max_episode_steps d4rl registers; None where
    the env decides)."""
    name: str
    ref_min_score: float
    ref_max_score: float
    env: str | None
    max_episode_steps: int | None


def _table() -> dict[str, tuple[float, float, str | None]]:
    table = {}
    for task, (lo, hi) in _LOCOMOTION.items():
        for version, kinds in (("v0", _LOCOMOTION_KINDS), ("v1", _LOCOMOTION_KINDS_V1),
                               ("v2", _LOCOMOTION_KINDS_V1)):
            for kind in kinds:
                table[f"{task}-{kind}-{version}"] = (lo, hi, _EVAL_ENVS.get(task))
    for name, (lo, hi) in _MAZE2D.items():
        table[name] = (lo, hi, None)
    for task, (lo, hi) in _ADROIT.items():
        for kind in ("human", "cloned", "expert"):
            for version in ("v0", "v1"):
                table[f"{task}-{kind}-{version}"] = (lo, hi, None)
    for base in _ANTMAZE:
        for version in ("v0", "v2"):
            table[f"{base}-{version}"] = (0.0, 1.0, None)
    for name in _KITCHEN:
        table[name] = (0.0, 4.0, None)
    return table


REFERENCE = _table()


def names() -> list[str]:
    """Every D4RL dataset name with built-in reference returns."""
    return sorted(REFERENCE)


def dataset_name(name_or_path) -> str | None:
    """The D4RL dataset name a file or name stands for, or None.

    Accepts the dataset names ("hopper-medium-replay-v2") and the download file names
    ("hopper_medium_replay-v2.hdf5"; v0: "hopper_mixed.hdf5", "walker_mixed.hdf5", no version
    suffix) in any directory, case-insensitively.
    """
    stem = pathlib.Path(str(name_or_path)).name.lower()
    stem = re.sub(r"\.(hdf5|h5)$", "", stem).replace("_", "-")
    if stem in REFERENCE:
        return stem
    match = re.fullmatch(r"(halfcheetah|hopper|walker2d|walker|ant)-([a-z-]+?)(-v\d)?", stem)
    if not match:
        return None
    task, kind, version = match.groups()
    task = "walker2d" if task == "walker" else task
    kind = _V0_FILE_ALIASES.get(kind, kind)
    candidate = f"{task}-{kind}{version or '-v0'}"
    return candidate if candidate in REFERENCE else None


def lookup(name_or_path) -> D4RLReference | None:
    """The reference returns and evaluation env of a D4RL dataset name or file, or None."""
    name = dataset_name(name_or_path)
    if name is None:
        return None
    lo, hi, env = REFERENCE[name]
    steps = 1000 if name.split("-")[0] in _LOCOMOTION else None
    return D4RLReference(name, lo, hi, env, steps)
