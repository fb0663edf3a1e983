"""Per-environment settings of the offline-dataset generator (`envs.generation`).

`GENERATION[prefix]` says how the behaviour policies of the datasets f"{prefix}-{kind}-v0"
(`envs.datasets.ENVS`) are trained by SAC and how much data each kind gets;
`generation_settings` merges overrides into it and checks them, `sac_config` turns the result
into the `algorithms.online.sac` config the generator runs.
"""
from __future__ import annotations

import copy
from typing import Any

from algorithms.online import sac

# Per dataset prefix (see envs.datasets.ENVS): how its behaviour policies are trained and how
# much data each kind gets. Overrides (`generate(..., overrides=...)`) merge into these.
#   env_options      envs.make options of the environment (recorded as metadata["env_options"])
#   sac              overrides of sac.default_config() (total_timesteps, num_steps, num_envs and
#                    buffer_size are set by the generator)
#   total_timesteps  SAC environment steps, warm-up included
#   snapshot_every   environment steps per jitted chunk = between snapshots
#   episodes         whole episodes of the random, medium and expert data
#   eval_episodes    episodes of each snapshot's deterministic evaluation (learning curve)
#   medium_score     target normalized score of the medium snapshot (D4RL: a third of expert)
#   medium_tolerance accepted distance to it (see `envs.generation.select_medium`)
GENERATION: dict[str, dict[str, Any]] = {
    # 200-step episodes, obs 3, act 1.
    "pendulum": {
        "env_options": {},
        "sac": {"hidden_sizes": (64, 64), "learning_starts": 2_000, "batch_size": 256},
        "total_timesteps": 20_000,
        "snapshot_every": 250,
        "episodes": {"random": 500, "medium": 500, "expert": 500},  # 100k transitions each
        "eval_episodes": 50,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    },
    # 500-step episodes, obs 16 (point swimmer, goal, 5 urchins), act 2.
    "swimmer": {
        "env_options": {},
        "sac": {"hidden_sizes": (64, 64), "learning_starts": 5_000, "batch_size": 256},
        "total_timesteps": 40_000,
        "snapshot_every": 500,
        "episodes": {"random": 200, "medium": 200, "expert": 200},  # 100k transitions each
        "eval_episodes": 50,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    },
    # 100-step episodes, obs 8, act 2 (two-link arm, goals partly out of reach).
    "reacher": {
        "env_options": {},
        "sac": {"hidden_sizes": (64, 64), "learning_starts": 5_000, "batch_size": 256},
        "total_timesteps": 60_000,
        "snapshot_every": 500,
        "episodes": {"random": 1000, "medium": 1000, "expert": 1000},  # 100k transitions each
        "eval_episodes": 50,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    },
    # Gymnasium's Hopper-v5 / HalfCheetah-v5 / Walker2d-v5 on MJX (optional extra,
    # `pip install -e '.[brax]'`; envs.brax_envs, envs.mujoco_match): gymnasium's XML models,
    # observations, rewards and health rules, so the data's states are the gymnasium envs'.
    # D4RL's Gym-MuJoCo scale, SAC 256-256 for 1M environment steps, 1000-step episodes; sized
    # for an accelerator (env_options {"backend": "generalized", "model": "brax"} gives brax's
    # own robots instead).
    **{name: {
        "env_options": {"backend": "mjx", "model": "gymnasium"},
        "sac": {"hidden_sizes": (256, 256), "learning_starts": 10_000, "batch_size": 256},
        "total_timesteps": 1_000_000,
        "snapshot_every": 10_000,
        "episodes": {"random": 2000, "medium": 1000, "expert": 1000},
        "eval_episodes": 10,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    } for name in ("hopper", "halfcheetah", "walker2d")},
}

_GENERATOR_SET = ("total_timesteps", "num_steps", "num_envs", "buffer_size")
ROLLOUT_KINDS = ("random", "medium", "expert")


def generation_settings(prefix: str, overrides: dict | None = None) -> dict[str, Any]:
    """GENERATION[prefix] with `overrides` merged in (nested dicts merge key by key).

    Raises ValueError naming an unknown prefix or setting and listing the valid ones.
    """
    if prefix not in GENERATION:
        raise ValueError(f"no generation settings for dataset prefix {prefix!r}; valid: "
                         f"{', '.join(sorted(GENERATION))}")
    out = copy.deepcopy(GENERATION[prefix])
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"unknown generation setting {key!r}; valid: {', '.join(out)}")
        if key == "sac":
            valid = set(sac.default_config().keys()) - set(_GENERATOR_SET)
            bad = sorted(set(value) - valid)
            if bad:
                raise ValueError(f"unknown or generator-set SAC setting(s) {bad}; valid: "
                                 f"{', '.join(sorted(valid))} ({', '.join(_GENERATOR_SET)} "
                                 "are set by the generator)")
            out["sac"].update(value)
        elif key == "episodes":
            bad = sorted(set(value) - set(ROLLOUT_KINDS))
            if bad:
                raise ValueError(f"unknown episodes kind(s) {bad}; valid: "
                                 f"{', '.join(ROLLOUT_KINDS)}")
            out["episodes"].update(value)
        elif key == "env_options":
            out["env_options"].update(value)
        else:
            out[key] = value
    if "hidden_sizes" in out["sac"]:
        out["sac"]["hidden_sizes"] = tuple(int(h) for h in out["sac"]["hidden_sizes"])
    ls = int(out["sac"].get("learning_starts", sac.default_config().learning_starts))
    if int(out["snapshot_every"]) <= 0 or int(out["total_timesteps"]) < ls + \
            int(out["snapshot_every"]):
        raise ValueError(f"total_timesteps ({out['total_timesteps']}) must cover learning_starts "
                         f"({ls}) plus at least one chunk of snapshot_every "
                         f"({out['snapshot_every']}) > 0 steps")
    if min(int(v) for v in out["episodes"].values()) < 1 or int(out["eval_episodes"]) < 1:
        raise ValueError(f"episodes {out['episodes']} and eval_episodes "
                         f"({out['eval_episodes']}) must be >= 1")
    return out


def sac_config(settings: dict[str, Any]):
    """sac.default_config() for the generator: one env, chunks of `snapshot_every` steps, a
    replay buffer holding the whole run (nothing is overwritten: medium-replay reads it)."""
    c = sac.default_config()
    for key, value in settings["sac"].items():
        c[key] = value
    c.total_timesteps = int(settings["total_timesteps"])
    c.num_envs = 1
    c.num_steps = int(settings["snapshot_every"])
    c.buffer_size = int(settings["total_timesteps"])
    return c
