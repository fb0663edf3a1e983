r"""Train any registered algorithm: `python -m launch.run --algo=NAME [--env=ENV | --dataset=D]`.

Examples:
  python -m launch.run --algo=iql                        # IQL on pendulum-medium-v0
  python -m launch.run --algo=cql --dataset=reacher-medium-v0 --num_seeds=5
  python -m launch.run --algo=value_iteration            # the book's grid world
  python -m launch.run --algo=q_learning --num_seeds=8
  python -m launch.run --algo=value_iteration --config.gamma=0.5 --config.env.r_forbidden=-10
  python -m launch.run --algo=sarsa --config.env.layout='..T/.#./...' --config.env.slip_prob=0.1
  python -m launch.run --flagfile=ppo_cartpole.flags    # --algo=ppo, --env=... inside the file
  python -m launch.run --algo=ppo --config=my_ppo.py:fast --config.lr=1e-3

Every field of the algorithm's `default_config()` is a flag `--config.<field>` (typos and
wrong types are rejected), and the environment's options are `--config.env.<option>`.
`--config=file.py[:arg]` puts the fields that the file's `get_config([arg])` sets on top of the
defaults first (launch/cli.py); flagfiles may hold any flag, --algo and --env included.
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

from launch import cli, registry

DEFAULT_ALGO = "iql"


def build_config(algo_name: str, task_name: str | None) -> ConfigDict:
    """The algorithm's default config plus `env`: the options of the environment it is
    trained in (empty unless the algorithm's TASK_FLAG is "env")."""
    import envs  # here, not at the top: gymnax starts a JAX backend when imported, and a
    #              multi-process run must connect its processes before that
    algo = registry.get(algo_name)
    config = algo.default_config()
    options = envs.env_options(task_name) if algo.TASK_FLAG == "env" and task_name else {}
    with config.unlocked():
        config.env = ConfigDict(options)
    return config


def _default_config_for_flags(args: list[str]) -> ConfigDict:
    algo_name = cli.flag_value(args, "algo") or DEFAULT_ALGO
    if algo_name not in registry.ALGORITHMS:
        return ConfigDict()  # absl's enum check reports the unknown name and the choices
    algo = registry.get(algo_name)
    task_name = (cli.flag_value(args, algo.TASK_FLAG) if algo.TASK_FLAG else None) \
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


def _start_distributed(args: list[str]) -> None:
    """Joins a multi-process run when --coordinator / --num_processes / --process_id (or
    --distributed, for a cluster scheduler's environment) are given."""
    values = [cli.flag_value(args, name) for name in ("coordinator", "num_processes", "process_id")]
    cluster = cli.flag_value(args, "distributed") not in (None, "false", "False", "0") \
        or "--distributed" in args
    if not any(values) and not cluster:
        return
    from launch import distributed
    try:
        coordinator, processes, index = values
        distributed.initialize(coordinator, None if processes is None else int(processes),
                               None if index is None else int(index))
    except ValueError as e:
        _fail(str(e))


def _prepare(argv: list[str]) -> tuple[list[str], ConfigDict]:
    """(the argv absl parses: flagfiles expanded, `--config=FILE` taken out; the default of
    `--config`: the algorithm's defaults with the config file's fields on top)."""
    try:
        args = cli.expand_flagfiles(argv[1:])
        _start_distributed(args)  # before anything below touches a JAX backend
        spec, args = cli.split_config_file(args)
        config = _default_config_for_flags(args)
        if spec and len(config):  # an empty config: absl reports the unknown --algo
            config = cli.apply_config_file(config, cli.load_config_file(spec), spec)
    except cli.CliError as e:
        _fail(str(e))
    return [argv[0], *args], config


if __name__ == "__main__":
    _ARGV, _DEFAULT_CONFIG = _prepare(sys.argv)
    _check_config_keys(_ARGV, _DEFAULT_CONFIG)  # before config_flags parses the overrides
else:
    _ARGV, _DEFAULT_CONFIG = sys.argv, _default_config_for_flags([])

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
flags.DEFINE_float("checkpoint_interval_s", 60.0,  # runner.CHECKPOINT_INTERVAL_S
                   "Checkpoints follow evaluations: the first, then any at least this many "
                   "seconds after the previous save, and the last; 0: at every evaluation.")
flags.DEFINE_string("compilation_cache", None, "Folder of JAX's persistent compilation cache, "
                    "so a rerun loads its compiled programs (default: "
                    "$JAXRL_COMPILATION_CACHE_DIR, else jax_compilation_cache/ beside the "
                    "datasets cache); 'none' turns it off.")
flags.DEFINE_string("wandb_project", None, "Also log to Weights & Biases, in this project "
                    "(the optional extra: pip install -e '.[wandb]').")
flags.DEFINE_string("wandb_entity", None, "wandb entity (user or team); default: yours.")
flags.DEFINE_enum("wandb_mode", "online", ["online", "offline", "disabled"],
                  "wandb mode; offline writes under the workdir's wandb/ for `wandb sync`.")
flags.DEFINE_string("sweep", None, "Numeric hyperparameters trained side by side in one vmapped "
                    "program, e.g. 'lr=3e-4,1e-3;clip_eps=0.1,0.2' (the algorithm's SWEEPABLE).")
flags.DEFINE_string("coordinator", None, "Multi-process runs: host:port of process 0 (with "
                    "--num_processes and --process_id); every process runs the same command.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes share the "
                     "seeds (one per host or accelerator).")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 to "
                     "num_processes - 1; process 0 writes the logs and reports.")
