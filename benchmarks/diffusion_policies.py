"""Diffusion policies for offline RL (Diffusion-QL, diffusion BC, IDQL): scores and throughput.

    python benchmarks/diffusion_policies.py scores                  # 5 algorithms, 3 seeds
    python benchmarks/diffusion_policies.py scores --dataset=pendulum-medium-expert-v0 --seeds=5
    python benchmarks/diffusion_policies.py throughput --quick      # updates/s, actions/s
    python benchmarks/diffusion_policies.py throughput --quick --seed_counts=1,4,16 --levels=5,20
    python benchmarks/diffusion_policies.py two_mode                # the two-mode bandit + PNG

`scores` trains BC, IQL, diffusion BC, Diffusion-QL and IDQL on one dataset with the same
settings (`launch.runner.train`, all seeds in one vmapped program, evaluation as in
`launch.run`): by default the README's CPU protocol, 5k gradient steps (5 updates of 1000),
64-64 networks (`hidden_sizes` and, where an algorithm has separate critics,
`critic_hidden_sizes`), batch 256, every other hyperparameter the algorithm's default. It prints
the final normalized score, mean [95% bootstrap CI] over seeds, and each run's wall time
(compile included). The same cell from the CLI:

    python -m launch.run --algo=diffusion_ql --dataset=pendulum-medium-v0 --num_seeds=3 \
        --config.hidden_sizes=64,64 --config.critic_hidden_sizes=64,64 \
        --config.num_updates=5 --config.eval_every=5

`throughput` times, on benchmarks/offline.py's synthetic D4RL-locomotion task (17-D
observations, 6-D actions) with each algorithm's default config (Diffusion-QL / diffusion BC
3 x 256 Mish networks, IDQL a 3 x 256 noise network and 2 x 256 critics, IQL 2 x 256):
gradient updates/s at 1 / 4 / 16 vmapped seeds (the runner's own chunk program, as
benchmarks/offline.py), the cost of N = 5 vs N = 20 diffusion steps per update, and actions/s
at evaluation: `act` on a batch of 50 observations (one evaluation step of 50 episodes) with
the default candidate count, per seed, vmapped over the seeds.

`two_mode` trains deterministic BC, Gaussian BC (IQL with beta = 0 and a constant actor rate:
its Gaussian likelihood unweighted), diffusion BC, Diffusion-QL and IDQL on the two-mode
bandit's data (`envs.two_mode_bandit`: behaviour actions at +0.8 (reward 1) and -0.8 (reward
0.5) with equal odds at every state), one seed each, and prints where each method's actions
fall (evaluation rule: `act` with a key; IDQL also with argmax selection) and its normalized
score; with --png it draws their histograms over the data's.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

# Run as `python benchmarks/diffusion_policies.py`, this file's folder comes first on sys.path,
# and benchmarks/diffusion.py would shadow the `diffusion` package: the repository root goes
# first and this folder last (its offline.py and online.py are still found there).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = ([os.path.dirname(_HERE)]
               + [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from envs import two_mode_bandit  # noqa: E402
from algorithms.core import scores as scores_lib  # noqa: E402
from launch import registry, report, runner  # noqa: E402
from offline import _best_of, _load, measure, synthetic_task  # noqa: E402

ALGOS = ("bc", "iql", "diffusion_bc", "diffusion_ql", "idql")
DIFFUSION = ("diffusion_bc", "diffusion_ql", "idql")


def cpu_config(algo, num_updates: int, width: int):
    """The algorithm's default config at the README's CPU budget."""
    config = algo.default_config()
    config.num_updates, config.eval_every = num_updates, num_updates
    config.hidden_sizes = (width, width)
    if "critic_hidden_sizes" in config:
        config.critic_hidden_sizes = (width, width)
    return config


def scores(args) -> None:
    print(f"# {args.dataset}: {args.seeds} seeds, {args.num_updates}k gradient steps, "
          f"{args.width}-{args.width} networks; final normalized score, mean [95% CI]; "
          f"{_load()}")
    print("| algorithm | normalized score | per seed | wall s |")
    print("|---|---|---|---|")
    for name in args.algos.split(","):
        algo = registry.get(name)
        config = cpu_config(algo, args.num_updates, args.width)
        task = algo.make_task(args.dataset, config)
        t0 = time.perf_counter()
        result = runner.train(algo, config, task, num_seeds=args.seeds, workdir=None,
                              progress=False, print_fn=lambda *_: None)
        wall = time.perf_counter() - t0
        values = np.asarray(result.final[algo.PRIMARY_METRIC], float)
        s = report.summarize(values)
        per_seed = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {s['mean']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}] | "
              f"{per_seed} | {wall:.0f} |", flush=True)


def actions_per_second(algo, config, task, seeds: int, batch: int = 50):
    """(compile s, actions/s over all seeds) of the jitted, seed-vmapped `act` with a key on
    `batch` observations per seed."""
    programs = runner.build_programs(algo, config, task, seeds)
    state = jax.block_until_ready(programs.init(runner.seed_keys(0, seeds)))
    obs = jnp.asarray(task.data["observations"][:batch])
    act = jax.jit(jax.vmap(lambda s, k: algo.act(s, obs, config, task, k)))
    keys = jax.random.split(jax.random.key(1), seeds)
    t0 = time.perf_counter()
    compiled = act.lower(state, keys).compile()
    compile_s = time.perf_counter() - t0
    wall, _ = _best_of(lambda: jax.block_until_ready(compiled(state, keys)))
    return compile_s, seeds * batch / wall


def throughput(args) -> None:
    seed_counts = [int(s) for s in (args.seed_counts or ("1,4" if args.quick else "1,4,16"))
                   .split(",")]
    level_counts = [int(n) for n in (args.levels or ("5" if args.quick else "5,20")).split(",")]
    base_steps = 40 if args.quick else 200
    dev = jax.devices()[0]
    print(f"# {platform.platform()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{jax.default_backend()} {dev.device_kind}; {_load()}")
    task = synthetic_task(size=100_000)
    print(f"{'algo':>13} {'N':>3} {'seeds':>5} {'steps':>5} {'compile s':>9} "
          f"{'upd/s/seed':>10} {'upd/s all':>9} {'cands':>5} {'act compile s':>13} "
          f"{'actions/s':>9}")
    for name in args.algos.split(","):
        algo = registry.get(name)
        levels = level_counts if name in DIFFUSION else (5,)
        for n in levels:
            for seeds in seed_counts:
                config = algo.default_config()
                if "num_diffusion_steps" in config:
                    config.num_diffusion_steps = n
                steps = max(10, base_steps // seeds)
                config.steps_per_update = steps
                try:
                    compile_s, wall, _, _ = measure(algo, config, task, seeds)
                    cands = config.get("num_candidates", 1)
                    act_c, act_rate = actions_per_second(algo, config, task, seeds)
                    shown_n = n if name in DIFFUSION else "-"
                    print(f"{name:>13} {shown_n:>3} {seeds:>5} {steps:>5} {compile_s:>9.1f} "
                          f"{steps / wall:>10.1f} {seeds * steps / wall:>9.1f} {cands:>5} "
                          f"{act_c:>13.1f} {act_rate:>9.0f}", flush=True)
                except Exception as e:  # one failed row must not end the table
                    print(f"{name:>13} {n:>3} {seeds:>5} ERROR {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100]}", flush=True)
    print(f"# {_load()}")


def two_mode_methods(steps: int, width: int):
    """(label, algorithm, config) per method of the two-mode picture."""
    methods = []
    for label, name, overrides in (
            ("BC (deterministic)", "bc", {}),
            ("Gaussian BC", "iql", {"beta": 0.0, "actor_schedule": "constant"}),
            ("diffusion BC", "diffusion_bc", {}),
            ("Diffusion-QL", "diffusion_ql", {}),
            ("IDQL (expectile weights)", "idql", {}),
            ("IDQL (argmax Q)", "idql", {"selection": "argmax"})):
        algo = registry.get(name)
        config = cpu_config(algo, 1, width)
        config.update({"steps_per_update": steps, "batch_size": 128, "lr": 1e-3,
                       "eval_episodes": 500, **overrides})
        methods.append((label, algo, config))
    return methods


def _train_one_seed(algo, config, task):
    """Seed 0 trained for config.steps_per_update gradient steps (one runner update)."""
    return jax.jit(lambda k: algo.update(algo.init(k, config, task), config, task)[0])(
        jax.random.key(0))


def two_mode(args) -> None:
    dataset = two_mode_bandit.behaviour_dataset(size=args.size, good_fraction=0.5)
    data_actions = dataset.arrays["actions"][:, 0]
    print(f"# two-mode bandit: {args.size} transitions, {args.steps} gradient steps, "
          f"{args.width}-{args.width} networks, batch 128, lr 1e-3, seed 0; {_load()}")
    print("| method | near +0.8 (reward 1) | near -0.8 (reward 0.5) | between | mean reward | "
          "normalized score |")
    print("|---|---|---|---|---|---|")
    fractions = two_mode_bandit.mode_fractions(data_actions)
    data_reward = float(dataset.arrays["rewards"].mean())
    data_score = scores_lib.normalized_score(data_reward, dataset.metadata["ref_min_score"],
                                             dataset.metadata["ref_max_score"])
    print(f"| data | {fractions[0]:.2f} | {fractions[1]:.2f} | {fractions[2]:.2f} | "
          f"{data_reward:.3f} | {float(data_score):.1f} |")
    panels, trained = [("data", data_actions)], {}
    for label, algo, config in two_mode_methods(args.steps, args.width):
        task = algo.make_task(dataset, config)
        if algo.__name__ not in trained:  # IDQL's rows differ only in how they act
            trained[algo.__name__] = _train_one_seed(algo, config, task)
        state = trained[algo.__name__]
        obs = jnp.asarray(np.random.default_rng(1).standard_normal((args.samples, 2)),
                          jnp.float32)
        actions = np.asarray(algo.act(state, obs, config, task, jax.random.key(1)))[:, 0]
        score = float(algo.evaluate(state, jax.random.key(2), config, task)["normalized_score"])
        rewards = np.asarray(two_mode_bandit.reward(actions[:, None],
                                                    two_mode_bandit.EnvParams()))
        good, bad, between = two_mode_bandit.mode_fractions(actions)
        print(f"| {label} | {good:.2f} | {bad:.2f} | {between:.2f} | {rewards.mean():.3f} | "
              f"{score:.1f} |", flush=True)
        panels.append((label, actions))
    if args.png:
        _plot_two_mode(panels, args.png)
        print(f"wrote {args.png}")


def _plot_two_mode(panels, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-1.0, 1.0, 401)
    r = np.asarray(two_mode_bandit.reward(grid[:, None], two_mode_bandit.EnvParams()))
    columns = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(2.8 * columns, 5.0), sharex=True, sharey=True)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        ax.axis("off")
    bins = np.linspace(-1.0, 1.0, 61)
    for ax, (label, actions) in zip(axes, panels):
        ax.hist(panels[0][1], bins=bins, density=True, color="0.85", label="data")
        if label != "data":
            ax.hist(actions, bins=bins, density=True, histtype="stepfilled", alpha=0.7,
                    color="tab:blue", label="policy")
        ax.plot(grid, 4.0 * r, color="tab:red", lw=1, label="4 r(a)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("action a")
        ax.set_ylim(0.0, 10.0)  # a deterministic policy's spike would flatten the others
    axes[0].legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scores", help="normalized scores of BC, IQL and the diffusion policies")
    p.add_argument("--dataset", default="pendulum-medium-v0")
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--num_updates", type=int, default=5, help="runner updates of 1000 steps")
    p.add_argument("--width", type=int, default=64, help="hidden layer width (two layers)")
    p = sub.add_parser("throughput", help="gradient updates/s and actions/s")
    p.add_argument("--algos", default="iql,diffusion_bc,diffusion_ql,idql")
    p.add_argument("--seed_counts", default=None, help="default 1,4,16 (--quick: 1,4)")
    p.add_argument("--quick", action="store_true", help="fewer steps, N = 5 only")
    p.add_argument("--levels", default=None, help="diffusion steps N to time (default 5,20; "
                   "--quick: 5)")
    p = sub.add_parser("two_mode", help="action samples on the two-mode bandit (and a PNG)")
    p.add_argument("--steps", type=int, default=4000, help="gradient steps per method")
    p.add_argument("--width", type=int, default=64, help="hidden layer width (two layers)")
    p.add_argument("--size", type=int, default=2048, help="transitions in the dataset")
    p.add_argument("--samples", type=int, default=2000, help="states to sample actions at")
    p.add_argument("--png", default=None, help="write the histograms here")
    args = parser.parse_args()
    unknown = sorted(set(getattr(args, "algos", "bc").split(",")) - set(registry.names()))
    if unknown:
        sys.exit(f"unknown algorithm(s) {unknown}")
    {"scores": scores, "throughput": throughput, "two_mode": two_mode}[args.command](args)


if __name__ == "__main__":
    main()
