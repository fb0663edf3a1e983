r"""Train any registered algorithm: `python -m launch.run --algo=NAME [--env=ENV | --dataset=D]`.

Examples:
  python -m launch.run --algo=iql                        # IQL on pendulum-medium-v0
  python -m launch.run --algo=cql --dataset=reacher-medium-v0 --num_seeds=5
  python -m launch.run --algo=value_iteration            # the book's grid world
  python -m launch.run --algo=q_learning --num_seeds=8
  python -m launch.run --algo=value_iteration --config.gamma=0.5 --config.env.r_forbidden=-10
  python -m launch.run --algo=sarsa --config.env.layout='..T/.#./...' --config.env.slip_prob=0.1

Every field of the algorithm's `default_config()` is a flag `--config.<field>` (typos and
wrong types are rejected), and the environment's options are `--config.env.<option>`.
Nothing here knows an algorithm family: the module's protocol members (launch/registry.py)
say which flag names its task (TASK_FLAG), build the task (make_task), pick the metric shown
first (PRIMARY_METRIC) and write its own outputs after training (artifacts).
`--workdir` defaults to runs/<algo>-<env>-<hash of the config>; rerunning the same command
resumes from the last checkpoint there.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

import envs
from launch import registry

DEFAULT_ALGO = "iql"


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of --name=V / --name V in argv before absl parses it (it shapes --config)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def build_config(algo_name: str, task_name: str | None) -> ConfigDict:
    """The algorithm's default config plus `env`: the options of the environment it is
    trained in (empty unless the algorithm's TASK_FLAG is "env")."""
    algo = registry.get(algo_name)
    config = algo.default_config()
    options = envs.env_options(task_name) if algo.TASK_FLAG == "env" and task_name else {}
    with config.unlocked():
        config.env = ConfigDict(options)
    return config


def _default_config_for_flags(argv: list[str]) -> ConfigDict:
    algo_name = _flag_value(argv, "algo") or DEFAULT_ALGO
    if algo_name not in registry.ALGORITHMS:
        return ConfigDict()  # absl's enum check reports the unknown name and the choices
    algo = registry.get(algo_name)
    task_name = (_flag_value(argv, algo.TASK_FLAG) if algo.TASK_FLAG else None) \
        or algo.DEFAULT_TASK
    try:
        return build_config(algo_name, task_name)
    except ValueError:
        return algo.default_config()  # main() reports the bad env


def _config_paths(config: ConfigDict, prefix: str = "config") -> list[str]:
    out = []
    for key, value in config.items():
        out.append(f"{prefix}.{key}")
        if isinstance(value, ConfigDict):
            out += _config_paths(value, f"{prefix}.{key}")
    return out


def _check_config_keys(argv: list[str], config: ConfigDict) -> None:
    """Reject --config.<typo> with the valid keys (config_flags would raise a bare traceback)."""
    valid = _config_paths(config)
    for arg in argv[1:]:
        if arg.startswith("--config."):
            path = arg[2:].split("=", 1)[0]
            if path not in valid:
                leaves = [p for p in valid if not isinstance(config_get(config, p), ConfigDict)]
                _fail(f"unknown config key {path!r}; valid keys: {', '.join(leaves)}")


def config_get(config: ConfigDict, path: str):
    node = config
    for part in path.split(".")[1:]:
        node = node[part]
    return node


def _fail(message: str):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(2)


_DEFAULT_CONFIG = _default_config_for_flags(sys.argv)
if __name__ == "__main__":
    _check_config_keys(sys.argv, _DEFAULT_CONFIG)  # before config_flags parses the overrides

flags.DEFINE_enum("algo", DEFAULT_ALGO, registry.names(),
                  "Algorithm to train. One of: " + ", ".join(registry.names()))
flags.DEFINE_string("env", None, "Environment, for algorithms trained in one (default: the "
                    "algorithm's DEFAULT_TASK). Our grid worlds (gridworld, gridworld-walls, "
                    "gridworld-episodic) or any gymnax id.")
flags.DEFINE_string("dataset", None, "Dataset, for algorithms trained on data (default: the "
                    "algorithm's DEFAULT_TASK). Offline RL: a generated name such as "
                    "pendulum-medium-v0 (made on first use, see `python -m launch.datasets "
                    "--list`), a D4RL-format .hdf5 path or minari:<id>; diffusion models: moons, "
                    "8gaussians, swissroll, digits.")
flags.DEFINE_integer("num_seeds", 4, "Seeds trained at once as one vmapped program.")
flags.DEFINE_integer("seed", 0, "Root seed; seed i uses split(key(seed), num_seeds)[i].")
flags.DEFINE_string("workdir", None, "Output directory (default runs/<algo>-<env>-<hash>).")
flags.DEFINE_boolean("progress", True, "Show a progress bar.")
flags.DEFINE_boolean("artifacts", True, "After training, write the algorithm's own outputs "
                     "(tabular: values/policy grids and a picture; diffusion models: every "
                     "sampler at NFE 10/35/100 into a sliced-Wasserstein table and a picture).")
flags.DEFINE_boolean("extend", False, "Continue a finished run in --workdir to a larger "
                     "--config.num_updates (without it, a changed num_updates is refused).")
flags.DEFINE_string("sweep", None, "Numeric hyperparameters trained side by side in one vmapped "
                    "program, e.g. 'lr=3e-4,1e-3;clip_eps=0.1,0.2' (the algorithm's SWEEPABLE).")
_CONFIG = config_flags.DEFINE_config_dict("config", _DEFAULT_CONFIG,
                                          "Hyperparameters; see the algorithm's default_config.",
                                          lock_config=True)
FLAGS = flags.FLAGS


def default_workdir(algo_name: str, env_name: str | None, config: ConfigDict,
                    num_seeds: int, seed: int, sweep: dict | None = None) -> str:
    blob = json.dumps({"config": json.loads(config.to_json_best_effort()),
                       "num_seeds": num_seeds, "seed": seed, "sweep": sweep}, sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
    return os.path.join("runs", f"{algo_name}-{env_name or 'none'}-{digest}")


def parse_sweep(text: str | None) -> dict[str, list[float]] | None:
    """'lr=3e-4,1e-3;clip_eps=0.1,0.2' -> {'lr': [3e-4, 1e-3], 'clip_eps': [0.1, 0.2]}."""
    if not text:
        return None
    sweep = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip()
        if name in sweep:
            _fail(f"--sweep: {name!r} is given twice; list all its values once: "
                  f"{name}=V1,V2,...")
        try:
            sweep[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            _fail(f"--sweep: values of {name!r} must be numbers, got {values!r}")
        if not sweep[name]:
            _fail(f"--sweep: no values for {name!r}; expected NAME=V1,V2[;NAME2=...]")
        if not all(math.isfinite(v) for v in sweep[name]):
            _fail(f"--sweep: values of {name!r} must be finite numbers, got {values!r}")
    return sweep


def task_label(name: str | None) -> str:
    """A short name for the task in workdir names and titles (a path's file stem)."""
    if not name:
        return "none"
    return os.path.splitext(os.path.basename(name))[0].replace(":", "-")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from launch import runner  # after flag parsing: imports jax
    from algorithms.core import config_rules
    from launch import workdir as workdir_lib

    algo_name = FLAGS.algo
    algo = registry.get(algo_name)
    config = _CONFIG.value
    if FLAGS.num_seeds < 1:
        _fail(f"--num_seeds must be >= 1, got {FLAGS.num_seeds}")
    given = {"env": FLAGS.env, "dataset": FLAGS.dataset}
    for flag, value in given.items():
        if value and flag != algo.TASK_FLAG:
            takes = f"--{algo.TASK_FLAG}" if algo.TASK_FLAG else "neither --env nor --dataset"
            _fail(f"algorithm {algo_name!r} takes {takes}; drop --{flag}")
    task_name = (given[algo.TASK_FLAG] if algo.TASK_FLAG else None) or algo.DEFAULT_TASK
    label = task_label(task_name)
    sweep = parse_sweep(FLAGS.sweep)
    workdir = FLAGS.workdir or default_workdir(algo_name, label, config, FLAGS.num_seeds,
                                               FLAGS.seed, sweep)
    try:
        # Checked before a dataset is generated or anything is compiled or written:
        config_rules.check(config, algo)
        workdir_lib.check_usable(workdir)
        task = algo.make_task(task_name, config)
    except (ValueError, ImportError, FileNotFoundError) as e:  # ImportError: a missing extra
        _fail(str(e))

    print(f"{algo_name} on {task_name or '(no task)'}: {FLAGS.num_seeds} seeds, "
          f"{config.num_updates} updates, workdir {workdir}")
    try:
        result = runner.train(algo, config, task, num_seeds=FLAGS.num_seeds, seed=FLAGS.seed,
                              workdir=workdir, progress=FLAGS.progress,
                              run_info={"algo": algo_name, "env": label}, sweep=sweep,
                              artifacts=FLAGS.artifacts, extend=FLAGS.extend)
    except (runner.NonFiniteError, runner.Interrupted) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 130 if isinstance(e, runner.Interrupted) else 1
    except ValueError as e:
        _fail(str(e))
    from launch import report
    members = runner.sweep_members(sweep)
    n = FLAGS.num_seeds
    for i, member in enumerate(members):
        rows = {k: v[i * n:(i + 1) * n] for k, v in result.final.items()}
        if algo.PRIMARY_METRIC in rows:
            rows = {algo.PRIMARY_METRIC: rows.pop(algo.PRIMARY_METRIC), **rows}
        which = f" for {member}" if member else ""
        print(report.format_table(rows, title=f"\nFinal metrics after {result.step} updates"
                                              f"{which} (mean and 95% bootstrap CI over seeds)"))
    written = ["summary.json", "metrics.csv", "eval.csv", "learning_curve.png", "tb/",
               "checkpoints/", *result.artifacts]
    print(f"\nWrote {workdir}/: {', '.join(written)}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
