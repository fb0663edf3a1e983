r"""Sample a trained diffusion model from its checkpoint: sample quality vs NFE per sampler.

    python -m launch.sample --workdir=runs/edm-moons-1234abcd                  # every sampler
    python -m launch.sample --workdir=DIR --sampler=heun --num_steps=18        # one setting
    python -m launch.sample --workdir=DIR --samplers=heun,dpmpp_2m --nfe=10,20,50
    python -m launch.sample --workdir=DIR --guidance=1.0       # conditional digits, CFG w = 1
    python -m launch.sample --workdir=DIR --num_heldout=10000 --num_samples=10000   # finer

Reads DIR/config.json (algorithm, dataset, seeds, configuration), rebuilds the task and a
template state with `jax.vmap(init)`, restores the latest checkpoint in DIR/checkpoints
(`launch.runner.Checkpoints`), slices out one seed (`--seed_index`, EMA parameters) and, for
each sampler and NFE budget, draws `--num_samples` samples (default: the held-out set's size)
and measures the sliced Wasserstein-2 distance to the held-out set (the training run's
projections). The quality floor is the same distance for an exact sample set of that size
(fresh toy samples; for digits, training images).

Writes to DIR (or --outdir):
    sampler_table.json   every (sampler, num_steps, exact NFE, distance, seconds) and the floor
    samples.png          toys: scatter of the held-out set and of each sampler's samples at the
                         budget closest to 35 NFE; digits: image grids (one row per class for
                         conditional models) next to held-out images
and prints the sampler x NFE table (cells: distance, with the exact NFE in parentheses; Heun
and the EDM stochastic sampler use 2N - 1 <= budget, PC N (1 + M)).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS


PLOT_NFE = 35  # the budget whose samples are drawn (EDM's Heun, 18 steps)


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
    """(algo module, config, task, full vmapped state, step, run_config) of a run directory.

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
    if not hasattr(algo, "sample"):
        raise ValueError(f"algorithm {run_config['algo']!r} is not a diffusion model")
    config = _merge(algo.default_config(), run_config["config"])
    dataset = run_config.get("env") or algo.DEFAULT_DATASET
    if num_heldout:
        task_config = _merge(algo.default_config(), run_config["config"])
        task_config.data.num_heldout = int(num_heldout)
        task = algo.make_task(dataset, task_config)
    else:
        task = algo.make_task(dataset, config)
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


def sampler_table(algo, state, config, task, settings, *, num_samples: int, key, labels=None,
                  guidance: float = 0.0, print_fn=print):
    """Samples one seed's `state` with each (sampler, num_steps) of `settings` and measures the
    sliced Wasserstein distance to task.heldout. Returns (rows, samples): rows are dicts with
    sampler, num_steps, nfe (exact), sliced_wasserstein, seconds (one run after compiling),
    compile_seconds; samples maps (sampler, num_steps) -> numpy samples."""
    import jax
    import numpy as np

    from diffusion import data as data_lib
    proj_key = jax.random.key(int(config.eval.projection_seed))
    n_proj = int(config.eval.num_projections)
    rows, samples = [], {}
    for name, steps in settings:
        fn = jax.jit(lambda st, k, name=name, steps=steps: algo.sample(
            st, config, k, num_samples, sampler=name, num_steps=steps, labels=labels,
            guidance=guidance))
        t0 = time.perf_counter()
        compiled = fn.lower(state, key).compile()
        t1 = time.perf_counter()
        x, info = compiled(state, key)
        x = jax.block_until_ready(x)
        t2 = time.perf_counter()
        sw = float(data_lib.sliced_wasserstein(x, task.heldout, proj_key, n_proj))
        nfe = int(np.asarray(info["nfe"]))
        row = dict(sampler=name, num_steps=int(steps), nfe=nfe, sliced_wasserstein=sw,
                   seconds=t2 - t1, compile_seconds=t1 - t0,
                   finite=bool(np.all(np.isfinite(np.asarray(x)))))
        rows.append(row)
        samples[(name, int(steps))] = np.asarray(x)
        print_fn(f"  {name:>15} steps={steps:<4} NFE={nfe:<5} SW={sw:.4f}  "
                 f"({t2 - t1:.2f} s, compile {t1 - t0:.2f} s)")
    return rows, samples


