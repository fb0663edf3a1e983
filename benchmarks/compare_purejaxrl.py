"""Side by side against a PureJaxRL checkout: PPO and DQN on CartPole-v1, env steps/s and returns.

    python benchmarks/compare_purejaxrl.py --purejaxrl=PATH          # PPO + DQN, 1/8/64 seeds
    python benchmarks/compare_purejaxrl.py --purejaxrl=PATH --algos=ppo --seeds=1,8 --rounds=3

PATH is the folder holding PureJaxRL's `ppo.py`, `wrappers.py` and `dqn.py` (the `purejaxrl/`
folder of a luchris429/purejaxrl checkout; it is never copied into this project nor a dependency
of it). Its scripts are imported unchanged; the shims are empty stand-in modules for the `brax`,
`navix` and `wandb` imports at their top level, and gymnax 1.x's six-value `step` given back
the five-value form they unpack, through gymnax's own `LegacyStepAPIWrapper` (for PPO the three
info entries gymnax 1.x adds are dropped, so PureJaxRL stacks the same per-step info as it did
under gymnax 0.0.x). DQN needs `flashbax` installed.

Both sides run the same configuration, PureJaxRL's own (`PJ_PPO`, `PJ_DQN` below, translated
field by field into ours by `our_ppo_config` / `our_dqn_config`), each as one program for the
whole training of all seeds: PureJaxRL's `jit(vmap(make_train(config)))`, ours the runner's
programs (`launch.runner.build_programs`): `init` then `chunk(num_updates)`, i.e.
`jit(scan(vmap(update), length=num_updates))`; DQN's `init` runs the `learning_starts` random
warm-up steps, which PureJaxRL's scan also takes, so both time init + training. Each
(algorithm, implementation, seeds) runs in its own process, the two implementations
alternating (the order flips every round); a process reports its first call (trace + compile +
run) and its steady state (best of `reps` calls with fresh seeds after that). The per-seed
budget is the config's (5e5 env steps) unless seeds x budget exceeds `--max_env_steps`; then
both sides get the same smaller budget (whole updates), which leaves the cost per env step as
it is.

Returns, to show both learn alike: the mean over seeds of the training episodes' return at the
end of the first, second, third and last quarter of training (PureJaxRL: the mean of its
`returned_episode_returns` over the quarter's last update or, for DQN, its last 100 steps;
ours: `episode_return`, the last finished training episode per env, of the quarter's last
update) and ours' greedy evaluation at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import types

PJ_PPO = {"LR": 2.5e-4, "NUM_ENVS": 4, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 5e5,
          "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95,
          "CLIP_EPS": 0.2, "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5,
          "ACTIVATION": "tanh", "ENV_NAME": "CartPole-v1", "ANNEAL_LR": True, "DEBUG": False}
PJ_DQN = {"NUM_ENVS": 10, "BUFFER_SIZE": 10000, "BUFFER_BATCH_SIZE": 128, "TOTAL_TIMESTEPS": 5e5,
          "EPSILON_START": 1.0, "EPSILON_FINISH": 0.05, "EPSILON_ANNEAL_TIME": 25e4,
          "TARGET_UPDATE_INTERVAL": 500, "LR": 2.5e-4, "LEARNING_STARTS": 10000,
          "TRAINING_INTERVAL": 10, "LR_LINEAR_DECAY": False, "GAMMA": 0.99, "TAU": 1.0,
          "ENV_NAME": "CartPole-v1", "WANDB_MODE": "disabled"}
DQN_STEPS_PER_UPDATE = 10  # ours: vector steps per update (10 envs x 10 = 100 env steps)


def our_ppo_config(total_timesteps: int):
    from algorithms.online import ppo
    c = ppo.default_config()
    c.update(total_timesteps=total_timesteps, num_envs=PJ_PPO["NUM_ENVS"],
             num_steps=PJ_PPO["NUM_STEPS"], update_epochs=PJ_PPO["UPDATE_EPOCHS"],
             num_minibatches=PJ_PPO["NUM_MINIBATCHES"], lr=PJ_PPO["LR"],
             anneal_lr=PJ_PPO["ANNEAL_LR"], gamma=PJ_PPO["GAMMA"],
             gae_lambda=PJ_PPO["GAE_LAMBDA"], clip_eps=PJ_PPO["CLIP_EPS"],
             ent_coef=PJ_PPO["ENT_COEF"], vf_coef=PJ_PPO["VF_COEF"],
             max_grad_norm=PJ_PPO["MAX_GRAD_NORM"], activation=PJ_PPO["ACTIVATION"],
             hidden_sizes=(64, 64))
    return c


def our_dqn_config(total_timesteps: int):
    """PureJaxRL's DQN settings in ours (its loss is the squared TD error, ours 1/2 of it: the
    same Adam steps up to its epsilon)."""
    from algorithms.online import dqn
    c = dqn.default_config()
    c.update(total_timesteps=total_timesteps, num_envs=PJ_DQN["NUM_ENVS"],
             num_steps=DQN_STEPS_PER_UPDATE, buffer_size=PJ_DQN["BUFFER_SIZE"],
             batch_size=PJ_DQN["BUFFER_BATCH_SIZE"], start_e=PJ_DQN["EPSILON_START"],
             end_e=PJ_DQN["EPSILON_FINISH"],
             exploration_fraction=PJ_DQN["EPSILON_ANNEAL_TIME"] / total_timesteps,
             target_update_period=PJ_DQN["TARGET_UPDATE_INTERVAL"], lr=PJ_DQN["LR"],
             learning_starts=PJ_DQN["LEARNING_STARTS"],
             train_frequency=PJ_DQN["TRAINING_INTERVAL"], gamma=PJ_DQN["GAMMA"],
             tau=PJ_DQN["TAU"], loss="mse", hidden_sizes=(120, 84))
    return c


def per_seed_budget(algo: str, seeds: int, max_env_steps: float) -> int:
    """Env steps per seed: the config's, or less (whole updates) when seeds x it is too many."""
    full = PJ_PPO["TOTAL_TIMESTEPS"] if algo == "ppo" else PJ_DQN["TOTAL_TIMESTEPS"]
    if algo == "ppo":
        per_update = PJ_PPO["NUM_ENVS"] * PJ_PPO["NUM_STEPS"]
        budget = min(full, max_env_steps / seeds)
        return int(budget // per_update * per_update)
    per_update = PJ_DQN["NUM_ENVS"] * DQN_STEPS_PER_UPDATE
    budget = max(min(full, max_env_steps / seeds), PJ_DQN["LEARNING_STARTS"] + 4 * per_update)
    return int((budget - PJ_DQN["LEARNING_STARTS"]) // per_update * per_update
               + PJ_DQN["LEARNING_STARTS"])


def quarters(curve) -> list[float]:
    """Values at the end of each quarter of a per-update curve."""
    n = len(curve)
    return [round(float(curve[max(n * q // 4 - 1, 0)]), 1) for q in (1, 2, 3, 4)]


# ---------------------------------------------------------------------------- PureJaxRL side
def import_purejaxrl(path: str, module: str):
    """PureJaxRL's `module` (ppo or dqn) from `path`, with the shims of the module docstring."""
    for name in ("brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training",
                 "navix", "wandb"):
        sys.modules.setdefault(name, types.ModuleType(name))
    training = sys.modules["brax.envs.wrappers.training"]
    training.EpisodeWrapper = training.AutoResetWrapper = object
    sys.modules["wandb"].init = lambda *a, **k: None
    import gymnax
    import jax
    from gymnax.wrappers import LegacyStepAPIWrapper, purerl

    class FiveValueStep(LegacyStepAPIWrapper):
        """gymnax 1.x's step as (obs, state, reward, done, info), without 1.x's info extras."""

        def step(self, key, state, action, params=None):
            obs, state, reward, done, info = super().step(key, state, action, params)
            extras = ("terminated", "truncated", "final_observation")
            return obs, state, reward, done, {k: v for k, v in info.items() if k not in extras}

    make = gymnax.make
    if not hasattr(jax, "tree_map"):  # dqn.py calls jax.tree_map, which jax 0.6 removed
        jax.tree_map = jax.tree.map
    sys.path.insert(0, path)
    mod = __import__(module)
    if module == "ppo":  # ppo.py wraps gymnax.make's env in its own five-value wrappers
        mod.gymnax = types.SimpleNamespace(make=lambda name, **kw: (
            lambda env_params: (FiveValueStep(env_params[0]), env_params[1]))(make(name, **kw)))
    else:  # dqn.py wraps it in gymnax's (six-value) LogWrapper and unpacks five values
        mod.LogWrapper = lambda env: FiveValueStep(purerl.LogWrapper(env))
    return mod


def purejaxrl_program(algo: str, path: str, budget: int):
    """(train(keys) -> output, returns-per-update curve of an output [seeds, updates])."""
    import jax
    import numpy as np
    if algo == "ppo":
        config = {**PJ_PPO, "TOTAL_TIMESTEPS": budget}
        train = jax.jit(jax.vmap(import_purejaxrl(path, "ppo").make_train(config)))
        return train, lambda out: np.asarray(
            out["metrics"]["returned_episode_returns"]).mean(axis=(2, 3))
    config = {**PJ_DQN, "TOTAL_TIMESTEPS": budget}
    train = jax.jit(jax.vmap(import_purejaxrl(path, "dqn").make_train(config)))

    def curve(out):  # per vector step -> per 100 steps (one of our updates' worth)
        r = np.asarray(out["metrics"]["returns"])
        r = r[:, :r.shape[1] // 100 * 100].reshape(r.shape[0], -1, 100)
        return r.mean(axis=2)
    return train, curve


# ---------------------------------------------------------------------------- our side
def our_program(algo: str, budget: int, seeds: int):
    """(train(keys) -> (state, metrics), eval(state) -> greedy returns, curve(metrics))."""
    import jax
    import numpy as np

    import envs
    from algorithms.online import dqn, ppo
    from launch import runner
    if algo == "ppo":
        module, config = ppo, our_ppo_config(budget)
    else:
        module, config = dqn, our_dqn_config(budget)
    task = module.make_task("CartPole-v1", config)
    programs = runner.build_programs(module, config, task, seeds)
    chunk = programs.chunk(int(config.num_updates))

    def train(keys):
        return chunk(programs.init(jax.device_put(keys, programs.sharding)))

    def evaluate(state):
        return np.asarray(programs.evaluate(state, jax.random.key(7), 0)["return"])

    del envs
    return train, evaluate, lambda metrics: np.asarray(metrics["episode_return"]).T


def child(algo: str, impl: str, seeds: int, reps: int, budget: int, path: str) -> dict:
    import jax
    if impl == "purejaxrl":
        train, curve_of = purejaxrl_program(algo, path, budget)
        make_keys = lambda s: jax.random.split(jax.random.PRNGKey(s), seeds)  # noqa: E731
        run = lambda s: jax.block_until_ready(train(make_keys(s)))  # noqa: E731
        evaluate = None
    else:
        from launch import runner
        train, evaluate, curve_of = our_program(algo, budget, seeds)
        run = lambda s: jax.block_until_ready(train(runner.seed_keys(s, seeds)))  # noqa: E731
    t0 = time.perf_counter()
    out = run(1)
    first = time.perf_counter() - t0
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        run(100 + i)
        times.append(time.perf_counter() - t0)
    steady = min(times)
    curve = curve_of(out) if impl == "purejaxrl" else curve_of(out[1])
    row = {"algo": algo, "impl": impl, "seeds": seeds, "budget": budget,
           "first_s": round(first, 2), "steady_s": round(steady, 3),
           "env_steps_per_s": round(seeds * budget / steady),
           "returns": quarters(curve.mean(axis=0)), "load": round(os.getloadavg()[0], 2)}
    if evaluate is not None:
        row["greedy_eval"] = round(float(evaluate(out[0]).mean()), 1)
    return row


# ---------------------------------------------------------------------------- driver
def run_child(argv: list[str], timeout_s: float | None = None) -> dict | None:
    """Runs this script (or another) with `argv` in a fresh process; its last JSON line, or None
    when it fails or runs past `timeout_s` (PureJaxRL's vmapped orthogonal init can deadlock on
    2-core CPUs; see the README)."""
    try:
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"# timed out after {timeout_s:.0f} s (hung?): {' '.join(argv[1:])}",
              file=sys.stderr)
        return None
    lines = [x for x in out.stdout.strip().splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"# failed: {' '.join(argv[1:])}\n{out.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def machine_header() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, python {platform.python_version()}; load average {load}")


def _round_value(rows: list[dict], key: str, seeds: int, rnd: int, ours: bool):
    return next((r[key] for r in rows if r["seeds"] == seeds and r.get("round", 0) == rnd
                 and (r["impl"] == "ours") == ours), None)


def ratio_table(rows: list[dict], key: str, theirs: str, title: str, unit: str) -> None:
    """Prints | seeds | theirs | ours | ours / theirs | with one value per round, paired by
    round ("-" where a process failed or hung)."""
    print(f"\n{title}\n| seeds | {theirs} {unit} | ours | ours / {theirs} |\n|---|---|---|---|")
    for n in sorted({r["seeds"] for r in rows}):
        rounds = sorted({r.get("round", 0) for r in rows if r["seeds"] == n})

        them = [_round_value(rows, key, n, rnd, ours=False) for rnd in rounds]
        us = [_round_value(rows, key, n, rnd, ours=True) for rnd in rounds]
        show = " / ".join
        ratios = show(f"{u / t:.2f}" if t and u else "-" for t, u in zip(them, us))
        print(f"| {n} | {show(f'{t:,}' if t else '-' for t in them)} | "
              f"{show(f'{u:,}' if u else '-' for u in us)} | {ratios} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purejaxrl", required=True,
                        help="folder with PureJaxRL's ppo.py, wrappers.py and dqn.py")
    parser.add_argument("--algos", default="ppo,dqn", help="comma-separated: ppo, dqn")
    parser.add_argument("--seeds", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved pairs per row")
    parser.add_argument("--reps", type=int, default=2,
                        help="steady-state calls per process (1 above 8 seeds)")
    parser.add_argument("--max_env_steps", type=float, default=4e6,
                        help="cap on seeds x env steps per seed in one call (see above)")
    parser.add_argument("--child_timeout", type=float, default=900,
                        help="seconds before a process counts as hung and is killed")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = os.path.abspath(args.purejaxrl)
    if args.child:
        algo, impl, seeds, budget = args.child
        print(json.dumps(child(algo, impl, int(seeds), args.reps, int(budget), path)), flush=True)
        return
    missing = [f for f in ("ppo.py", "wrappers.py", "dqn.py") if not os.path.isfile(
        os.path.join(path, f))]
    if missing:
        sys.exit(f"--purejaxrl={args.purejaxrl}: no {', '.join(missing)} there; pass the "
                 "purejaxrl/ folder of a luchris429/purejaxrl checkout")
    algos = [a for a in args.algos.split(",") if a]
    if set(algos) - {"ppo", "dqn"}:
        sys.exit(f"--algos={args.algos}: valid choices are ppo, dqn")
    print(machine_header())
    print("# each row: one process; steady = best of reps calls with fresh seeds; returns = mean "
          "training-episode return at the end of each quarter of training")
    for algo in algos:
        rows = []
        for n in [int(s) for s in args.seeds.split(",")]:
            budget = per_seed_budget(algo, n, args.max_env_steps)
            reps = args.reps if n <= 8 else 1
            for r in range(args.rounds):
                for impl in (("purejaxrl", "ours") if r % 2 == 0 else ("ours", "purejaxrl")):
                    row = run_child([__file__, "--purejaxrl", path, "--reps", str(reps),
                                     "--child", algo, impl, str(n), str(budget)],
                                    args.child_timeout)
                    if row:
                        rows.append({**row, "round": r})
                        print(json.dumps(row), flush=True)
        ratio_table(rows, "env_steps_per_s", "PureJaxRL", f"{algo}: env steps/s (steady state), "
                    "round by round", "env steps/s")
        ratio_table(rows, "first_s", "PureJaxRL", f"{algo}: first call s (trace + compile + "
                    "run)", "s")
    print(machine_header())


if __name__ == "__main__":
    main()
