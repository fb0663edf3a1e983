"""First run vs rerun wall time of `python -m launch.run` with JAX's persistent compilation cache.

    python benchmarks/rerun.py                  # the default command and PPO on CartPole-v1
    python benchmarks/rerun.py --repeats=2
    python benchmarks/rerun.py --case="--algo=dqn --env=CartPole-v1 --config.num_updates=20"

Each case runs as a fresh subprocess three times, each time in a new empty workdir (a rerun
here is a new run of the same command, not a resume):

    no cache   --compilation_cache=none
    first      --compilation_cache=<a new empty folder>: compiles, and writes the cache
    second     the same folder again: loads the compiled programs

The wall time is the whole process (Python and JAX start-up, dataset loading, compilation,
training, evaluation, reports), measured from outside. Cases train few updates, so compilation
is most of a run. Prints the load average beside the table: on a shared machine the times
are only comparable within a row.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = (
    ("default (iql, pendulum-medium-v0)", "--config.num_updates=2"),
    ("ppo CartPole-v1", "--algo=ppo --env=CartPole-v1 --config.num_updates=8"),
)


def _run(args: list[str], cache: str, workdir: str) -> float:
    command = [sys.executable, "-m", "launch.run", *args, "--noprogress",
               f"--compilation_cache={cache}", f"--workdir={workdir}"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {shlex.join(command)}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return seconds


def _folder_size(path: str) -> tuple[int, int]:
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    return len(files), sum(os.path.getsize(f) for f in files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=None,
                        help="launch.run flags of a case (repeatable; default: the two above)")
    parser.add_argument("--repeats", type=int, default=1, help="rows per case")
    args = parser.parse_args(argv)
    cases = [(c, c) for c in args.case] if args.case else list(CASES)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs")
    print("| case | no cache (s) | first run, cold cache (s) | second run, warm cache (s) "
          "| second / first | cache files, MB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="rerun-bench-") as tmp:
        for name, flags in cases:
            for _ in range(args.repeats):
                base = os.path.join(tmp, f"{len(os.listdir(tmp))}")
                os.makedirs(base)
                cache = os.path.join(base, "cache")
                os.makedirs(cache)
                flag_list = shlex.split(flags)
                none = _run(flag_list, "none", os.path.join(base, "w0"))
                first = _run(flag_list, cache, os.path.join(base, "w1"))
                second = _run(flag_list, cache, os.path.join(base, "w2"))
                n, size = _folder_size(cache)
                print(f"| {name} | {none:.1f} | {first:.1f} | {second:.1f} | "
                      f"{second / first:.2f} | {n}, {size / 2**20:.1f} |", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
