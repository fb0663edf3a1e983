"""Offline RL throughput: gradient updates/s of every offline algorithm vs vmapped seeds.

    python benchmarks/offline.py                    # all algorithms, 1, 4 and 16 seeds
    python benchmarks/offline.py --algos=iql,td3_bc --seeds=1,4
    python benchmarks/offline.py --quick            # 1 and 4 seeds, fewer steps (smoke test)

The task is synthetic and shaped like D4RL locomotion (Fu et al. 2020; hopper/walker2d/halfcheetah
sizes): 1M transitions, 17-dimensional observations, 6-dimensional actions, Gaussian random
values; every algorithm runs its default config (256x256 MLPs, batch 256) except that
`steps_per_update` is set so one call takes about a second. Only the update is timed, never
evaluation episodes (the task has no environment).

Each row times the runner's own programs (`launch.runner.build_programs`): the dataset is one
replicated argument, the chunk is `lax.scan` of `vmap(update)` over S seeds; one `update` is
`steps_per_update` gradient steps in a `lax.scan` (several updates per jitted call, no host
round trip between them). Compile time is `lower(...).compile()` alone; the wall time is the
best of n calls ended by `block_until_ready` (one call when the first exceeds 5 s).
updates/s per seed = steps / wall; aggregate = S x that.

Reference points on these 2-core machines: a single-file JAX IQL did 210-250 updates/s per
seed, a PyTorch one 100-120.

How close to the hardware each algorithm runs: the header measures this machine's float32
matmul rate on the shape that dominates these networks (a chain of [256, 256] x [256, 256]
products in a jitted scan, best of 10), and each row divides XLA's own FLOP count of one
gradient step (`compiled.cost_analysis()`, which counts a loop body once) by the step's wall
time: "GFLOP/s" and "% peak". "ceiling/s" = peak / FLOP per step, the aggregate updates/s
(compare with "upd/s all") this algorithm would reach if all its FLOPs ran at the matmul rate
(its elementwise work, the small first and last layers and the optimizers make the real figure
lower).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from algorithms.offline import common
from launch import registry, runner
from online import _best_of, _load  # benchmarks/online.py: same timing rule, same header

OFFLINE = ("bc", "td3_bc", "awac", "cql", "iql", "sac_n", "edac")
OBS_DIM, ACTION_DIM, SIZE = 17, 6, 1_000_000


def synthetic_task(size: int = SIZE, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM,
                   seed: int = 0) -> common.OfflineTask:
    """A D4RL-locomotion-shaped OfflineTask of random transitions (no environment)."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((size, obs_dim), dtype=np.float32)
    data = {"observations": obs,
            "actions": np.tanh(rng.standard_normal((size, action_dim), dtype=np.float32)),
            "rewards": rng.standard_normal(size, dtype=np.float32),
            "next_observations": obs + 0.1 * rng.standard_normal((size, obs_dim),
                                                                  dtype=np.float32),
            "terminals": (rng.random(size) < 0.001).astype(np.float32),
            "obs_mean": np.zeros(obs_dim, np.float32), "obs_std": np.ones(obs_dim, np.float32)}
    return common.OfflineTask(data=jax.tree.map(jnp.asarray, data), env=None, params=None,
                              name="synthetic-locomotion", ref_min_score=0.0, ref_max_score=1.0,
                              action_center=(0.0,) * action_dim, action_scale=(1.0,) * action_dim)


def matmul_peak(size: int = 256, chain: int = 1000) -> float:
    """GFLOP/s of `chain` dependent float32 [size, size] x [size, size] products in one jitted
    scan (best of 10): the rate the 256-256 layers of these networks can run at here. Chains of
    200 read 100-177 GFLOP/s on the idle 2-core CPU, chains of 1000 172-177: keep it long."""
    x = jax.random.normal(jax.random.key(0), (size, size))
    w = jax.random.normal(jax.random.key(1), (size, size)) / size
    product_chain = jax.jit(lambda x, w: jax.lax.scan(
        lambda h, _: (jnp.tanh(h @ w), None), x, None, length=chain)[0])
    jax.block_until_ready(product_chain(x, w))
    wall, _ = _best_of(lambda: jax.block_until_ready(product_chain(x, w)), repeats=10)
    return 2.0 * size ** 3 * chain / wall / 1e9


