"""Sequence-model policy optimisation: GRPO update throughput, and the methods side by side.

    python benchmarks/sequence.py                       # tokens/s of a GRPO update, 1 and 8 seeds
    python benchmarks/sequence.py --seeds=1,8,64 --updates=20          # e.g. on a GPU
    python benchmarks/sequence.py --compare --num_seeds=5               # the README's comparison

Throughput: the runner's chunk program for `algorithms.sequence.grpo` on the addition task
(launch.runner.build_programs: jit(lax.scan(vmap(update), length=K)) over S seeds). One update
samples num_prompts x group_size responses of R tokens (a lax.scan of R decoder calls on the
P + R token buffer), scores them under the policy and pi_ref, and takes num_epochs x
num_minibatches Adam steps. "tokens/s" counts the response tokens sampled and trained on,
S x num_prompts x group_size x R per update, over the chunk's wall time (best of 3 calls, each
ended by block_until_ready; "CPU s" is the process CPU time of the fastest call, all threads);
compile is `lower().compile()` alone.

--compare trains every method of the family (grpo, rloo, ppo_seq, kimi_k15, reinforce_seq, and
with --all also dr_grpo and dapo) with its default config through `launch.runner.train` into
runs/sequence-<algo>/, then prints a markdown table of final greedy and sampled accuracy and KL
to pi_ref (mean [95% bootstrap CI] over seeds, final values), the warm start's accuracy as the
baseline, and draws the curves (mean over seeds) into --plot.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import os
import platform
import time

import jax
import numpy as np

from algorithms.sequence import grpo
from launch import report, runner

METHODS = ("grpo", "rloo", "ppo_seq", "kimi_k15", "reinforce_seq")
VARIANTS = ("dr_grpo", "dapo")


def _machine() -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    dev = jax.devices()[0]
    return (f"# {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
            f"{jax.device_count()} x {dev.device_kind}; load average {load}")


def throughput(seed_counts: list[int], updates: int) -> None:
    config = grpo.default_config()
    task = grpo.make_task(grpo.DEFAULT_TASK, config)
    tokens = config.num_prompts * config.group_size * task.response_len
    print(_machine())
    print(f"# grpo, {config.num_prompts} prompts x {config.group_size} responses x "
          f"{task.response_len} tokens per update, decoder d={config.model.d_model} "
          f"x {config.model.num_layers} layers, {config.num_epochs} x "
          f"{config.num_minibatches} Adam steps; K = {updates} updates per chunk")
    print(f"{'seeds':>6} {'compile s':>10} {'chunk s':>9} {'CPU s':>7} {'updates/s':>10} "
          f"{'tokens/s':>10} {'tokens/s per seed':>18}")
    for seeds in seed_counts:
        programs = runner.build_programs(grpo, config, task, seeds)
        state = jax.block_until_ready(programs.init(runner.seed_keys(0, seeds)))
        chunk = programs.chunk(updates).jitted
        start = time.perf_counter()
        compiled = chunk.lower(state, programs.task_arrays).compile()
        compile_s = time.perf_counter() - start
        walls, cpus = [], []
        for _ in range(3):
            start, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled(state, programs.task_arrays))
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
        wall = min(walls)
        rate = seeds * updates * tokens / wall
        print(f"{seeds:>6} {compile_s:>10.2f} {wall:>9.3f} {min(cpus):>7.3f} "
              f"{seeds * updates / wall:>10.1f} {rate:>10.4g} {rate / seeds:>18.4g}", flush=True)
    print(_machine())


def _read_csv(path: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps [T], metric -> [T, seeds]) of a run's metrics.csv / eval.csv."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    steps = sorted({int(r["step"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    names = [k for k in rows[0] if k not in ("step", "seed")]
    out = {n: np.full((len(steps), len(seeds)), np.nan) for n in names}
    for r in rows:
        for n in names:
            out[n][steps.index(int(r["step"])), int(r["seed"])] = float(r[n])
    return np.array(steps), out


def _cell(values) -> str:
    s = report.summarize(values)
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def compare(methods: tuple[str, ...], num_seeds: int, num_updates: int | None, plot: str,
            root: str) -> None:
    print(_machine())
    curves, rows = {}, []
    baseline = None
    for name in methods:
        algo = importlib.import_module(f"algorithms.sequence.{name}")
        config = algo.default_config()
        if num_updates:
            config.num_updates = num_updates
        task = algo.make_task(algo.DEFAULT_TASK, config)
        if baseline is None:  # pi_ref: every method starts from it
            state = algo.init(jax.random.key(0), config, task)
            baseline = jax.device_get(algo.evaluate(state, jax.random.key(1_000_003), config,
                                                    task))
        workdir = os.path.join(root, f"sequence-{name}")
        start, cpu = time.perf_counter(), time.process_time()
        result = runner.train(algo, config, task, num_seeds=num_seeds, workdir=workdir,
                              progress=False, run_info={"algo": name, "env": "addition"})
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        final = result.final
        rows.append(f"| {name} | {_cell(final['eval/accuracy_greedy'])} | "
                    f"{_cell(final['eval/accuracy_sampled'])} | {_cell(final['eval/kl_ref'])} "
                    f"| {wall:.0f} s wall, {cpu:.0f} s CPU |")
        curves[name] = (_read_csv(os.path.join(workdir, "metrics.csv")),
                        _read_csv(os.path.join(workdir, "eval.csv")))
        print(rows[-1], flush=True)
    print(f"\nwarm start (pi_ref): greedy {float(baseline['accuracy_greedy']):.3f}, "
          f"sampled {float(baseline['accuracy_sampled']):.3f}\n")
    print("| method | greedy accuracy | sampled accuracy | KL to pi_ref (nats / response) "
          "| time |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    _plot(curves, baseline, plot, num_seeds)
    print(_machine())


def _plot(curves, baseline, path: str, num_seeds: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("eval", "accuracy_greedy", "held-out accuracy, greedy"),
              ("eval", "accuracy_sampled", "held-out accuracy, one sample"),
              ("metrics", "reward", "training reward (one update's batch)"),
              ("eval", "kl_ref", "KL to pi_ref (nats / response)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    for ax, (kind, metric, title) in zip(axes, panels):
        for name, (train, evals) in curves.items():
            steps, values = train if kind == "metrics" else evals
            mean = np.nanmean(values[metric], axis=1)
            if kind == "metrics":  # a 3-point running mean of the noisy per-update reward
                mean = np.convolve(np.pad(mean, 1, mode="edge"), np.ones(3) / 3, "valid")
            steps, mean = (np.concatenate([[0], steps]), np.concatenate(
                [[float(baseline[metric])], mean])) if metric in baseline else (steps, mean)
            ax.plot(steps, mean, lw=1.5, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"two-digit addition, mean over {num_seeds} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,8", help="seed counts for the throughput table")
    parser.add_argument("--updates", type=int, default=10, help="updates per timed chunk")
    parser.add_argument("--compare", action="store_true", help="train and compare the methods")
    parser.add_argument("--all", action="store_true", help="--compare also dr_grpo and dapo")
    parser.add_argument("--num_seeds", type=int, default=5)
    parser.add_argument("--num_updates", type=int, default=0, help="0: the configs' own")
    parser.add_argument("--plot", default="docs/sequence_curves.png")
    parser.add_argument("--runs", default="runs")
    args = parser.parse_args()
    if args.compare:
        compare(METHODS + (VARIANTS if args.all else ()), args.num_seeds,
                args.num_updates or None, args.plot, args.runs)
    else:
        throughput([int(s) for s in args.seeds.split(",")], args.updates)


if __name__ == "__main__":
    main()
