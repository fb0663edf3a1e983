r"""How closely `envs.mujoco_match` (gymnasium's locomotion envs on MJX, float32) follows
gymnasium's own Hopper-v5 / HalfCheetah-v5 / Walker2d-v5 (MuJoCo's C library, float64).

    python benchmarks/mjx_vs_gymnasium.py [--envs=hopper,walker2d] [--seeds=3] [--steps=1000]

Both start from the state of gymnasium's `reset(seed)` and take the same uniform random
actions, neither reset on termination (`envs.mujoco_match.compare_with_gymnasium`). Prints,
per env and step count t, the largest difference over the seeds after t steps: max |obs|,
|reward|, max |qpos| (x included), and the number of steps whose termination flags differ
over the first t steps. Needs the brax extra (mujoco-mjx, gymnasium).
"""
from __future__ import annotations

import argparse

import numpy as np

from envs.mujoco_match import SPECS, compare_with_gymnasium

CHECKPOINTS = (1, 10, 100, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default=",".join(SPECS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    print(f"{'env':<12} {'steps':>5} {'obs':>9} {'reward':>9} {'qpos':>9} "
          f"{'term. mismatches':>16}")
    for name in args.envs.split(","):
        runs = [compare_with_gymnasium(name, args.steps, seed) for seed in range(args.seeds)]
        for t in (c for c in CHECKPOINTS if c <= args.steps):
            worst = {k: max(float(r[k][t - 1]) for r in runs)
                     for k in ("obs_diff", "reward_diff", "qpos_diff")}
            mismatches = sum(int(np.sum(r["terminated_gym"][:t] != r["terminated_mjx"][:t]))
                             for r in runs)
            print(f"{name:<12} {t:>5} {worst['obs_diff']:9.1e} {worst['reward_diff']:9.1e} "
                  f"{worst['qpos_diff']:9.1e} {mismatches:>16d}", flush=True)


if __name__ == "__main__":
    main()
