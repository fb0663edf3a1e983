"""Tabular throughput: value-iteration sweeps/s (JAX vs numpy) and Q-learning env steps/s vs seeds.

    python benchmarks/tabular.py            # full table
    python benchmarks/tabular.py --quick    # smaller sizes, for a smoke test

Value iteration: one sweep is q = r + gamma * E[v(S')] and v = max_a q over every state of an
open H x W grid world (the env's sparse exact model, 5 outcomes per (s, a)). JAX runs the sweeps
in one jitted `lax.fori_loop`; the reference is the same sweep written in vectorized numpy.
Q-learning: the runner's own chunk program (`launch.runner.build_programs`: jit of `lax.scan`
over `vmap(update)`), where one update is `num_steps` environment steps per seed; compile time
is reported separately.
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from algorithms.tabular import q_learning
from envs.gridworld import GridWorld, open_layout
from launch import runner


def _best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def value_iteration_row(n: int, gamma: float = 0.9):
    """(grid, states, JAX sweeps/s, numpy sweeps/s, speed-up, compile s) on an open n x n grid."""
    env = GridWorld(layout=open_layout(n, n))
    mdp = env.tabular_mdp(env.default_params)
    sweeps = max(20, min(2000, 2_000_000 // (n * n)))

    @jax.jit
    def jax_sweeps(v):
        def body(_, v):
            return jnp.max(mdp.rewards + gamma * mdp.expected_next(v), axis=-1)
        return jax.lax.fori_loop(0, sweeps, body, v)

    v0 = jnp.zeros(env.num_states)
    t0 = time.perf_counter()
    jax_sweeps(v0).block_until_ready()
    compile_s = time.perf_counter() - t0
    t_jax = _best_of(lambda: jax_sweeps(v0).block_until_ready())

    nxt, probs, rew = (np.asarray(mdp.next_states), np.asarray(mdp.probs),
                       np.asarray(mdp.rewards))

    def numpy_sweeps():
        v = np.zeros(env.num_states, np.float32)
        for _ in range(sweeps):
            v = (rew + gamma * (probs * v[nxt]).sum(-1)).max(-1)
        return v

    t_np = _best_of(numpy_sweeps)
    np.testing.assert_allclose(numpy_sweeps(), np.asarray(jax_sweeps(v0)), rtol=1e-4, atol=1e-4)
    return f"{n}x{n}", env.num_states, sweeps / t_jax, sweeps / t_np, t_np / t_jax, compile_s


def q_learning_row(seeds: int, updates: int = 20):
    """(seeds, env steps/s, chunk wall s, compile s) of the runner's own chunk program."""
    config = q_learning.default_config()
    task = q_learning.make_task("gridworld", config)
    programs = runner.build_programs(q_learning, config, task, seeds)
    state = programs.init(jax.device_put(runner.seed_keys(0, seeds), programs.sharding))
    chunk = programs.chunk(updates)
    t0 = time.perf_counter()
    jax.block_until_ready(chunk(state))
    compile_s = time.perf_counter() - t0
    wall = _best_of(lambda: jax.block_until_ready(chunk(state)))
    steps = seeds * updates * int(config.num_steps)
    return seeds, steps / wall, wall, compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()
    sizes = (5, 10, 25) if args.quick else (5, 10, 25, 50, 100)
    seed_counts = (1, 64) if args.quick else (1, 64, 1024)
    print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
    print("\nValue iteration (open grid, gamma 0.9, float32)")
    print(f"{'grid':>8} {'states':>7} {'JAX sweeps/s':>13} {'numpy sweeps/s':>15} "
          f"{'speed-up':>9} {'compile s':>10}")
    for grid, s, jx, npy, ratio, comp in map(value_iteration_row, sizes):
        print(f"{grid:>8} {s:>7} {jx:>13.1f} {npy:>15.1f} {ratio:>8.1f}x {comp:>10.2f}")
    print("\nQ-learning on the book grid (epsilon-greedy, vmapped seeds)")
    print(f"{'seeds':>6} {'env steps/s':>13} {'per seed':>10} {'chunk wall s':>13} "
          f"{'compile s':>10}")
    for seeds, sps, wall, comp in map(q_learning_row, seed_counts):
        print(f"{seeds:>6} {sps:>13.3g} {sps / seeds:>10.3g} {wall:>13.3f} {comp:>10.2f}")


if __name__ == "__main__":
    main()
