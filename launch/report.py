"""Host-side reporting: metric files, seed statistics, tables and plots.

Everything here runs between jitted chunks, on numpy arrays. Files live in the workdir:

    config.json        the run's configuration (written once)
    metrics.csv        one row per (logged step, seed): training metrics of the chunk's last update
    eval.csv           one row per (evaluation step, seed)
    tb/                TensorBoard scalars (seed means), written with tensorboardX (no TensorFlow)
    summary.json       final per-seed metrics and their mean / 95% CI / IQM (rliable-style shape)
    learning_curve.png mean over seeds with a 95% bootstrap CI band

Every row carries the step axes after `step` (the update count): `env_steps` / `grad_steps`
where the algorithm defines them (registry's `step_counts`) and `wall_time`, the seconds of
training since the run started (a resumed run continues from the time recorded at its
checkpoint, so time spent stopped is not counted). The plots use env_steps, else grad_steps,
else the update as x-axis; TensorBoard's step is the same axis.
"""
from __future__ import annotations

import csv
import json
import math
import os
import threading
from typing import Any

import numpy as np

CI_RESAMPLES = 2000
# Step axes written beside `step` in every row (the first two where the algorithm defines them).
AXES = ("env_steps", "grad_steps", "wall_time")
TB_FLUSH_SECS = 5  # how stale a live TensorBoard view of a run may be, at most
_INT_COLUMNS = {"step", "seed", "env_steps", "grad_steps"}
# A CI from fewer seeds than this is reported as what it is: the bootstrap of 2-4 values spans
# about their min..max (Agarwal et al. 2021 recommend >= 5 runs for interval estimates).
MIN_SEEDS_FOR_CI = 5
CI_NOTE = f"fewer than {MIN_SEEDS_FOR_CI} seeds: the 95% CI is about the min/max range, not a CI"