def step_flops(compiled, block: int = 1) -> float:
    """XLA's FLOP count of one gradient step of a compiled update program: the cost analysis
    counts a loop body once (the scan over steps does not multiply it), and a body that runs a
    `block` of steps (TD3+BC: policy_delay critic steps and one actor step) is divided by it;
    nan if the backend has no cost analysis."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan"))) / block
    except Exception:  # a backend without cost analysis just loses the column
        return float("nan")


def steps_per_block(config) -> int:
    """Gradient steps one scan iteration runs: TD3+BC runs whole blocks of policy_delay critic
    steps and one actor step, every other algorithm one step."""
    return int(config.get("policy_delay", 1))


def measure(algo, config, task, seeds: int):
    """(compile s, best wall s of one update call, calls timed, FLOP per gradient step for all
    seeds), timing `launch.runner.build_programs`' chunk of one update: the program a run
    executes."""
    programs = runner.build_programs(algo, config, task, seeds)
    state = jax.block_until_ready(programs.init(runner.seed_keys(0, seeds)))
    t0 = time.perf_counter()
    compiled = programs.lower_chunk(1, state).compile()
    compile_s = time.perf_counter() - t0
    wall, n = _best_of(lambda: jax.block_until_ready(compiled(state, programs.task_arrays)))
    return compile_s, wall, n, step_flops(compiled, steps_per_block(config))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default=",".join(OFFLINE), help="comma-separated subset")
    parser.add_argument("--seeds", default=None, help="seed counts (default 1,4,16; --quick 1,4)")
    parser.add_argument("--steps", type=int, default=None,
                        help="gradient steps per timed call at 1 seed (default 400, --quick 100); "
                             "divided by the seed count (at least 25) so calls stay short")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seed_counts = [int(s) for s in (args.seeds or ("1,4" if args.quick else "1,4,16")).split(",")]
    base_steps = args.steps or (100 if args.quick else 400)
    names = [n for n in args.algos.split(",") if n]
    unknown = sorted(set(names) - set(OFFLINE))
    if unknown:
        sys.exit(f"unknown offline algorithm(s) {unknown}; valid: {', '.join(OFFLINE)}")

    dev = jax.devices()[0]
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}")
    print(f"# jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} x "
          f"{dev.device_kind}; {_load()}")
    print(f"# synthetic D4RL-locomotion task: {SIZE} transitions, obs {OBS_DIM}, act "
          f"{ACTION_DIM}; default configs (256x256, batch 256); growth = wall(S)/wall(1) per step")
    peak = matmul_peak()
    print(f"# float32 256x256x256 matmul peak here: {peak:.0f} GFLOP/s; GFLOP/step = XLA cost "
          "analysis of one gradient step, all seeds")
    task = synthetic_task()
    print(f"{'algo':>7} {'seeds':>6} {'steps':>6} {'compile s':>10} {'wall s':>8} {'n':>2} "
          f"{'upd/s/seed':>11} {'upd/s all':>10} {'growth':>8} {'GFLOP/step':>10} "
          f"{'GFLOP/s':>8} {'% peak':>7} {'ceiling/s':>9}")
    sys.stdout.flush()
    for name in names:
        algo = registry.get(name)
        per_step_one = None
        for seeds in seed_counts:
            config = algo.default_config()
            steps = max(25, base_steps // seeds)
            block = steps_per_block(config)  # whole blocks only
            steps = -(-steps // block) * block
            config.steps_per_update = steps
            try:
                compile_s, wall, n, flops = measure(algo, config, task, seeds)
                per_step = wall / steps
                if seeds == 1:
                    per_step_one = per_step
                growth = f"{per_step / per_step_one:>7.2f}x" if per_step_one else f"{'-':>8}"
                rate = flops / per_step / 1e9
                print(f"{name:>7} {seeds:>6} {steps:>6} {compile_s:>10.2f} {wall:>8.3f} {n:>2} "
                      f"{steps / wall:>11.1f} {seeds * steps / wall:>10.1f} {growth} "
                      f"{flops / 1e9:>10.3f} {rate:>8.1f} {100 * rate / peak:>6.0f}% "
                      f"{peak * 1e9 / flops * seeds:>9.0f}")
            except Exception as e:  # one failed row must not end the table
                print(f"{name:>7} {seeds:>6} ERROR {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:120]}")
            sys.stdout.flush()
    print(f"# {_load()}")


if __name__ == "__main__":
    main()
