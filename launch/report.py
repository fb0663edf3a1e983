"""Host-side reporting: metric files, seed statistics, tables and plots.

Everything here runs between jitted chunks, on numpy arrays. Files live in the workdir:

    config.json        the run's configuration (written once)
    metrics.csv        one row per (logged step, seed): training metrics of the chunk's last update
    eval.csv           one row per (evaluation step, seed)
    tb/                TensorBoard scalars (seed means), written with tensorboardX (no TensorFlow)
    summary.json       final per-seed metrics and their mean / 95% CI / IQM (rliable-style shape)
    learning_curve.png mean over seeds with a 95% bootstrap CI band
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

import numpy as np

CI_RESAMPLES = 2000


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
    return "\n".join(lines)


class MetricLog:
    """CSV (+ TensorBoard) metric log that survives restarts.

    On resume at step `resume_step`, rows after it (written after the last checkpoint by the
    interrupted process) are dropped, so a resumed run's logs equal an uninterrupted run's.
    """

    def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
        self.workdir = workdir
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
            self._tb = SummaryWriter(os.path.join(workdir, "tb"),
                                     purge_step=resume_step + 1 if resume_step else None)

    def _path(self, kind: str) -> str:
        return os.path.join(self.workdir, f"{kind}.csv")

    @staticmethod
    def _read(path: str) -> list[dict[str, Any]]:
        rows = []
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                for r in reader:
                    try:  # a line cut short by a crash is dropped
                        rows.append({k: (int(v) if k in ("step", "seed") else float(v))
                                     for k, v in r.items()})
                    except (TypeError, ValueError):
                        continue
        except (UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{path} is not a readable CSV log ({type(e).__name__}: "
                             f"{str(e)[:80]}); move it away to rebuild it from the checkpoints "
                             "or choose another --workdir") from None
        return rows

    def _columns(self, kind: str) -> list[str]:
        keys = sorted({k for r in self.rows[kind] for k in r} - {"step", "seed"})
        return ["step", "seed"] + keys

    def _rewrite(self, kind: str) -> None:
        cols = self._columns(kind)
        lines = [",".join(cols)] + [",".join(repr(r.get(c, "")) for c in cols)
                                    for r in self.rows[kind]]
        atomic_write_text(self._path(kind), "\n".join(lines) + "\n")

    def write(self, kind: str, step: int, per_seed: dict[str, np.ndarray]) -> None:
        """Append one row per seed; per_seed maps metric -> [seeds] array."""
        names = sorted(per_seed)
        num_seeds = len(next(iter(per_seed.values())))
        new = [{"step": step, "seed": s, **{n: float(per_seed[n][s]) for n in names}}
               for s in range(num_seeds)]
        new_columns = not self.rows[kind] or set(self._columns(kind)[2:]) != set(names)
        self.rows[kind].extend(new)
        if new_columns:
            self._rewrite(kind)
        else:
            cols = self._columns(kind)
            with open(self._path(kind), "a") as f:
                for r in new:
                    f.write(",".join(repr(r[c]) for c in cols) + "\n")
        if self._tb is not None:
            prefix = "" if kind == "metrics" else "eval/"
            for n in names:
                self._tb.add_scalar(prefix + n, float(np.mean(per_seed[n])), step)
            self._tb.flush()

    def last(self, kind: str) -> dict[str, np.ndarray]:
        """Per-seed values of the last logged step (metric -> [seeds])."""
        rows = self.rows[kind]
        if not rows:
            return {}
        step = rows[-1]["step"]
        last = sorted((r for r in rows if r["step"] == step), key=lambda r: r["seed"])
        return {k: np.array([r[k] for r in last]) for k in last[0] if k not in ("step", "seed")}

    def curves(self, kind: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(steps [T], metric -> [T, seeds]) for plotting."""
        rows = self.rows[kind]
        if not rows:
            return np.zeros(0), {}
        steps = np.array(sorted({r["step"] for r in rows}))
        seeds = sorted({r["seed"] for r in rows})
        names = [k for k in rows[0] if k not in ("step", "seed")]
        out = {n: np.full((len(steps), len(seeds)), np.nan) for n in names}
        pos = {s: i for i, s in enumerate(steps)}
        for r in rows:
            for n in names:
                out[n][pos[r["step"]], r["seed"]] = r.get(n, np.nan)
        return steps, out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_learning_curves(log: MetricLog, path: str, title: str = "") -> None:
    """Every metric against updates: mean over seeds with a 95% bootstrap CI band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for kind, prefix in (("eval", "eval/"), ("metrics", "")):
        steps, curves = log.curves(kind)
        panels += [(prefix + n, steps, c) for n, c in curves.items()]
    if not panels:
        return
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, steps, values) in zip(axes.ravel(), panels):
        mean = np.nanmean(values, axis=1)
        lo, hi = bootstrap_ci(np.nan_to_num(values))
        ax.plot(steps, mean, lw=1.5)
        ax.fill_between(steps, lo, hi, alpha=0.3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{title} (mean, 95% CI over {values.shape[1]} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(path: str, config: dict, final: dict[str, np.ndarray], extra: dict) -> None:
    """summary.json: config, per-seed final metrics, and mean / CI / IQM per metric."""
    payload = {
        **extra,
        "config": config,
        "note": ("final (last) values, never a best-so-far; "
                 "CI = 95% percentile bootstrap over seeds"),
        "per_seed": {k: np.asarray(v, dtype=float).tolist() for k, v in final.items()},
        "aggregate": {k: summarize(v) for k, v in final.items()},
    }
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True))
