"""Tables, across-task aggregates and curves of finished runs: `python -m launch.summarize RUNS`.

Reads each run's summary.json and prints one row per run with the chosen metrics as
"mean [95% CI]" over seeds (final values, never best-so-far), e.g.

    python -m launch.summarize runs/* --metrics=eval/policy_value,eval/optimality_gap
    python -m launch.summarize runs/* --pivot=eval/normalized_score   # dataset x algorithm
    python -m launch.summarize runs/* --aggregate=eval/normalized_score \\
        --improvement=td3_bc,bc --profile=profile.png --curves=curves.png --x=grad_steps

`--aggregate` adds the statistics of Agarwal et al. 2021 (`launch/aggregates.py`) per
algorithm over all its runs (seeds) and tasks (env / dataset): IQM, mean and median of task
means, optimality gap, with stratified bootstrap 95% CIs; `--improvement=X,Y` the probability
that a run of X beats a run of Y on the same task; `--profile` the performance profile (fraction
of runs above each score tau, with 95% bands) as a PNG. `--curves` plots the metric against
`--x` (update, or the env_steps / grad_steps / wall_time columns of metrics.csv when the runs
logged them), mean over seeds with a 95% CI band, one panel per task.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

from launch import aggregates

X_AXES = ("update", "env_steps", "grad_steps", "wall_time")


def load(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def cell(agg: dict | None) -> str:
    if agg is None:
        return "-"
    return f"{agg['mean']:.4g} [{agg['ci_low']:.4g}, {agg['ci_high']:.4g}]"


class InputError(ValueError):
    """Bad flags or run folders: reported as one line, exit status 2."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (with summary.json)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names (default: every eval/ metric)")
    parser.add_argument("--pivot", default=None,
                        help="one metric as a matrix: a row per env/dataset, a column per algo")
    parser.add_argument("--aggregate", default=None, metavar="METRIC",
                        help="IQM / mean / median / optimality gap of METRIC's final values "
                             "per algorithm across runs x tasks, stratified bootstrap 95%% CIs")
    parser.add_argument("--improvement", action="append", default=[], metavar="X,Y",
                        help="probability of improvement P(X > Y) of algorithm X over Y on "
                             "--aggregate's metric, averaged over their common tasks "
                             "(repeatable)")
    parser.add_argument("--profile", default=None, metavar="PNG",
                        help="performance profile of --aggregate's metric (fraction of runs "
                             "with score > tau, 95%% bands) written to this PNG")
    parser.add_argument("--taus", default=None, metavar="LO:HI:COUNT",
                        help="profile thresholds (default: COUNT=101 from the lowest to the "
                             "highest score)")
    parser.add_argument("--gamma", type=float, default=100.0,
                        help="optimality gap target: gamma - E[min(score, gamma)] (default "
                             "100, the expert of normalized scores)")
    parser.add_argument("--reps", type=int, default=aggregates.INTERVAL_RESAMPLES,
                        help="bootstrap resamples of the aggregate and P(X > Y) CIs")
    parser.add_argument("--curves", default=None, metavar="PNG",
                        help="learning curves of --aggregate's (else --pivot's, else "
                             "eval/normalized_score) metric against --x, one panel per task")
    parser.add_argument("--x", default="update", choices=X_AXES,
                        help="x-axis of --curves and of the table's progress column "
                             "(update = runner updates; the others need those metrics.csv "
                             "columns)")
    args = parser.parse_args(argv)
    summaries = [(d, load(d)) for d in args.runs]
    missing = [d for d, s in summaries if s is None]
    if missing:
        print(f"skipping runs without summary.json: {', '.join(missing)}", file=sys.stderr)
    summaries = [(d, s) for d, s in summaries if s is not None]
    if not summaries:
        print("no finished runs given", file=sys.stderr)
        return 1
    try:
        _check_flags(args, summaries)
        if args.pivot:
            _pivot(summaries, args.pivot)
        elif not args.aggregate or args.metrics:
            _table(args, summaries)
        if args.aggregate:
            _aggregates(args, summaries)
        if args.curves:
            _curves(args, summaries)
    except InputError as e:
        print(f"launch.summarize: {e}", file=sys.stderr)
        return 2
    return 0