def atomic_write_text(path: str, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bootstrap_ci(values: np.ndarray, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of the mean over the last axis (seeds); works on [..., n]."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    if n == 1:
        return values[..., 0], values[..., 0]
    idx = np.random.default_rng(seed).integers(0, n, size=(CI_RESAMPLES, n))
    means = values[..., idx].mean(axis=-1)  # [..., B]
    alpha = (1.0 - level) / 2
    return np.quantile(means, alpha, axis=-1), np.quantile(means, 1 - alpha, axis=-1)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (Agarwal et al. 2021, rliable)."""
    v = np.sort(np.asarray(values, dtype=float).ravel())
    n = v.size
    lo, hi = int(math.floor(0.25 * n)), int(math.ceil(0.75 * n))
    return float(v[lo:hi].mean()) if hi > lo else float(v.mean())


def summarize(values) -> dict[str, float]:
    v = np.asarray(values, dtype=float).ravel()
    lo, hi = bootstrap_ci(v)
    return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "iqm": iqm(v), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def format_table(final: dict[str, np.ndarray], title: str = "") -> str:
    """A plain-text table: one row per metric, mean and 95% CI over seeds."""
    rows = [(name, summarize(v)) for name, v in final.items()]
    width = max([len("metric")] + [len(n) for n, _ in rows])
    lines = [title] if title else []
    lines.append(f"{'metric':<{width}}  {'mean':>12}  {'95% CI':>27}  {'IQM':>12}  seeds")
    for name, s in rows:
        ci = f"[{s['ci_low']:.5g}, {s['ci_high']:.5g}]"
        lines.append(f"{name:<{width}}  {s['mean']:>12.6g}  {ci:>27}  {s['iqm']:>12.6g}  {s['n']}")
    if rows and min(s["n"] for _, s in rows) < MIN_SEEDS_FOR_CI:
        lines.append(f"WARNING: {CI_NOTE}")
    return "\n".join(lines)


class MetricLog:
    """CSV (+ TensorBoard) metric log that survives restarts.

    On resume at step `resume_step`, rows after it (written after the last checkpoint by the
    interrupted process) are dropped, so a resumed run's logs equal an uninterrupted run's.
    """

    def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True,
                 tb_axis: str | None = None):
        """`tb_axis`: the step axis ("env_steps" / "grad_steps") used as TensorBoard's step;
        None: the update count."""
        self.workdir = workdir
        self.tb_axis = tb_axis
        self.rows: dict[str, list[dict[str, Any]]] = {"metrics": [], "eval": []}
        for kind in self.rows:
            path = self._path(kind)
            if os.path.exists(path):
                kept = [r for r in self._read(path) if int(r["step"]) <= resume_step]
                self.rows[kind] = kept
                self._rewrite(kind)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            purge = None
            if resume_step:
                at_resume = [r for r in self.rows["metrics"] if r["step"] == resume_step]
                purge = 1 + int(at_resume[0].get(tb_axis, resume_step) if at_resume and tb_axis
                                else resume_step)
            # Its writer thread flushes every TB_FLUSH_SECS and on close, off the host loop
            # (a flush after every write blocked it).
            self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge,
                                     flush_secs=TB_FLUSH_SECS)

    def wall_time(self) -> float:
        """The largest `wall_time` logged so far (0.0 without any): where a resumed run's
        clock continues from."""
        times = [r["wall_time"] for rows in self.rows.values() for r in rows if "wall_time" in r]
        return max(times, default=0.0)

    def _path(self, kind: str) -> str:
        return os.path.join(self.workdir, f"{kind}.csv")

    @staticmethod
    def _read(path: str) -> list[dict[str, Any]]:
        rows = []
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                for r in reader:
                    try:  # a line cut short by a crash is dropped; an empty cell is absent
                        rows.append({k: (int(float(v)) if k in _INT_COLUMNS else float(v))
                                     for k, v in r.items() if v != ""})
                    except (TypeError, ValueError):
                        continue
        except (UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{path} is not a readable CSV log ({type(e).__name__}: "
                             f"{str(e)[:80]}); move it away to rebuild it from the checkpoints "
                             "or choose another --workdir") from None
        return rows

    def _columns(self, kind: str) -> list[str]:
        present = {k for r in self.rows[kind] for k in r}
        axes = [a for a in AXES if a in present]
        return ["step", "seed"] + axes + sorted(present - {"step", "seed", *axes})

    def _rewrite(self, kind: str) -> None:
        cols = self._columns(kind)
        lines = [",".join(cols)] + [",".join(_cell(r.get(c)) for c in cols)
                                    for r in self.rows[kind]]
        atomic_write_text(self._path(kind), "\n".join(lines) + "\n")

    def write(self, kind: str, step: int, per_seed: dict[str, np.ndarray],
              axes: dict[str, float] | None = None) -> None:
        """Append one row per seed; per_seed maps metric -> [seeds] array; `axes` (the step
        axes of `AXES`, one value for every seed) go beside `step`."""
        names = sorted(per_seed)
        axes = {a: axes[a] for a in AXES if a in (axes or {})}
        num_seeds = len(next(iter(per_seed.values())))
        # A metric named like an axis (a counter the update reports) yields to the axis.
        names = [n for n in names if n not in axes]
        new = [{"step": step, "seed": s, **axes, **{n: float(per_seed[n][s]) for n in names}}
               for s in range(num_seeds)]
        new_columns = not self.rows[kind] or \
            set(self._columns(kind)[2:]) != set(names) | set(axes)
        self.rows[kind].extend(new)
        if new_columns:
            self._rewrite(kind)
        else:
            cols = self._columns(kind)
            with open(self._path(kind), "a") as f:
                for r in new:
                    f.write(",".join(_cell(r.get(c)) for c in cols) + "\n")
        if self._tb is not None:
            tb_step = int(axes.get(self.tb_axis, step)) if self.tb_axis else step
            prefix = "" if kind == "metrics" else "eval/"
            for n in names:
                self._tb.add_scalar(prefix + n, float(np.mean(per_seed[n])), tb_step)
            if kind == "metrics":
                for a, v in {"update": step, **axes}.items():
                    self._tb.add_scalar(f"steps/{a}", float(v), tb_step)

    def last(self, kind: str) -> dict[str, np.ndarray]:
        """Per-seed values of the last logged step (metric -> [seeds]); step axes excluded."""
        rows = self.rows[kind]
        if not rows:
            return {}
        step = rows[-1]["step"]
        last = sorted((r for r in rows if r["step"] == step), key=lambda r: r["seed"])
        return {k: np.array([r[k] for r in last]) for k in last[0]
                if k not in ("step", "seed", *AXES)}

    def axes(self, kind: str) -> dict[str, np.ndarray]:
        """Step axis -> [T] values at the logged steps of `curves(kind)` ("update" included)."""
        rows = self.rows[kind]
        first = {}
        for r in rows:
            first.setdefault(r["step"], r)
        steps = sorted(first)
        out = {"update": np.array(steps, dtype=float)}
        for a in AXES:
            if rows and all(a in first[s] for s in steps):
                out[a] = np.array([first[s][a] for s in steps], dtype=float)
        return out

    def curves(self, kind: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(steps [T], metric -> [T, seeds]) for plotting; step axes excluded (see `axes`)."""
        rows = self.rows[kind]
        if not rows:
            return np.zeros(0), {}
        steps = np.array(sorted({r["step"] for r in rows}))
        seeds = sorted({r["seed"] for r in rows})
        names = [k for k in rows[0] if k not in ("step", "seed", *AXES)]
        out = {n: np.full((len(steps), len(seeds)), np.nan) for n in names}
        pos = {s: i for i, s in enumerate(steps)}
        for r in rows:
            for n in names:
                out[n][pos[r["step"]], r["seed"]] = r.get(n, np.nan)
        return steps, out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _cell(value) -> str:
    return "" if value is None else repr(value)


def x_axis(axes: dict[str, np.ndarray]) -> str:
    """The x-axis that curves use: env_steps, else grad_steps, else the update count."""
    return next(a for a in ("env_steps", "grad_steps", "update") if a in axes)


def preload_plotting() -> None:
    """Imports matplotlib on a daemon thread, so that the learning-curve plot at the end of a
    run does not wait for the import; the runner starts it while XLA compiles, which releases
    the GIL. An import error is left for `plot_learning_curves` to raise."""
    def load():
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except Exception:  # noqa: BLE001 - reported by the real import later
            pass
    threading.Thread(target=load, name="preload-matplotlib", daemon=True).start()


def plot_learning_curves(log: MetricLog, path: str, title: str = "") -> None:
    """Every metric against env_steps (else grad_steps, else updates): mean over seeds with a
    95% bootstrap CI band.

    Drawn on a bare `matplotlib.figure.Figure` (no pyplot state, so any thread may call it)
    with fixed margins: matplotlib's tight layout measures every tick label by drawing the
    figure once more, which doubled the cost of this plot at the end of every run.
    """
    from matplotlib.figure import Figure

    panels = []
    for kind, prefix in (("eval", "eval/"), ("metrics", "")):
        _, curves = log.curves(kind)
        step_axes = log.axes(kind)
        xname = x_axis(step_axes)
        panels += [(prefix + n, xname, step_axes[xname], c) for n, c in curves.items()]
    if not panels:
        return
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    width, height = 4.2 * cols, 3.0 * rows + 0.4  # inches; 0.4 for the title
    fig = Figure(figsize=(width, height))
    # Margins in inches turned into figure fractions: room for tick labels on the left, the
    # x label below each row, each panel's title above it.
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.45 / height,
                        top=1 - 0.85 / height, wspace=0.3, hspace=0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, xname, steps, values) in zip(axes.ravel(), panels):
        mean = np.nanmean(values, axis=1)
        lo, hi = bootstrap_ci(np.nan_to_num(values))
        ax.plot(steps, mean, lw=1.5, marker="o" if len(steps) < 10 else None, ms=3)
        ax.fill_between(steps, lo, hi, alpha=0.3)
        # An explicit title height skips matplotlib's search for the tick labels above the
        # axes; four ticks per axis instead of up to nine halve the tick labels drawn.
        ax.set_title(name, fontsize=9, y=1.0, pad=4)
        ax.set_xlabel(xname.replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(nbins=4)
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{title} (mean, 95% CI over {values.shape[1]} seeds)", fontsize=10)
    # zlib level 1: faster to encode than the default level 6, for a slightly larger file
    fig.savefig(path, dpi=110, pil_kwargs={"compress_level": 1})


def write_summary(path: str, config: dict, final: dict[str, np.ndarray], extra: dict) -> dict:
    """summary.json: config, per-seed final metrics, and mean / CI / IQM per metric; returns
    what it wrote. "ci_note" is CI_NOTE when a CI rests on fewer than MIN_SEEDS_FOR_CI seeds
    (per sweep member), else None."""
    aggregate = {k: summarize(v) for k, v in final.items()}
    seeds = int(config.get("num_seeds", min([a["n"] for a in aggregate.values()], default=0)))
    payload = {
        **extra,
        "config": config,
        "note": ("final (last) values, never a best-so-far; "
                 "CI = 95% percentile bootstrap over seeds"),
        "ci_note": CI_NOTE if seeds < MIN_SEEDS_FOR_CI else None,
        "per_seed": {k: np.asarray(v, dtype=float).tolist() for k, v in final.items()},
        "aggregate": aggregate,
    }
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True))
    return payload


_VERSIONED = ("jax", "jaxlib", "flax", "optax", "gymnax", "orbax-checkpoint", "numpy")


def provenance(source_root: str | None = None) -> dict:
    """{"versions": distribution -> version (None if not installed), "git": {"commit",
    "dirty"} of the checkout at `source_root` (default: this source tree), or None outside a
    git checkout}."""
    from importlib import metadata
    import platform
    import subprocess

    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    root = source_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.SubprocessError):  # no git, or it hangs
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    info = None
    if commit:
        info = {"commit": commit.strip(), "dirty": bool(status and status.strip())}
    return {"versions": versions, "git": info}
