"""Online deep-RL throughput: env steps/s of PPO, DQN (CartPole-v1) and SAC (Pendulum-v1) vs seeds.

    python benchmarks/online.py                 # 1, 8 and 64 seeds (a few minutes on 2 CPU cores)
    python benchmarks/online.py --quick         # 1 and 8 seeds, shorter chunks (smoke test)
    python benchmarks/online.py --seeds=1,64,1024 --updates=8   # e.g. on a GPU

Every configuration is timed on the programs a run executes, `launch.runner.build_programs(algo,
config, task, S)`: the state is `programs.init(runner.seed_keys(0, S))`, a chunk is
`programs.chunk(K)(state)` (K updates of the S vmapped seeds in one jitted lax.scan). Compile
time is `programs.lower_chunk(K, state).compile()` alone (no execution); the chunk wall time is
the best of 3 calls of `programs.chunk(K)` on the same input state after one untimed call,
each ended by `block_until_ready` (only 1 timed call when the first takes over 5 s; the `n`
column says how many). Env steps per update come from the config, as each update's
docstring defines it: PPO num_envs x num_steps (one rollout), DQN num_envs x num_steps (then
their gradient steps), SAC num_envs x num_steps (each env step followed by num_envs gradient
steps). DQN's and SAC's `init` also take their `learning_starts` uniform-random warm-up steps;
they are not part of an update and not counted. SAC's update is `num_steps` env steps each
followed by a 256x256 gradient step, so the config's 250 would make one 64-seed chunk take
minutes on a CPU: the benchmark sets num_steps=25 (--sac_num_steps; 0 keeps the config's), which
changes only the length of the update's inner scan, not the cost per env step.

Cost growth is wall(S seeds) / wall(1 seed) for the same K updates: S means perfect
linear cost (no gain from vmapping), 1 means seeds are free.

Runner overhead (`--overhead=ALGOS`, default ppo; `--overhead=` skips it): a whole default run
(config.num_updates at the config's log_every / eval_every) end to end through
`launch.runner.train` into a fresh workdir (compiles of init, chunk and evaluate, the host round
trip after every chunk, the evaluations, orbax checkpoints, metric logs and reports; no progress
bar), against the bare training program: `init` then one `chunk(num_updates)` of the same
programs, first call, compile included. overhead = runner / bare - 1, in wall time and in
process CPU time (all threads: XLA's, orbax's background writes), which the other jobs on a
shared machine disturb less. The two alternate (`--overhead_rounds` pairs, fresh programs each
time) and the best of each is kept.

PPO is run in the PureJaxRL CartPole shape (4 envs x 128 steps, 4 epochs x 4 minibatches,
64-64 tanh MLPs); those fields are set explicitly below even though ppo.default_config has them.
Rows are printed as they finish.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import jax

from algorithms.online import dqn, ppo, sac
from launch import runner

# Chunk lengths K (updates per jitted chunk) chosen so a chunk takes ~0.1-5 s on 2 CPU cores
# across 1..64 seeds; --updates overrides all of them.
DEFAULT_UPDATES = {"ppo": 32, "dqn": 64, "sac": 1}
QUICK_UPDATES = {"ppo": 16, "dqn": 32, "sac": 1}
SAC_NUM_STEPS = 25


def ppo_config():
    c = ppo.default_config()
    # PureJaxRL reference shape (purejaxrl/ppo.py CartPole config).
    c.num_envs, c.num_steps = 4, 128
    c.update_epochs, c.num_minibatches = 4, 4
    c.hidden_sizes, c.activation = (64, 64), "tanh"
    return c


CASES = (  # (algo name, module, env, config factory)
    ("ppo", ppo, "CartPole-v1", ppo_config),
    ("dqn", dqn, "CartPole-v1", dqn.default_config),
    ("sac", sac, "Pendulum-v1", sac.default_config),
)


def env_steps_per_update(config) -> int:
    """PPO, DQN and SAC all take num_envs x num_steps env steps per seed in one `update`."""
    return int(config.num_envs) * int(config.num_steps)


def _best_of(fn, repeats=3, long_s=5.0):
    """(best wall s, calls timed): `repeats` calls, or just one when the first exceeds long_s."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if times[0] > long_s:
            break
    return min(times), len(times)