def _check_flags(args, summaries) -> None:
    """Every flag checked against the runs before anything is printed or written."""
    if args.reps < 1:
        raise InputError(f"--reps={args.reps}: must be a positive number of resamples")
    for flag in ("improvement", "profile", "taus"):
        if getattr(args, flag) and not args.aggregate:
            raise InputError(f"--{flag} needs --aggregate=METRIC (the metric it compares)")
    if args.taus:
        _parse_taus(args.taus, [np.zeros(1)])
    if args.aggregate:
        scores = _scores_by_algo(summaries, args.aggregate)
        for pair in args.improvement:
            _parse_pair(pair, scores)
    if args.x != "update":
        for run_dir, _ in summaries:
            _x_column_check(run_dir, args.x)
    for path in (args.profile, args.curves):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise InputError(f"{path}: folder {folder} does not exist")
    if args.curves and not any(_curve(d, _curve_metric(args), "update") for d, _ in summaries):
        raise InputError(f"--curves: no run logged {_curve_metric(args)} (name the metric with "
                         "--aggregate=METRIC or --pivot=METRIC)")


def _curve_metric(args) -> str:
    return args.aggregate or args.pivot or "eval/normalized_score"


def _table(args, summaries) -> None:
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    else:
        metrics = sorted({m for _, s in summaries for m in s["aggregate"] if m.startswith("eval/")})
    progress = "updates" if args.x == "update" else args.x
    print(f"| algo | env | seeds | {progress} | " + " | ".join(metrics) + " |")
    print("|---" * (4 + len(metrics)) + "|")
    for run_dir, s in summaries:
        cfg = s["config"]
        if args.x == "update":
            done = str(cfg.get("config", {}).get("num_updates", "?"))
        else:
            done = f"{_final_x(run_dir, args.x):.6g}"
        row = [cfg.get("algo", "?"), str(cfg.get("env", "-")), str(cfg.get("num_seeds", "?")),
               done]
        row += [cell(s["aggregate"].get(m)) for m in metrics]
        print("| " + " | ".join(row) + " |")


def _pivot(summaries, metric: str) -> None:
    """Rows: env / dataset; columns: algorithms in first-seen order; cells: mean [95% CI]."""
    cells, algos, rows = {}, [], []
    for _, s in summaries:
        algo, env = s["config"].get("algo", "?"), str(s["config"].get("env", "-"))
        algos += [algo] if algo not in algos else []
        rows += [env] if env not in rows else []
        agg = s["aggregate"].get(metric)
        cells[env, algo] = f"{agg['mean']:.1f} [{agg['ci_low']:.1f}, {agg['ci_high']:.1f}]" \
            if agg else "-"
    print(f"| {metric} | " + " | ".join(algos) + " |")
    print("|---" * (1 + len(algos)) + "|")
    for env in rows:
        print(f"| {env} | " + " | ".join(cells.get((env, a), "-") for a in algos) + " |")


# ----------------------------------------------------------------------------- aggregates


def _members(summary: dict) -> list[tuple[str, slice]]:
    """(algorithm label, slice of the per-seed lists) per sweep member; one without a sweep."""
    algo = str(summary["config"].get("algo", "?"))
    members = summary.get("members") or [{}]
    n = len(next(iter(summary.get("per_seed", {}).values()), [])) // len(members)
    out = []
    for i, m in enumerate(members):
        suffix = ",".join(f"{k}={v:g}" for k, v in sorted(m.items()))
        out.append((f"{algo}[{suffix}]" if suffix else algo, slice(i * n, (i + 1) * n)))
    return out


def _scores_by_algo(summaries, metric: str) -> dict[str, dict[str, np.ndarray]]:
    """algorithm -> task -> final per-seed values of `metric`, pooled over run folders."""
    scores: dict[str, dict[str, list[float]]] = {}
    for run_dir, s in summaries:
        per_seed = s.get("per_seed", {})
        if metric not in per_seed:
            known = ", ".join(sorted(per_seed)) or "none (summary.json has no per_seed)"
            raise InputError(f"--aggregate={metric}: {run_dir}/summary.json has no per-seed "
                             f"values of it (its metrics: {known})")
        if not np.all(np.isfinite(np.asarray(per_seed[metric], dtype=float))):
            raise InputError(f"--aggregate={metric}: {run_dir}/summary.json holds non-finite "
                             f"values of it: {per_seed[metric]}")
        task = str(s["config"].get("env", "-"))
        for label, part in _members(s):
            scores.setdefault(label, {}).setdefault(task, []).extend(per_seed[metric][part])
    return {a: {t: np.asarray(v, dtype=float) for t, v in by_task.items()}
            for a, by_task in scores.items()}


def _parse_pair(pair: str, scores) -> tuple[str, str, list[str]]:
    names = [p.strip() for p in pair.split(",")]
    if len(names) != 2 or not all(names):
        raise InputError(f"--improvement={pair}: expected two algorithms as X,Y")
    unknown = [n for n in names if n not in scores]
    if unknown:
        raise InputError(f"--improvement={pair}: no runs of {', '.join(unknown)} "
                         f"(algorithms given: {', '.join(scores)})")
    x, y = names
    common = [t for t in scores[x] if t in scores[y]]
    if not common:
        raise InputError(f"--improvement={pair}: {x} and {y} share no task ({x}: "
                         f"{', '.join(scores[x])}; {y}: {', '.join(scores[y])})")
    return x, y, common


