"""Diffusion sampler throughput: samples/s per sampler at a fixed NFE, the same NFE of bare
network evaluations on the same batch (sampler overhead), and compile time at NFE 10 vs 100.

    python benchmarks/diffusion.py            # batch 4096 2-D points, EDM toy MLP (3 x 128)
    python benchmarks/diffusion.py --quick    # smaller batch and fewer repeats
    python benchmarks/diffusion.py --dim=16 --batch=256 --nfe=35   # 16-D data, a small batch

The model is `diffusion.models.edm` with the toy network (random parameters: speed does not
depend on training). "bare network" is a `lax.scan` of NFE raw-network applications on the
same batch, each feeding its output back as the next input, at a different noise level each
(nothing can be hoisted out of the loop); overhead = t_sampler / t_bare - 1 is what the
sampler adds (preconditioning, schedule arithmetic, noise draws, Heun's extra state). The
stochastic samplers draw a standard normal [batch, dim] per step (PC: per corrector and
predictor step); "draws" times that many draws alone (`samplers.step_noise` in a `lax.scan`),
and "net of draws" = (t_sampler - t_draws) / t_bare - 1 is the overhead without them; "x heun"
is a sampler's samples/s relative to Heun's at the same NFE budget. Times are the best of
`--repeats` rounds, each round running every compiled program once (samplers, bare networks
and draws in turn, after one untimed warm-up round). On the CPU backend they are the
process's CPU time by default (`--clock`), which a machine shared with other jobs disturbs
far less than wall-clock time; the samples/s column is then samples per CPU-second. (PC can
come out cheaper than its bare baseline: its corrector and predictor evaluate the network at
the same noise level, and XLA computes the shared noise-embedding layers once for both.)
Compile times are wall times of `jit(...).lower(...).compile()`.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

# Run as `python benchmarks/diffusion.py`, this file's folder comes first on sys.path and its
# name would shadow the `diffusion` package: drop the folder before importing the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from diffusion import data, networks, samplers, sampling  # noqa: E402
from diffusion.models import edm  # noqa: E402

SAMPLERS = ("euler", "heun", "edm_stochastic", "dpmpp_2m", "ancestral", "ddim", "ddpm",
            "reverse_sde", "pc")


CLOCK = time.perf_counter  # set by --clock


def _best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        jax.block_until_ready(fn())
        times.append(CLOCK() - t0)
    return min(times)


def _setup(batch, dim=2):
    config = edm.default_config()
    task = data.DataTask(train=jnp.zeros((8, dim)), train_labels=jnp.zeros((8,), jnp.int32),
                         heldout=jnp.zeros((8, dim)), heldout_labels=jnp.zeros((8,), jnp.int32),
                         name="moons")
    state = edm.init(jax.random.key(0), config, task)
    leaves, tree = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [0.1 * jax.random.normal(k, leaf.shape, leaf.dtype)
                                       for k, leaf in zip(keys, leaves)])
    return config, task, state.replace(params=params, ema_params=params)


def _compile(fn, *args):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def bare_network(config, state, batch, nfe, dim=2):
    """A compiled program of `nfe` raw-network applications: () -> x."""
    net = networks.make_network(config)
    x0 = jax.random.normal(jax.random.key(2), (batch, dim))
    # One noise level per evaluation, as in a sampler: a loop-invariant level would let XLA
    # hoist the noise-embedding layers out of the loop and flatter the baseline.
    c_noise = jnp.linspace(1.0, -1.5, nfe)

    def run(params, x):
        def step(x, c):
            return net.apply(params, x, jnp.full((batch,), c)), None
        return jax.lax.scan(step, x, c_noise)[0]

    compiled, _ = _compile(run, state.ema_params, x0)
    return lambda: compiled(state.ema_params, x0)


def noise_draws(batch, dim, count):
    """A compiled program of `count` standard normal [batch, dim] draws as the stochastic
    samplers make them (`samplers.step_noise` in a `lax.scan`): () -> x."""
    x0 = jnp.zeros((batch, dim))

    def run(key, x):
        def step(x, i):
            return x + samplers.step_noise(key, i, x), None
        return jax.lax.scan(step, x, jnp.arange(count, dtype=jnp.int32))[0]

    compiled, _ = _compile(run, jax.random.key(4), x0)
    return lambda: compiled(jax.random.key(4), x0)


def draws_per_run(config, name, steps):
    """Standard normal [batch, dim] draws of one run (drawn even where their std is 0)."""
    if name == "pc":
        return steps * (1 + int(config.sampler.n_corrector))
    return steps if name in ("edm_stochastic", "ancestral", "ddpm", "reverse_sde") else 0


def sampler_rows(config, task, state, batch, nfe, repeats, dim=2):
    """Every sampler at its exact NFE, with the bare network at that NFE and its noise draws
    alone, timed round-robin: each of `repeats` rounds runs every program once, and each time
    is the best over the rounds, so slow drifts of a shared machine hit all samplers alike.
    vs_heun = Heun's time / the sampler's (its samples/s relative to Heun's at the same
    NFE budget)."""
    programs = {}
    bare_fns, draw_fns = {}, {}
    key = jax.random.key(3)
    for name in SAMPLERS:
        steps = sampling.steps_for_nfe(name, nfe, config)

        def run(st, k, name=name, steps=steps):
            return edm.sample(st, k, config, task, batch, sampler=name, num_steps=steps)

        compiled, t_compile = _compile(run, state, key)
        exact = _nfe(config, state, name, steps)
        if exact not in bare_fns:
            bare_fns[exact] = bare_network(config, state, batch, exact, dim)
        count = draws_per_run(config, name, steps)
        if count and count not in draw_fns:
            draw_fns[count] = noise_draws(batch, dim, count)
        programs[name] = dict(sample=lambda fn=compiled: fn(state, key), bare=bare_fns[exact],
                              draws=draw_fns.get(count), steps=steps, nfe=exact,
                              compile_s=t_compile)
    times = {name: dict(sample=[], bare=[], draws=[0.0]) for name in programs}
    for _ in range(repeats + 1):                  # the first round warms up, untimed
        for name, p in programs.items():
            for part in ("sample", "bare", "draws"):
                if p[part] is not None:
                    times[name][part].append(_best_of(p[part], 1))
    rows = []
    for name, p in programs.items():
        t, t_bare, t_draws = (min(times[name][part][1:] or [0.0])
                              for part in ("sample", "bare", "draws"))
        rows.append(dict(sampler=name, steps=p["steps"], nfe=p["nfe"], seconds=t,
                         samples_per_s=batch / t, bare_seconds=t_bare,
                         overhead=t / t_bare - 1.0, draws_seconds=t_draws,
                         overhead_net_of_draws=(t - t_draws) / t_bare - 1.0,
                         compile_s=p["compile_s"]))
    t_heun = next(r["seconds"] for r in rows if r["sampler"] == "heun")
    for r in rows:
        r["vs_heun"] = t_heun / r["seconds"]
    return rows


def _nfe(config, state, name, steps):
    """The exact NFE, from tracing the sampler on a 2-sample batch (info['nfe'] is static)."""
    info = {}

    def grab(st, k):
        x, i = sampling.draw_samples(edm.MODEL, st, k, config, 2, sampler=name,
                                     num_steps=steps)
        info.update(i)
        return x

    jax.eval_shape(grab, state, jax.random.key(0))
    return int(info["nfe"])


def compile_rows(config, task, state, batch):
    rows = []
    key = jax.random.key(3)
    for name in SAMPLERS:
        times = {}
        for nfe in (10, 100):
            steps = sampling.steps_for_nfe(name, nfe, config)
            _, t = _compile(lambda st, k, name=name, steps=steps: edm.sample(
                st, k, config, task, batch, sampler=name, num_steps=steps), state, key)
            times[nfe] = t
        rows.append(dict(sampler=name, compile_10=times[10], compile_100=times[100]))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--dim", type=int, default=2, help="data dimension (points in R^dim)")
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                   help="cpu: the process's CPU time (steadier than wall time on a shared "
                        "machine; CPU backend only); auto: cpu on the CPU backend, else wall")
    args = p.parse_args()
    global CLOCK
    clock = args.clock
    if clock == "auto":
        clock = "cpu" if jax.default_backend() == "cpu" else "wall"
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    batch = args.batch or (512 if args.quick else 4096)
    repeats = args.repeats or (2 if args.quick else 5)
    config, task, state = _setup(batch, args.dim)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({platform.processor() or '?'}"
          f", {jax.local_device_count()} device(s)); EDM toy MLP "
          f"{config.net.depth} x {config.net.width}, {args.dim}-D data, batch {batch}, best of "
          f"{repeats}, {'process CPU' if clock == 'cpu' else 'wall-clock'} time\n")
    rows = sampler_rows(config, task, state, batch, args.nfe, repeats, args.dim)
    print(f"Samplers at NFE <= {args.nfe} (bare = the same NFE of raw network applications; "
          f"draws = the sampler's normal draws alone)")
    print(f"{'sampler':>15} {'steps':>6} {'NFE':>5} {'samples/s':>12} {'x heun':>7} "
          f"{'ms':>9} {'bare ms':>9} {'overhead':>9} {'draws ms':>9} {'net of draws':>13}")
    for r in rows:
        print(f"{r['sampler']:>15} {r['steps']:>6} {r['nfe']:>5} {r['samples_per_s']:>12.0f} "
              f"{r['vs_heun']:>7.2f} {1e3 * r['seconds']:>9.2f} {1e3 * r['bare_seconds']:>9.2f} "
              f"{100 * r['overhead']:>8.1f}% {1e3 * r['draws_seconds']:>9.2f} "
              f"{100 * r['overhead_net_of_draws']:>12.1f}%")
    print("\nCompile time (s) of the jitted sampler: NFE 10 vs NFE 100 (one lax.scan: it "
          "should not grow)")
    print(f"{'sampler':>15} {'NFE 10':>8} {'NFE 100':>8}")
    for r in compile_rows(config, task, state, batch):
        print(f"{r['sampler']:>15} {r['compile_10']:>8.2f} {r['compile_100']:>8.2f}")


if __name__ == "__main__":
    main()
