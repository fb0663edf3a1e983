"""Side by side against a JAX-CORL checkout: IQL gradient updates/s on D4RL-shaped data.

    pip install pydantic omegaconf        # what JAX-CORL's iql.py imports (not our dependencies)
    python benchmarks/compare_jaxcorl.py --jaxcorl=PATH [--seeds=1,4] [--rounds=2] [--steps=400]

PATH is the folder holding JAX-CORL's `iql.py` (the `algos/` folder of a nissymori/JAX-CORL
checkout; never copied into this project nor a dependency of it). It is imported unchanged, with
empty stand-in modules for `d4rl`, `gym` and `wandb` (it uses them only to load data, evaluate
and log) and an empty command line (it parses `sys.argv` with OmegaConf when imported).

Both sides train on the same synthetic D4RL-locomotion-shaped dataset (`benchmarks/offline.py`'s
`synthetic_task`: 1M transitions, obs 17, act 6) with their default IQL configs (256-256 nets,
batch 256). JAX-CORL's update runs as its `__main__` runs it: `update_n_times` jitted
(`n_jitted_updates` steps unrolled per call, 8), several calls per timing; seeds > 1 vmap it. Ours
is the runner's program (`launch.runner.build_programs`: one chunk of one update of `steps`
gradient steps in a `lax.scan`, the dataset one shared argument). Each (implementation, seeds)
runs in its own process, the two alternating (the order flips every round); each reports its
first call (trace + compile + run) and the best of 5 timed calls. The header prints this
machine's float32 matmul rate and the ceiling it puts on our IQL (`offline.py`'s columns).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_purejaxrl import machine_header, ratio_table, run_child  # noqa: E402


def jaxcorl_run(path: str, seeds: int, steps: int, data: dict):
    """(run() -> None doing `steps` updates of every seed, updates done per seed)."""
    import jax
    import jax.numpy as jnp
    for name in ("d4rl", "gym", "wandb"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["gym"].Env = object
    sys.argv = sys.argv[:1]
    sys.path.insert(0, path)
    import iql as jc
    ds = jc.Transition(observations=data["observations"], actions=data["actions"],
                       rewards=data["rewards"], next_observations=data["next_observations"],
                       dones=data["terminals"], dones_float=data["terminals"])
    config, algo = jc.config, jc.IQL()

    def make(key):
        return jc.create_iql_train_state(key, ds.observations[0], ds.actions[0], config)

    calls = max(steps // config.n_jitted_updates, 1)
    if seeds == 1:
        state = make(jax.random.PRNGKey(0))
        update = jax.jit(algo.update_n_times, static_argnums=(3,))

        def step(s, k):
            return update(s, ds, k, config)[0]
    else:
        state = jax.vmap(make)(jax.random.split(jax.random.PRNGKey(0), seeds))
        vupdate = jax.jit(jax.vmap(lambda s, k: algo.update_n_times(s, ds, k, config)[0]))

        def step(s, k):
            return vupdate(s, jax.random.split(k, seeds))

    def run():
        s, k = state, jax.random.PRNGKey(1)
        for _ in range(calls):
            k, sk = jax.random.split(k)
            s = step(s, sk)
        jax.block_until_ready(s)
    del jnp
    return run, calls * config.n_jitted_updates


def our_run(seeds: int, steps: int, task):
    import jax

    from algorithms.offline import iql
    from launch import runner
    config = iql.default_config()
    config.steps_per_update = steps
    programs = runner.build_programs(iql, config, task, seeds)
    state = jax.block_until_ready(programs.init(
        jax.device_put(runner.seed_keys(0, seeds), programs.sharding)))
    chunk = programs.chunk(1)
    return lambda: jax.block_until_ready(chunk(state)), steps


def child(impl: str, seeds: int, steps: int, path: str) -> dict:
    from offline import synthetic_task  # benchmarks/offline.py
    task = synthetic_task()
    if impl == "jaxcorl":
        run, done = jaxcorl_run(path, seeds, steps, task.data)
    else:
        run, done = our_run(seeds, steps, task)
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"impl": impl, "seeds": seeds, "first_s": round(first, 2),
            "updates_per_s_per_seed": round(done / min(times), 1),
            "load": round(os.getloadavg()[0], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jaxcorl", required=True, help="folder with JAX-CORL's iql.py")
    parser.add_argument("--seeds", default="1,4")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved pairs per row")
    parser.add_argument("--steps", type=int, default=400, help="gradient steps per timed call")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = os.path.abspath(args.jaxcorl)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.steps, path)), flush=True)
        return
    if not os.path.isfile(os.path.join(path, "iql.py")):
        sys.exit(f"--jaxcorl={args.jaxcorl}: no iql.py there; pass the algos/ folder of a "
                 "nissymori/JAX-CORL checkout")
    print(machine_header())
    from offline import matmul_peak
    from offline import measure as offline_measure
    from offline import synthetic_task

    from algorithms.offline import iql
    peak = matmul_peak()
    config = iql.default_config()
    config.steps_per_update = 100
    _, _, _, flops = offline_measure(iql, config, synthetic_task(), 1)
    print(f"# float32 256x256 matmul rate here {peak:.0f} GFLOP/s; IQL {flops / 1e9:.3f} GFLOP "
          f"per gradient step (XLA) -> ceiling {peak * 1e9 / flops:.0f} updates/s at one seed")
    rows = []
    for n in [int(s) for s in args.seeds.split(",")]:
        for r in range(args.rounds):
            for impl in (("jaxcorl", "ours") if r % 2 == 0 else ("ours", "jaxcorl")):
                row = run_child([__file__, "--jaxcorl", path, "--steps", str(args.steps),
                                 "--child", impl, str(n)])
                if row:
                    rows.append({**row, "round": r})
                    print(json.dumps(row), flush=True)
    ratio_table(rows, "updates_per_s_per_seed", "JAX-CORL", "IQL: gradient updates/s per seed, "
                "round by round", "updates/s")
    print(machine_header())


if __name__ == "__main__":
    main()