def _parse_taus(spec: str, all_scores: list[np.ndarray]) -> np.ndarray:
    if spec is None:
        pooled = np.concatenate(all_scores)
        return np.linspace(pooled.min(), pooled.max(), 101)
    try:
        lo, hi, count = spec.split(":")
        lo, hi, count = float(lo), float(hi), int(count)
    except ValueError:
        raise InputError(f"--taus={spec}: expected LO:HI:COUNT, e.g. 0:100:101") from None
    if count < 2 or not hi > lo:
        raise InputError(f"--taus={spec}: needs HI > LO and COUNT >= 2")
    return np.linspace(lo, hi, count)


def _fmt(point, lo, hi) -> str:
    return f"{float(point):.4g} [{float(lo):.4g}, {float(hi):.4g}]"


def _aggregates(args, summaries) -> None:
    metric = args.aggregate
    scores = _scores_by_algo(summaries, metric)
    tasks = sorted({t for by_task in scores.values() for t in by_task})
    print(f"{metric}: final values per algorithm across runs x tasks; stratified bootstrap "
          f"95% CIs ({args.reps} resamples)")
    print(f"| algo | tasks | runs | IQM | mean | median | optimality gap (gamma={args.gamma:g}) |")
    print("|---" * 7 + "|")
    statistics = (aggregates.interquartile_mean, aggregates.mean_of_task_means,
                  aggregates.median_of_task_means,
                  lambda s: aggregates.optimality_gap(s, gamma=args.gamma))
    for algo, by_task in scores.items():
        runs = list(by_task.values())
        cells = [_fmt(*aggregates.stratified_bootstrap(f, runs, reps=args.reps))
                 for f in statistics]
        print(f"| {algo} | {len(runs)} | {sum(r.size for r in runs)} | " + " | ".join(cells)
              + " |")
    partial = [a for a, by_task in scores.items() if len(by_task) < len(tasks)]
    if partial:
        print(f"note: {', '.join(partial)} lack runs on some of the {len(tasks)} tasks "
              f"({', '.join(tasks)}); their aggregates cover fewer tasks", file=sys.stderr)
    few = sorted({a for a, by_task in scores.items() for r in by_task.values() if r.size < 5})
    if few:
        print(f"note: fewer than 5 runs on a task for {', '.join(few)}: percentile bootstrap "
              "CIs from so few runs cover less than their nominal 95%", file=sys.stderr)
    if args.improvement:
        print()
        print(f"| P(X > Y), {metric} | value [95% CI] | tasks |")
        print("|---|---|---|")
        for pair in args.improvement:
            x, y, common = _parse_pair(pair, scores)
            estimate = aggregates.stratified_bootstrap(
                aggregates.probability_of_improvement, [scores[x][t] for t in common],
                [scores[y][t] for t in common], reps=args.reps)
            print(f"| {x} > {y} | {estimate[0]:.2f} [{estimate[1]:.2f}, {estimate[2]:.2f}] | "
                  f"{len(common)} |")
    if args.profile:
        print()
        _profile(args, metric, scores)


