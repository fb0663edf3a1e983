r"""Command line of the offline-dataset generator (`envs.generation`).

    python -m launch.datasets --env=pendulum             # the five kinds into the cache
    python -m launch.datasets --env=pendulum --force     # regenerate them (repairs any cache state)
    python -m launch.datasets --list                     # registered names, what is cached
    python -m launch.datasets --env=hopper --overrides='{"total_timesteps": 2000}'  # smaller

--overrides is a JSON object merged into the settings `envs.generation_config.GENERATION[env]`
(nested "sac", "episodes", "env_options" merge key by key); with it the set is always
generated (a cached set may come from other settings).

Prints the cache status or, for --env, the references and one row per dataset: transitions,
episodes, mean episode return and its normalized score. Without --force, --env generates when
the cached set is not a complete, intact set of --seed (a file missing, damaged or from another
generation); --force generates without reading the cached files. Both remove the temporaries
of killed generations first.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

import envs
from envs import datasets as datasets_lib
from envs import generation
from envs.generation_config import generation_settings


# ---------------------------------------------------------------------------- summary table
def summary_rows(prefix: str) -> list[dict[str, Any]]:
    """One row per kind of `prefix`: name, transitions, episodes, mean episode return, its
    normalized score and seed; or `problem` ("missing", "damaged: ...", "mixed: ...")."""
    rows = []
    for f in datasets_lib.inspect_set(prefix, read_arrays=True):
        if f.status != "ok":
            rows.append({"name": f.name, "problem": _problem(f)})
            continue
        ds = f.dataset
        returns = datasets_lib.episode_returns(ds)
        ret = float(returns.mean()) if returns.size else float("nan")
        try:
            normalized = datasets_lib.normalized_score(ret, ds)
        except datasets_lib.DatasetError as e:
            rows.append({"name": f.name, "problem": f"damaged: {e}"})
            continue
        rows.append({"name": f.name, "transitions": ds.size, "episodes": int(returns.size),
                     "mean_return": ret, "normalized": normalized,
                     "seed": ds.metadata.get("seed")})
    return rows


def _problem(f: datasets_lib.CachedFile) -> str:
    return "missing" if f.status == "missing" else f"{f.status}: {f.detail}"


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'dataset':<28} {'transitions':>11} {'episodes':>8} {'mean return':>12} "
             f"{'normalized':>10}"]
    for r in rows:
        if r.get("problem") == "missing":
            lines.append(f"{r['name']:<28} {'(not generated)':>11}")
        elif r.get("problem"):
            lines.append(f"{r['name']:<28} ({r['problem']})")
        else:
            lines.append(f"{r['name']:<28} {r['transitions']:>11d} {r['episodes']:>8d} "
                         f"{r['mean_return']:>12.2f} {r['normalized'] + 0.0:>10.1f}")
    return "\n".join(lines)


def list_cache(print_fn: Callable[[str], None]) -> None:
    """Every registered name with its size and status (each cached file read and validated)."""
    print_fn(f"cache: {datasets_lib.cache_dir()}")
    for prefix in datasets_lib.ENVS:
        for f in datasets_lib.inspect_set(prefix, read_arrays=True):
            if f.status == "missing":
                print_fn(f"  {f.name:<28} (not generated)")
                continue
            size = f"{f.path.stat().st_size / 2**20:7.1f} MiB" if f.path.is_file() else ""
            status = "ok" if f.status == "ok" else \
                f"{f.status.upper()}: {f.detail} (repair: {datasets_lib.repair_command(prefix)})"
            print_fn(f"  {f.name:<28} {size:>11} {status}")


# ---------------------------------------------------------------------------- command line
def _define_flags():
    from absl import flags
    flags.DEFINE_string("env", None, "Dataset prefix to generate: "
                        + ", ".join(datasets_lib.ENVS))
    flags.DEFINE_integer("seed", 0, "Root seed of the generation (same seed, same arrays).")
    flags.DEFINE_boolean("force", False, "Regenerate even if all five files are cached "
                         "(repairs a damaged or mixed cache without reading it).")
    flags.DEFINE_boolean("list", False, "List the registered dataset names and cache status.")
    flags.DEFINE_boolean("progress", True, "Show a progress bar.")
    flags.DEFINE_string("overrides", None, "JSON object merged into the generation settings "
                        "of --env (envs.generation_config.GENERATION), e.g. a tiny run: "
                        '\'{"total_timesteps": 2000, "episodes": {"random": 4}}\'.')
    return flags.FLAGS


def main(argv, flags_obj=None, print_fn: Callable[[str], None] = print) -> int:
    try:
        return _main(argv, flags_obj, print_fn)
    except datasets_lib.DatasetError as e:  # an unusable cache directory, a write that failed
        print_fn(f"ERROR: {e}")
        return 2


def _main(argv, fl, print_fn: Callable[[str], None]) -> int:
    if len(argv) > 1:
        print_fn(f"ERROR: unexpected arguments: {argv[1:]}")
        return 2
    if not fl.list and fl.env not in datasets_lib.ENVS:
        print_fn(f"ERROR: --env must be one of {', '.join(datasets_lib.ENVS)}; got {fl.env!r}")
        return 2
    overrides = None
    if getattr(fl, "overrides", None):
        try:
            overrides = json.loads(fl.overrides)
            if not isinstance(overrides, dict):
                raise ValueError(f"a JSON object is needed, got {type(overrides).__name__}")
            settings = generation_settings(fl.env, overrides)
            # the environment's options, checked before anything is compiled
            envs.make(datasets_lib.ENVS[fl.env], **settings["env_options"])
        except (ValueError, ImportError) as e:  # json.JSONDecodeError is a ValueError
            print_fn(f"ERROR: --overrides={fl.overrides!r}: {e}")
            return 2
    removed = datasets_lib.clean_temporaries()
    if removed:
        print_fn(f"removed {len(removed)} temporary file(s) of interrupted writes: "
                 f"{', '.join(p.name for p in removed)}")
    if fl.list:
        list_cache(print_fn)
        return 0
    # --force is decided before any cached file is read: a damaged file must not stop it.
    rows = None if fl.force or overrides else summary_rows(fl.env)
    if rows is None or any(r.get("problem") or r.get("seed") != fl.seed for r in rows):
        t0 = time.perf_counter()
        try:
            generation.generate(fl.env, seed=fl.seed, progress=fl.progress,
                                overrides=overrides)
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