def measure(algo, config, task, seeds: int, updates: int):
    """(compile s, best chunk wall s, calls timed) of the runner's chunk program."""
    programs = runner.build_programs(algo, config, task, seeds)
    keys = jax.device_put(runner.seed_keys(0, seeds), programs.sharding)
    state = jax.block_until_ready(programs.init(keys))
    t0 = time.perf_counter()
    programs.lower_chunk(updates, state).compile()
    compile_s = time.perf_counter() - t0
    chunk = programs.chunk(updates)
    jax.block_until_ready(chunk(state))  # the call that compiles it for the runner's callable
    wall, n = _best_of(lambda: jax.block_until_ready(chunk(state)))
    return compile_s, wall, n


def bare_run_s(algo, config, task, seeds: int) -> tuple[float, float]:
    """(wall s, process CPU s) of the whole training as one program, first call:
    programs.init, then programs.chunk(num_updates), compile included."""
    t0, c0 = time.perf_counter(), time.process_time()
    programs = runner.build_programs(algo, config, task, seeds)
    keys = jax.device_put(runner.seed_keys(0, seeds), programs.sharding)
    jax.block_until_ready(programs.chunk(int(config.num_updates))(programs.init(keys)))
    return time.perf_counter() - t0, time.process_time() - c0


def runner_run_s(algo, config, task, seeds: int) -> tuple[float, float]:
    """(wall s, process CPU s) of `launch.runner.train` over the whole run into a fresh
    workdir."""
    with tempfile.TemporaryDirectory(prefix="bench_runner_") as workdir:
        t0, c0 = time.perf_counter(), time.process_time()
        result = runner.train(algo, config, task, num_seeds=seeds, workdir=workdir,
                              progress=False, print_fn=lambda *_: None)
        jax.block_until_ready(result.state)
        return time.perf_counter() - t0, time.process_time() - c0