def _profile(args, metric: str, scores) -> None:
    """Plot the score distributions with 95% bands and print them at five thresholds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = _parse_taus(args.taus, [r for by_task in scores.values() for r in by_task.values()])
    curves = {algo: aggregates.stratified_bootstrap(
                  lambda s: aggregates.score_distribution(s, taus), list(by_task.values()),
                  reps=min(args.reps, aggregates.PROFILE_RESAMPLES))
              for algo, by_task in scores.items()}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for algo, (profile, lo, hi) in curves.items():
        (line,) = ax.plot(taus, profile, lw=1.6, label=algo)
        ax.fill_between(taus, lo, hi, color=line.get_color(), alpha=0.25)
    ax.set_xlabel(f"{metric} (tau)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("performance profile, 95% stratified bootstrap bands", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.profile, dpi=110)
    plt.close(fig)
    shown = np.linspace(0, len(taus) - 1, 5).round().astype(int)
    print(f"| tau ({metric}) | " + " | ".join(scores) + " |")
    print("|---" * (1 + len(scores)) + "|")
    for i in shown:
        row = [f"{curves[a][0][i]:.2f} [{curves[a][1][i]:.2f}, {curves[a][2][i]:.2f}]"
               for a in scores]
        print(f"| {taus[i]:.4g} | " + " | ".join(row) + " |")
    print(f"performance profile ({len(taus)} thresholds) written to {args.profile}")


# ------------------------------------------------------------------------------- x-axes


def _read_csv(path: str) -> tuple[list[str], list[dict[str, float]]]:
    """(columns, rows as floats) of a runner CSV log; an empty cell is left out of its row,
    a line cut short by a crash is dropped."""
    if not os.path.exists(path):
        return [], []
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for r in reader:
            try:
                rows.append({k: float(v) for k, v in r.items() if v != ""})
            except (TypeError, ValueError):
                continue
        return list(reader.fieldnames or []), rows


def _x_column_check(run_dir: str, x: str) -> None:
    if x == "update":
        return
    columns, _ = _read_csv(os.path.join(run_dir, "metrics.csv"))
    if x not in columns:
        present = [c for c in X_AXES[1:] if c in columns]
        raise InputError(f"--x={x}: {run_dir}/metrics.csv has no {x} column (x-axes this run "
                         f"offers: {', '.join(['update'] + present)})")


def _x_by_step(rows: list[dict[str, float]], x: str) -> tuple[np.ndarray, np.ndarray]:
    """(logged updates, mean over seeds of x there) over the rows that carry x."""
    steps = np.array(sorted({r["step"] for r in rows if x in r}))
    means = np.array([np.mean([r[x] for r in rows if r["step"] == s and x in r]) for s in steps])
    return steps, means


def _x_of_steps(run_dir: str, x: str, steps: np.ndarray,
                rows: list[dict[str, float]] | None = None) -> np.ndarray:
    """The x value (mean over seeds) at each runner update in `steps`: from `rows` (the log
    the values come from) where they carry it, else from metrics.csv, interpolated linearly
    between its logged updates."""
    if x == "update":
        return steps.astype(float)
    logged, means = _x_by_step(rows or [], x)
    if not set(steps) <= set(logged):
        _x_column_check(run_dir, x)
        logged, means = _x_by_step(_read_csv(os.path.join(run_dir, "metrics.csv"))[1], x)
    return np.interp(steps, logged, means)


def _final_x(run_dir: str, x: str) -> float:
    _x_column_check(run_dir, x)
    _, rows = _read_csv(os.path.join(run_dir, "metrics.csv"))
    last = max(r["step"] for r in rows)
    return float(_x_of_steps(run_dir, x, np.array([last]), rows)[0])


def _curve(run_dir: str, metric: str, x: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(x [T], values [T, seeds]) of `metric` in a run's eval.csv (eval/ names) or
    metrics.csv; None when the run did not log it."""
    kind, column = ("eval", metric[5:]) if metric.startswith("eval/") else ("metrics", metric)
    columns, rows = _read_csv(os.path.join(run_dir, f"{kind}.csv"))
    rows = [r for r in rows if column in r]
    if column not in columns or not rows:
        return None
    steps = np.array(sorted({r["step"] for r in rows}))
    seeds = sorted({int(r["seed"]) for r in rows})
    values = np.full((steps.size, len(seeds)), np.nan)
    row_of, col_of = {s: i for i, s in enumerate(steps)}, {s: j for j, s in enumerate(seeds)}
    for r in rows:
        values[row_of[r["step"]], col_of[int(r["seed"])]] = r[column]
    return _x_of_steps(run_dir, x, steps, rows), values


def _curves(args, summaries) -> None:
    """One panel per task, one line per algorithm (sweep member): mean over its seeds with a
    95% bootstrap band, against --x."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from launch.report import bootstrap_ci

    metric = _curve_metric(args)
    panels: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for run_dir, s in summaries:
        curve = _curve(run_dir, metric, args.x)
        if curve is None:
            print(f"note: {run_dir} logged no {metric}; left out of {args.curves}",
                  file=sys.stderr)
            continue
        xs, values = curve
        task = str(s["config"].get("env", "-"))
        for label, part in _members(s) if s.get("members") else [(None, slice(None))]:
            label = label or str(s["config"].get("algo", "?"))
            panels.setdefault(task, []).append((label, xs, values[:, part]))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    for ax, (task, lines) in zip(axes.ravel(), panels.items()):
        for label, xs, values in lines:
            lo, hi = bootstrap_ci(np.nan_to_num(values))
            (line,) = ax.plot(xs, np.nanmean(values, axis=1), lw=1.5,
                              label=f"{label} ({values.shape[1]})")
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.25)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(args.x)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{metric}: mean over seeds (count in legend), 95% bootstrap CI", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.curves, dpi=110)
    plt.close(fig)
    print(f"learning curves of {metric} against {args.x} written to {args.curves}")


if __name__ == "__main__":
    sys.exit(main())
