r"""Sample a trained diffusion model from its checkpoint: sample quality vs NFE per sampler.

    python -m launch.sample --workdir=runs/edm-moons-1234abcd                  # every sampler
    python -m launch.sample --workdir=DIR --sampler=heun --num_steps=18        # one setting
    python -m launch.sample --workdir=DIR --samplers=heun,dpmpp_2m --nfe=10,20,50
    python -m launch.sample --workdir=DIR --guidance=1.0       # conditional digits, CFG w = 1
    python -m launch.sample --workdir=DIR --num_heldout=10000 --num_samples=10000   # finer

Reads DIR/config.json (algorithm, dataset, seeds, configuration), rebuilds the task and a
template state with `jax.vmap(init)`, restores the latest checkpoint in DIR/checkpoints
(`launch.runner.Checkpoints`), and hands the seed-batched state to the algorithm's `artifacts`
with this command's options (for the diffusion models `diffusion.report.sampler_report`: each
sampler at each NFE budget, sampler_table.json and samples.png in DIR or --outdir).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS


def _fail(message: str):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(2)


def _merge(config, saved: dict):
    """Saved values onto the algorithm's default config (nested dicts into ConfigDicts)."""
    from ml_collections import ConfigDict
    with config.unlocked():
        for k, v in saved.items():
            if isinstance(v, dict) and k in config and isinstance(config[k], ConfigDict):
                _merge(config[k], v)
            else:
                config[k] = v
    return config


def load_run(workdir: str, *, num_heldout: int | None = None):
    """(algo module, config, task, seed-batched state, step, run_config) of a run directory.

    num_heldout (toys): draw a held-out set of this size instead of the run's (same
    distribution, independent of the training data), for a finer distance resolution."""
    import jax
    import jax.numpy as jnp

    from launch import registry, runner
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a training run's directory")
    with open(path) as f:
        run_config = json.load(f)
    algo = registry.get(run_config["algo"])
    if registry.optional(algo, "sample") is None:
        raise ValueError(f"algorithm {run_config['algo']!r} is not a generative model")
    config = _merge(algo.default_config(), run_config["config"])
    task_name = run_config.get("task") or run_config.get("env") or algo.DEFAULT_TASK
    task_config = config
    if num_heldout:
        task_config = _merge(algo.default_config(), run_config["config"])
        task_config.data.num_heldout = int(num_heldout)
    task = algo.make_task(task_name, task_config)
    num_seeds, seed = int(run_config["num_seeds"]), int(run_config["seed"])
    members = runner.sweep_members(run_config.get("sweep"))
    keys = jnp.tile(runner.seed_keys(seed, num_seeds), len(members))
    template = jax.jit(jax.vmap(lambda k: algo.init(k, config, task)))(keys)
    ckpt = runner.Checkpoints(os.path.join(workdir, "checkpoints"))
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints yet")
        state = ckpt.restore(step, template)
    finally:
        ckpt.close()
    return algo, config, task, state, int(step), run_config


def sample_workdir(workdir: str, *, outdir: str | None = None, samplers=None,
                   num_steps: int | None = None, nfe=(10, 20, 35, 50, 100, 250),
                   num_samples: int | None = None, seed_index: int = 0, sample_seed: int = 0,
                   guidance: float = 0.0, num_heldout: int | None = None, plot: bool = True,
                   print_fn=print) -> dict:
    """The command as a function: restore the run in `workdir`, write its sampler table
    (+ picture) to `outdir` (default workdir) with the algorithm's `artifacts`, and return the
    table (sampler_table.json). Raises ValueError / FileNotFoundError on a bad directory,
    sampler or seed index."""
    algo, config, task, state, step, _ = load_run(workdir, num_heldout=num_heldout)
    print_fn(f"checkpoint at update {step}")
    outdir = outdir or workdir
    algo.artifacts(state, config, task, outdir, samplers=samplers, num_steps=num_steps,
                   nfe=nfe, num_samples=num_samples, seed_index=seed_index,
                   sample_seed=sample_seed, guidance=guidance, plot=plot, print_fn=print_fn)
    with open(os.path.join(outdir, "sampler_table.json")) as f:
        return json.load(f)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.workdir:
        _fail("--workdir is required")
    if FLAGS.samplers:
        samplers = [s.strip() for s in FLAGS.samplers.split(",") if s.strip()]
    else:
        samplers = None if FLAGS.sampler == "all" else [FLAGS.sampler]
    try:
        nfe = [int(v) for v in FLAGS.nfe.split(",") if v.strip()]
    except ValueError:
        _fail(f"--nfe must be comma-separated integers >= 1, got {FLAGS.nfe!r}")
    counts = (("nfe", nfe), ("num_steps", [FLAGS.num_steps]),
              ("num_samples", [FLAGS.num_samples]), ("num_heldout", [FLAGS.num_heldout]))
    for name, values in counts:
        bad = [v for v in values if v is not None and v < 1]
        if bad or (name == "nfe" and not values):
            _fail(f"--{name} must be >= 1, got {bad[0] if bad else FLAGS.nfe!r}")
    try:
        sample_workdir(FLAGS.workdir, outdir=FLAGS.outdir, samplers=samplers,
                       num_steps=FLAGS.num_steps, nfe=nfe,
                       num_samples=FLAGS.num_samples, seed_index=FLAGS.seed_index,
                       sample_seed=FLAGS.sample_seed, guidance=FLAGS.guidance,
                       num_heldout=FLAGS.num_heldout, plot=FLAGS.plot)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    return 0


def define_flags():
    """The command's flags (defined on demand: importing this module defines none, so it can
    be imported next to launch.run, whose --workdir and --seed flags share names)."""
    flags.DEFINE_string("workdir", None, "A training run's directory (config.json + checkpoints/).")
    flags.DEFINE_string("outdir", None, "Where to write the table and pictures (default: workdir).")
    flags.DEFINE_string("sampler", "all", "One sampler, or 'all' (the model's samplers).")
    flags.DEFINE_string("samplers", None, "Comma-separated samplers (overrides --sampler).")
    flags.DEFINE_integer("num_steps", None, "Steps for the chosen sampler(s); default: NFE sweep.")
    flags.DEFINE_string("nfe", "10,20,35,50,100,250", "NFE budgets of the sweep.")
    flags.DEFINE_integer("num_samples", None, "Samples per setting (default: held-out set size).")
    flags.DEFINE_integer("seed_index", 0, "Which trained seed to sample.")
    flags.DEFINE_integer("sample_seed", 0, "Seed of the sampling key (same for every sampler).")
    flags.DEFINE_float("guidance", 0.0, "Classifier-free guidance weight w (conditional models): "
                       "D_w = (1 + w) D(x|c) - w D(x); 0 = the conditional model.")
    flags.DEFINE_integer("num_heldout", None, "Toys: compare with a fresh held-out set of this "
                         "size (default: the run's); the distance's noise floor falls with it.")
    flags.DEFINE_boolean("plot", True, "Write samples.png.")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
