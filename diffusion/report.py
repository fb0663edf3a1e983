"""After training: sample quality against NFE for every sampler, as a table and a picture.

`sampler_report(model, state, config, task, outdir)` (the models' `artifacts`) draws
`num_samples` samples (default: the held-out set's size) from one seed's EMA parameters with
each sampler at each NFE budget, measures the sliced Wasserstein-2 distance to the held-out set
(the training run's projections, `config.eval`), and writes to `outdir`:

    sampler_table.json   every (sampler, num_steps, exact NFE, distance, seconds) and the
                         quality floor: the same distance for an exact sample set of that size
                         (`data.reference_set`)
    samples.png          points: scatter of the held-out set and of each sampler's samples at
                         the budget closest to 35 NFE; images: a grid of samples (one row per
                         class for conditional models) next to held-out images

Cells of the printed table: distance (exact NFE); Heun and the EDM stochastic sampler use
2N - 1 <= budget evaluations, PC N (1 + M).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import TYPE_CHECKING, Callable, Sequence

import jax
import numpy as np

from diffusion import data as data_lib
from diffusion import sampling

if TYPE_CHECKING:
    from diffusion.protocol import Model

PLOT_NFE = 35  # the budget whose samples are drawn (EDM's Heun, 18 steps)
DEFAULT_NFE = (10, 35, 100)


def sampler_settings(model: Model, config, samplers: Sequence[str] | None = None,
                     num_steps: int | None = None, nfe: Sequence[int] = DEFAULT_NFE):
    """[(sampler, num_steps, budget)]: each sampler (None: all of the model's) at `num_steps`
    (budget None) or at the step count of each NFE budget (`sampling.steps_for_nfe`, budgets
    that give the same step count once); RK45 once, budget "adaptive". ValueError naming the
    valid samplers for an unknown one."""
    valid = sampling.sampler_names(model)
    names = list(valid) if not samplers else list(samplers)
    bad = [s for s in names if s not in valid]
    if bad:
        raise ValueError(f"unknown sampler(s) {bad} for {model.name}; valid: {', '.join(valid)}")
    settings = []
    for name in names:
        if name == "rk45":
            settings.append((name, 1, "adaptive"))
        elif num_steps:
            settings.append((name, int(num_steps), None))
        else:
            seen = set()
            for budget in nfe:
                steps = sampling.steps_for_nfe(name, int(budget), config)
                if steps not in seen:
                    seen.add(steps)
                    settings.append((name, steps, int(budget)))
    return settings


def sampler_table(model: Model, state, key, config, task: data_lib.DataTask, settings, *,
                  num_samples: int, labels=None, guidance: float = 0.0,
                  print_fn: Callable = print):
    """Samples one seed's `state` with each (sampler, num_steps) of `settings` and measures the
    sliced Wasserstein distance to task.heldout. Returns (rows, samples): rows are dicts with
    sampler, num_steps, nfe (exact), sliced_wasserstein, seconds (one run after compiling),
    compile_seconds, finite; samples maps (sampler, num_steps) -> numpy samples."""
    proj_key = jax.random.key(int(config.eval.projection_seed))
    n_proj = int(config.eval.num_projections)
    rows, samples = [], {}
    for name, steps in settings:
        fn = jax.jit(lambda st, k, name=name, steps=steps: sampling.draw_samples(
            model, st, k, config, num_samples, sampler=name, num_steps=steps, labels=labels,
            guidance=guidance))
        t0 = time.perf_counter()
        compiled = fn.lower(state, key).compile()
        t1 = time.perf_counter()
        x, info = compiled(state, key)
        x = jax.block_until_ready(x)
        t2 = time.perf_counter()
        sw = float(data_lib.sliced_wasserstein(x, task.heldout, proj_key, n_proj))
        nfe = int(np.asarray(info["nfe"]))
        rows.append(dict(sampler=name, num_steps=int(steps), nfe=nfe, sliced_wasserstein=sw,
                         seconds=t2 - t1, compile_seconds=t1 - t0,
                         finite=bool(np.all(np.isfinite(np.asarray(x))))))
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

    def cell(r):
        return (f"{r['sliced_wasserstein']:.4f} ({r['nfe']})" if r else "-").rjust(15)

    head = f"{'sampler':>15} | " + " | ".join(f"NFE {b:>4}".rjust(15) for b in cols)
    if adaptive:
        head += " | " + "adaptive".rjust(15)
    lines = [head, "-" * len(head)]
    for name, cells in by.items():
        line = f"{name:>15} | " + " | ".join(cell(cells.get(b)) for b in cols)
        if adaptive:
            line += " | " + cell(cells.get("adaptive"))
        lines.append(line)
    if floor is not None:
        lines.append(f"quality floor (exact samples of the same size vs held-out): {floor:.4f}")
    return "\n".join(lines)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_points(path: str, heldout, panels, title: str) -> None:
    """Scatter plots of 2-D points: the held-out set, then each (name, samples [n, 2])."""
    plt = _pyplot()
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


def image_grid(images, rows: int, cols: int) -> np.ndarray:
    """images [>= rows * cols, H, W, 1] in [-1, 1] -> one [rows (H + 2), cols (W + 2)] picture
    with a one-pixel border (value -1) around each image."""
    imgs = np.asarray(images)[: rows * cols, ..., 0]
    h, w = imgs.shape[1:3]
    imgs = imgs.reshape(rows, cols, h, w)
    pad = np.full((rows, cols, h + 2, w + 2), -1.0)
    pad[:, :, 1:h + 1, 1:w + 1] = imgs
    return pad.transpose(0, 2, 1, 3).reshape(rows * (h + 2), cols * (w + 2))


def plot_images(path: str, samples, heldout, title: str, conditional: bool) -> None:
    """10 x 10 grids of samples (row = class 0..9 when conditional) and of held-out images."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    panels = [("samples" + (" (row = class 0..9)" if conditional else ""), samples),
              ("held-out images", heldout)]
    for ax, (name, imgs) in zip(axes, panels):
        ax.imshow(np.clip(image_grid(imgs, 10, 10), -1, 1), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_json(path: str, obj) -> None:
    """Atomic: a temporary file in the same folder, then os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _plot(path, model, state, key, config, task, rows, samples, names, num_steps, *,
          guidance, title):
    """samples.png: image grids for image data (sampler `names[0]` at `num_steps`, or Heun at
    PLOT_NFE), scatter panels of each sampler's samples nearest PLOT_NFE for points."""
    if task.is_image:
        conditional = bool(state.num_classes)
        grid_labels = np.repeat(np.arange(10, dtype=np.int32), 10) if conditional else None
        name0 = "heun" if "heun" in names and not num_steps else names[0]
        steps0 = num_steps or sampling.steps_for_nfe(name0, PLOT_NFE, config)
        x, info = jax.jit(lambda s, k: sampling.draw_samples(
            model, s, k, config, 100, sampler=name0, num_steps=steps0, labels=grid_labels,
            guidance=guidance))(state, key)
        held = np.asarray(task.heldout)
        if conditional:
            hl = np.asarray(task.heldout_labels)
            held = np.concatenate([held[hl == c][:10] for c in range(10)])
        plot_images(path, np.asarray(x), held, f"{title}: {name0}, NFE {int(info['nfe'])}"
                    + (f", CFG w={guidance}" if conditional else ""), conditional)
        return
    panels = []
    for name in names:
        cands = [(abs(r["nfe"] - PLOT_NFE), i) for i, r in enumerate(rows)
                 if r["sampler"] == name]
        if cands:
            r = rows[min(cands)[1]]
            panels.append((f"{name}, NFE {r['nfe']}: SW {r['sliced_wasserstein']:.3f}",
                           samples[(name, r["num_steps"])]))
    plot_points(path, np.asarray(task.heldout), panels, title)


def sampler_report(model: Model, state, config, task: data_lib.DataTask, outdir: str, *,
                   samplers: Sequence[str] | None = None, num_steps: int | None = None,
                   nfe: Sequence[int] = DEFAULT_NFE, num_samples: int | None = None,
                   seed_index: int = 0, sample_seed: int = 0, guidance: float = 0.0,
                   plot: bool = True, print_fn: Callable = print) -> list[str]:
    """Samples seed `seed_index` of the seed-batched `state` with `samplers` (None: all of the
    model's) at `num_steps` or at each NFE budget of `nfe`, and writes sampler_table.json
    (+ samples.png) to `outdir` (module docstring). Returns the file names written.
    ValueError for an unknown sampler or seed index."""
    settings = sampler_settings(model, config, samplers, num_steps, nfe)
    width = jax.tree.leaves(state.params)[0].shape[0]
    if not 0 <= seed_index < width:
        raise ValueError(f"seed index must be in [0, {width}), got {seed_index}")
    st = sampling.seed_state(state, seed_index)
    step = int(st.step)
    n = int(num_samples or task.heldout.shape[0])
    conditional = bool(st.num_classes)
    labels = (np.resize(np.asarray(task.heldout_labels), n).astype(np.int32) if conditional
              else None)
    if guidance and not conditional:
        print_fn("note: guidance ignored (the model is unconditional)")
    guidance = float(guidance) if conditional else 0.0
    budgets = [] if num_steps else [int(b) for b in nfe]
    print_fn(f"{model.name} on {task.name}: update {step}, seed {seed_index}, {n} samples"
             + (f", guidance w={guidance}" if conditional else ""))
    key = jax.random.key(sample_seed)
    rows, samples = sampler_table(model, st, key, config, task,
                                  [(s, k) for s, k, _ in settings], num_samples=n,
                                  labels=labels, guidance=guidance, print_fn=print_fn)
    for r, (_, _, budget) in zip(rows, settings):
        r["budget"] = budget if budget is not None else r["nfe"]
    ref = data_lib.reference_set(task, n)
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
             f"(cells: distance (exact NFE)); {model.name} on {task.name}, update {step}")
    print_fn(table)

    os.makedirs(outdir, exist_ok=True)
    result = dict(algo=model.name, dataset=task.name, step=step, seed_index=seed_index,
                  num_samples=n, guidance=guidance, heldout_size=int(task.heldout.shape[0]),
                  quality_floor=floor, nfe_budgets=budgets, rows=rows, table_text=table)
    _write_json(os.path.join(outdir, "sampler_table.json"), result)
    written = ["sampler_table.json"]
    if plot:
        names = list(dict.fromkeys(name for name, _, _ in settings))
        _plot(os.path.join(outdir, "samples.png"), model, st, key, config, task, rows, samples,
              names, num_steps, guidance=guidance,
              title=f"{model.name} on {task.name}, update {step}, seed {seed_index}")
        written.append("samples.png")
    print_fn(f"\nWrote {outdir}/: {', '.join(written)}")
    return written