flags.DEFINE_boolean("distributed", False, "Multi-process runs on a cluster: read the process "
                     "layout from the scheduler's environment (SLURM, Open MPI, Cloud TPU).")
_CONFIG = config_flags.DEFINE_config_dict(
    "config", _DEFAULT_CONFIG, "Hyperparameters: the algorithm's default_config; "
    "--config=path/to/file.py[:arg] layers the fields that the file's get_config([arg]) sets "
    "on top of them, and --config.<field>=value flags apply after that.", lock_config=True,
    sys_argv=_ARGV)  # the expanded flags: overrides may come from a flagfile
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
    from launch import compilation_cache
    try:  # before anything is compiled
        compilation_cache.enable(FLAGS.compilation_cache)
    except ValueError as e:
        _fail(str(e))
    from launch import runner  # after flag parsing: imports jax
    from algorithms.core import config_rules
    from launch import workdir as workdir_lib

    algo_name = FLAGS.algo
    algo = registry.get(algo_name)
    config = _CONFIG.value
    if FLAGS.num_seeds < 1:
        _fail(f"--num_seeds must be >= 1, got {FLAGS.num_seeds}")
    if not FLAGS.checkpoint_interval_s >= 0:
        _fail(f"--checkpoint_interval_s must be >= 0 seconds (0: a checkpoint at every "
              f"evaluation), got {FLAGS.checkpoint_interval_s}")
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
        loggers = _wandb_loggers(algo_name, label, config, sweep, workdir)
        task = algo.make_task(task_name, config)
    except (ValueError, ImportError, FileNotFoundError) as e:  # ImportError: a missing extra
        _fail(str(e))

    print(f"{algo_name} on {task_name or '(no task)'}: {FLAGS.num_seeds} seeds, "
          f"{config.num_updates} updates, workdir {workdir}")
    try:
        result = runner.train(algo, config, task, num_seeds=FLAGS.num_seeds, seed=FLAGS.seed,
                              workdir=workdir, progress=FLAGS.progress,
                              run_info={"algo": algo_name, "env": label}, sweep=sweep,
                              artifacts=FLAGS.artifacts, extend=FLAGS.extend,
                              loggers=loggers, check_memory_first=True,
                              checkpoint_interval_s=FLAGS.checkpoint_interval_s)
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


def _wandb_loggers(algo_name, label, config, sweep, workdir) -> list:
    """[WandbLogger] when --wandb_project is given (ImportError naming the extra when wandb is
    not installed), else []."""
    if not FLAGS.wandb_project:
        return []
    from launch import wandb_log
    from launch.runner import config_to_dict
    run_config = {"algo": algo_name, "env": label, "num_seeds": FLAGS.num_seeds,
                  "seed": FLAGS.seed, "config": config_to_dict(config), "sweep": sweep,
                  "workdir": os.path.abspath(workdir)}
    return [wandb_log.WandbLogger(project=FLAGS.wandb_project, entity=FLAGS.wandb_entity,
                                  mode=FLAGS.wandb_mode, run_config=run_config, workdir=workdir,
                                  name=os.path.basename(os.path.normpath(workdir)))]


def run():
    app.run(main, argv=_ARGV)


if __name__ == "__main__":
    run()