def format_table(rows, budgets, floor) -> str:
    """Rows = samplers, columns = NFE budgets; cell 'distance (exact NFE)'."""
    by = {}
    for r in rows:
        by.setdefault(r["sampler"], {})[r.get("budget", r["nfe"])] = r
    cols = list(budgets) if budgets else sorted({r["nfe"] for r in rows})
    adaptive = [r for r in rows if r.get("budget") == "adaptive"]
    head = f"{'sampler':>15} | " + " | ".join(f"NFE {b:>4}".rjust(15) for b in cols)
    if adaptive:
        head += " | " + "adaptive".rjust(15)
    lines = [head, "-" * len(head)]
    for name, cells in by.items():
        parts = []
        for b in cols:
            r = cells.get(b)
            parts.append((f"{r['sliced_wasserstein']:.4f} ({r['nfe']})" if r else "-").rjust(15))
        line = f"{name:>15} | " + " | ".join(parts)
        if adaptive:
            r = cells.get("adaptive")
            line += " | " + ((f"{r['sliced_wasserstein']:.4f} ({r['nfe']})" if r else "-")
                             .rjust(15))
        lines.append(line)
    if floor is not None:
        lines.append(f"quality floor (exact samples of the same size vs held-out): {floor:.4f}")
    return "\n".join(lines)


def plot_toys(path, heldout, panels, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    items = [("held-out data", heldout)] + list(panels)
    cols = min(4, len(items))
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    lim = np.abs(heldout).max() * 1.25
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, x) in zip(axes.ravel(), items):
        ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, color="k" if name.startswith("held")
                   else "C0", linewidths=0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(images, rows, cols):
    import numpy as np
    imgs = np.asarray(images)[: rows * cols].reshape(rows, cols, 8, 8)
    pad = np.full((rows, cols, 10, 10), -1.0)
    pad[:, :, 1:9, 1:9] = imgs
    return pad.transpose(0, 2, 1, 3).reshape(rows * 10, cols * 10)


