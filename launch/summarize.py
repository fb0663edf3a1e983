"""Markdown table of finished runs: `python -m launch.summarize RUN_DIR [RUN_DIR ...]`.

Reads each run's summary.json and prints one row per run with the chosen metrics as
"mean [95% CI]" over seeds (final values, never best-so-far), e.g.

    python -m launch.summarize runs/* --metrics=eval/policy_value,eval/optimality_gap
    python -m launch.summarize runs/* --pivot=eval/normalized_score   # dataset x algorithm
"""
from __future__ import annotations

import argparse
import json
import os
import sys


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (with summary.json)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names (default: every eval/ metric)")
    parser.add_argument("--pivot", default=None,
                        help="one metric as a matrix: a row per env/dataset, a column per algo")
    args = parser.parse_args(argv)
    summaries = [(d, load(d)) for d in args.runs]
    missing = [d for d, s in summaries if s is None]
    if missing:
        print(f"skipping runs without summary.json: {', '.join(missing)}", file=sys.stderr)
    summaries = [(d, s) for d, s in summaries if s is not None]
    if not summaries:
        print("no finished runs given", file=sys.stderr)
        return 1
    if args.pivot:
        return _pivot(summaries, args.pivot)
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    else:
        metrics = sorted({m for _, s in summaries for m in s["aggregate"] if m.startswith("eval/")})
    print("| algo | env | seeds | updates | " + " | ".join(metrics) + " |")
    print("|---" * (4 + len(metrics)) + "|")
    for _, s in summaries:
        cfg = s["config"]
        row = [cfg.get("algo", "?"), str(cfg.get("env", "-")), str(cfg.get("num_seeds", "?")),
               str(cfg["config"].get("num_updates", "?"))]
        row += [cell(s["aggregate"].get(m)) for m in metrics]
        print("| " + " | ".join(row) + " |")
    return 0


def _pivot(summaries, metric: str) -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