def runner_overhead(algo, config, task, seeds: int, rounds: int):
    """((bare wall, bare CPU), (runner wall, runner CPU)), each the best of `rounds`
    alternating pairs (wall and CPU minimised separately)."""
    bare, full = [], []
    for _ in range(rounds):
        bare.append(bare_run_s(algo, config, task, seeds))
        full.append(runner_run_s(algo, config, task, seeds))
    return tuple(map(min, zip(*bare))), tuple(map(min, zip(*full)))


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 8 seeds, shorter chunks")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seed counts (default 1,8,64; --quick 1,8)")
    parser.add_argument("--updates", type=int, default=None,
                        help="updates per jitted chunk K for every algorithm (default per "
                             f"algorithm: {DEFAULT_UPDATES}, --quick {QUICK_UPDATES})")
    parser.add_argument("--sac_num_steps", type=int, default=SAC_NUM_STEPS,
                        help="SAC env steps per update (0: the config's own num_steps)")
    parser.add_argument("--algos", default="ppo,dqn,sac", help="comma-separated subset")
    parser.add_argument("--overhead", default="ppo",
                        help="algorithms whose runner overhead is measured over a whole default "
                             "run at 1 seed (comma-separated subset of ppo,dqn; empty: none)")
    parser.add_argument("--overhead_seeds", default="1,4",
                        help="seed counts for --overhead (4: launch.run's default)")
    parser.add_argument("--overhead_rounds", type=int, default=2)
    parser.add_argument("--xla_default_options", action="store_true",
                        help="compile with XLA's default options instead of "
                             "runner.compiler_options() (LLVM -O2 on CPU), to compare the two")
    args = parser.parse_args()
    if args.xla_default_options:
        runner.compiler_options = lambda: None
    seed_counts = [int(s) for s in (args.seeds or ("1,8" if args.quick else "1,8,64")).split(",")]
    wanted = set(args.algos.split(","))
    per_algo = QUICK_UPDATES if args.quick else DEFAULT_UPDATES

    dev = jax.devices()[0]
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}")
    print(f"# jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} x "
          f"{dev.device_kind}; {_load()}")
    print(f"# compiler options: {runner.compiler_options() or 'XLA defaults'}")
    print("# runner.build_programs: chunk(K) = jit(lax.scan(vmap(update), length=K)); compile = "
          "lower_chunk+compile; wall = best of n calls; growth = wall(S) / wall(1 seed)")
    pc = ppo_config()
    print(f"# ppo: {pc.num_envs} envs x {pc.num_steps} steps, {pc.update_epochs} epochs x "
          f"{pc.num_minibatches} minibatches, hidden {tuple(pc.hidden_sizes)} {pc.activation}; "
          f"sac: num_steps {args.sac_num_steps or sac.default_config().num_steps} "
          f"(config {sac.default_config().num_steps})")
    header = (f"{'algo':>5} {'env':>12} {'seeds':>6} {'K':>4} {'steps/upd':>9} "
              f"{'compile s':>10} {'chunk wall s':>13} {'n':>2} {'env steps/s':>12} "
              f"{'per seed':>10} {'growth':>8}")
    print(header)
    sys.stdout.flush()
    for name, algo, env_name, make_config in CASES:
        if name not in wanted:
            continue
        config = make_config()
        if name == "sac" and args.sac_num_steps:
            config.num_steps = args.sac_num_steps
        updates = args.updates or per_algo[name]
        per_update = env_steps_per_update(config)
        wall_one = None
        for seeds in seed_counts:
            prefix = f"{name:>5} {env_name:>12} {seeds:>6} {updates:>4} {per_update:>9}"
            try:
                task = algo.make_task(env_name, config)
                compile_s, wall, n = measure(algo, config, task, seeds, updates)
                if seeds == 1:
                    wall_one = wall
                sps = seeds * updates * per_update / wall
                growth = f"{wall / wall_one:>7.2f}x" if wall_one else f"{'-':>8}"
                print(f"{prefix} {compile_s:>10.2f} {wall:>13.3f} {n:>2} {sps:>12.4g} "
                      f"{sps / seeds:>10.4g} {growth}")
            except Exception as e:  # one failed configuration must not end the table
                print(f"{prefix} ERROR {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            sys.stdout.flush()
    overhead_algos = [a for a in args.overhead.split(",") if a]
    if overhead_algos:
        print("# runner overhead: whole default run, runner.train (workdir, evaluations, "
              "checkpoints) vs programs.init + chunk(num_updates); best of "
              f"{args.overhead_rounds} alternating pairs, compile included")
        print(f"{'algo':>5} {'seeds':>6} {'updates':>7} {'log_every':>9} {'eval_every':>10} "
              f"{'bare s':>8} {'runner s':>9} {'overhead':>9} {'bare cpu s':>10} "
              f"{'runner cpu s':>12} {'cpu overhead':>12}")
    for name, algo, env_name, make_config in CASES:
        if name not in overhead_algos:
            continue
        for seeds in [int(x) for x in args.overhead_seeds.split(",")]:
            config = make_config()
            task = algo.make_task(env_name, config)
            (bare, bare_cpu), (full, full_cpu) = runner_overhead(algo, config, task, seeds,
                                                                 args.overhead_rounds)
            print(f"{name:>5} {seeds:>6} {int(config.num_updates):>7} {config.log_every:>9} "
                  f"{config.eval_every:>10} {bare:>8.2f} {full:>9.2f} {full / bare - 1:>8.1%} "
                  f"{bare_cpu:>10.2f} {full_cpu:>12.2f} {full_cpu / bare_cpu - 1:>11.1%}")
            sys.stdout.flush()
    print(f"# {_load()}")


if __name__ == "__main__":
    main()
