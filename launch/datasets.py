r"""Command line of the offline-dataset generator (`envs.generation`).

    python -m launch.datasets --env=pendulum             # the five kinds into the cache
    python -m launch.datasets --env=pendulum --force     # regenerate them
    python -m launch.datasets --list                     # registered names, what is cached

Prints the cache status or, for --env, the references and one row per dataset: transitions,
episodes, mean episode return and its normalized score.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from envs import datasets as datasets_lib
from envs import generation


# ---------------------------------------------------------------------------- summary table
def summary_rows(prefix: str) -> list[dict[str, Any]]:
    """One row per kind of `prefix` that is in the cache: name, transitions, episodes, mean
    episode return and its normalized score."""
    rows = []
    for kind in datasets_lib.KINDS:
        name = f"{prefix}-{kind}-v0"
        path = datasets_lib.dataset_path(name)
        if not path.is_file():
            rows.append({"name": name, "missing": True})
            continue
        ds = datasets_lib.load_hdf5(path)
        returns = datasets_lib.episode_returns(ds)
        ret = float(returns.mean()) if returns.size else float("nan")
        rows.append({"name": name, "transitions": ds.size,
                     "episodes": int(returns.size), "mean_return": ret,
                     "normalized": datasets_lib.normalized_score(ret, ds),
                     "seed": ds.metadata.get("seed")})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'dataset':<28} {'transitions':>11} {'episodes':>8} {'mean return':>12} "
             f"{'normalized':>10}"]
    for r in rows:
        if r.get("missing"):
            lines.append(f"{r['name']:<28} {'(not generated)':>11}")
        else:
            lines.append(f"{r['name']:<28} {r['transitions']:>11d} {r['episodes']:>8d} "
                         f"{r['mean_return']:>12.2f} {r['normalized'] + 0.0:>10.1f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
def _define_flags():
    from absl import flags
    flags.DEFINE_string("env", None, "Dataset prefix to generate: "
                        + ", ".join(datasets_lib.ENVS))
    flags.DEFINE_integer("seed", 0, "Root seed of the generation (same seed, same arrays).")
    flags.DEFINE_boolean("force", False, "Regenerate even if all five files are cached.")
    flags.DEFINE_boolean("list", False, "List the registered dataset names and cache status.")
    flags.DEFINE_boolean("progress", True, "Show a progress bar.")
    return flags.FLAGS


def main(argv, flags_obj=None, print_fn: Callable[[str], None] = print) -> int:
    fl = flags_obj
    if len(argv) > 1:
        print_fn(f"ERROR: unexpected arguments: {argv[1:]}")
        return 2
    if fl.list:
        print_fn(f"cache: {datasets_lib.cache_dir()}")
        for name in datasets_lib.dataset_names():
            path = datasets_lib.dataset_path(name)
            status = f"{path.stat().st_size / 2**20:7.1f} MiB" if path.is_file() else \
                "(not generated)"
            print_fn(f"  {name:<28} {status}")
        return 0
    if fl.env not in datasets_lib.ENVS:
        print_fn(f"ERROR: --env must be one of {', '.join(datasets_lib.ENVS)}; got {fl.env!r}")
        return 2
    rows = summary_rows(fl.env)
    stale = [r["name"] for r in rows if r.get("missing") or r.get("seed") != fl.seed]
    if fl.force or stale:
        t0 = time.perf_counter()
        try:
            generation.generate(fl.env, seed=fl.seed, progress=fl.progress)
        except ImportError as e:  # an optional extra (brax) is missing
            print_fn(f"ERROR: {e}")
            return 2
        print_fn(f"generated the {fl.env} datasets (seed {fl.seed}) in "
                 f"{time.perf_counter() - t0:.1f} s into {datasets_lib.cache_dir()}")
        rows = summary_rows(fl.env)
    else:
        print_fn(f"cached in {datasets_lib.cache_dir()} (--force regenerates)")
    meta = datasets_lib.load_metadata(f"{fl.env}-random-v0")
    print_fn(f"{fl.env} ({meta['env']}): ref_min_score {meta['ref_min_score']:.2f} (random), "
             f"ref_max_score {meta['ref_max_score']:.2f} (expert)")
    print_fn(format_table(rows))
    return 0


if __name__ == "__main__":
    from absl import app

    _FLAGS = _define_flags()
    app.run(lambda argv: sys.exit(main(argv, _FLAGS)))