def plot_digits(path, samples, heldout, title, conditional: bool):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    for ax, (name, imgs) in zip(axes, [("samples" + (" (row = class 0..9)" if conditional
                                                      else ""), samples),
                                       ("held-out images", heldout)]):
        ax.imshow(np.clip(_grid(imgs, 10, 10), -1, 1), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_workdir(workdir: str, *, outdir: str | None = None, samplers=None,
                   num_steps: int | None = None, nfe=(10, 20, 35, 50, 100, 250),
                   num_samples: int | None = None, seed_index: int = 0, sample_seed: int = 0,
                   guidance: float = 0.0, num_heldout: int | None = None, plot: bool = True,
                   print_fn=print) -> dict:
    """The command as a function: restore the run in `workdir`, sample with `samplers` (None:
    all of the model's) at `num_steps` or at each NFE budget of `nfe`, write
    sampler_table.json (+ samples.png) to `outdir` (default workdir). Returns the table dict.
    Raises ValueError / FileNotFoundError on a bad directory, sampler or seed index."""
    import jax
    import numpy as np

    from diffusion import data as data_lib
    from diffusion.models import common
    from launch import registry, report

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a training run's directory")
    with open(path) as f:
        algo_name = json.load(f).get("algo")
    model = getattr(registry.get(algo_name), "MODEL", None)
    if model is None:
        raise ValueError(f"algorithm {algo_name!r} is not a diffusion model")
    names = list(model.samplers) if not samplers else list(samplers)
    bad = [s for s in names if s not in model.samplers]
    if bad:
        raise ValueError(f"unknown sampler(s) {bad} for {model.name}; valid: "
                         f"{', '.join(model.samplers)}")
    algo, config, task, state, step, run_config = load_run(workdir, num_heldout=num_heldout)
    width = jax.tree.leaves(state.params)[0].shape[0]
    if not 0 <= seed_index < width:
        raise ValueError(f"seed index must be in [0, {width}), got {seed_index}")
    st = common.seed_state(state, seed_index)
    n = int(num_samples or task.heldout.shape[0])
    conditional = bool(st.num_classes)
    labels = (np.resize(np.asarray(task.heldout_labels), n).astype(np.int32) if conditional
              else None)
    if guidance and not conditional:
        print_fn("note: guidance ignored (the model is unconditional)")
    guidance = float(guidance) if conditional else 0.0

    settings = []  # (sampler, num_steps, budget)
    budgets = [] if num_steps else [int(b) for b in nfe]
    for name in names:
        if name == "rk45":
            settings.append((name, 1, "adaptive"))
        elif num_steps:
            settings.append((name, int(num_steps), None))
        else:
            seen = set()
            for b in budgets:
                steps = common.steps_for_nfe(name, b, config)
                if steps not in seen:
                    seen.add(steps)
                    settings.append((name, steps, b))
    print_fn(f"{run_config['algo']} on {task.name}: checkpoint at update {step}, seed "
             f"{seed_index}, {n} samples" + (f", guidance w={guidance}" if conditional else ""))
    key = jax.random.key(sample_seed)
    rows, samples = sampler_table(algo, st, config, task, [(s, k) for s, k, _ in settings],
                                  num_samples=n, key=key, labels=labels, guidance=guidance,
                                  print_fn=print_fn)
    for r, (_, _, b) in zip(rows, settings):
        r["budget"] = b if b is not None else r["nfe"]
    ref = common.reference_set(task, n)
    floor = None if ref is None else float(data_lib.sliced_wasserstein(
        ref, task.heldout, jax.random.key(int(config.eval.projection_seed)),
        int(config.eval.num_projections)))
    table = format_table(rows, budgets or None, floor)
    if guidance:
        for r in rows:
            r["network_evals"] = 2 * r["nfe"]
        table += ("\nNFE counts denoiser evaluations; with guidance w != 0 each runs the network "
                  "twice (conditional and unconditional).")
    print_fn(f"\nSliced Wasserstein-2 to the {task.heldout.shape[0]} held-out samples "
             f"(cells: distance (exact NFE)); {run_config['algo']} on {task.name}, "
             f"update {step}")
    print_fn(table)

    outdir = outdir or workdir
    os.makedirs(outdir, exist_ok=True)
    result = dict(algo=run_config["algo"], dataset=task.name, step=step, seed_index=seed_index,
                  num_samples=n, guidance=guidance, heldout_size=int(task.heldout.shape[0]),
                  quality_floor=floor, nfe_budgets=budgets, rows=rows, table_text=table)
    report.atomic_write_text(os.path.join(outdir, "sampler_table.json"),
                             json.dumps(result, indent=2))
    written = ["sampler_table.json"]
    if plot:
        title = f"{run_config['algo']} on {task.name}, update {step}, seed {seed_index}"
        path = os.path.join(outdir, "samples.png")
        if task.name == "digits":
            grid_labels = np.repeat(np.arange(10, dtype=np.int32), 10) if conditional else None
            name0 = "heun" if "heun" in names and not num_steps else names[0]
            steps0 = num_steps or common.steps_for_nfe(name0, PLOT_NFE, config)
            x, info = jax.jit(lambda s, k: algo.sample(
                s, config, k, 100, sampler=name0, num_steps=steps0, labels=grid_labels,
                guidance=guidance))(st, key)
            held = np.asarray(task.heldout)
            if conditional:
                hl = np.asarray(task.heldout_labels)
                held = np.concatenate([held[hl == c][:10] for c in range(10)])
            plot_digits(path, np.asarray(x), held,
                        f"{title}: {name0}, NFE {int(info['nfe'])}"
                        + (f", CFG w={guidance}" if conditional else ""), conditional)
        else:
            panels = []
            for name in names:
                cands = [(abs(r["nfe"] - PLOT_NFE), i) for i, r in enumerate(rows)
                         if r["sampler"] == name]
                if cands:
                    r = rows[min(cands)[1]]
                    panels.append((f"{name}, NFE {r['nfe']}: SW {r['sliced_wasserstein']:.3f}",
                                   samples[(name, r["num_steps"])]))
            plot_toys(path, np.asarray(task.heldout), panels, title)
        written.append("samples.png")
    print_fn(f"\nWrote {outdir}/: {', '.join(written)}")
    return result


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
        sample_workdir(FLAGS.workdir, outdir=FLAGS.outdir, samplers=samplers,
                       num_steps=FLAGS.num_steps,
                       nfe=[int(v) for v in FLAGS.nfe.split(",") if v.strip()],
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
