"""Algorithm registry and the algorithm protocol: snake_case name -> module.

Every module in `PACKAGES` whose name does not start with `_` (and is not `common`/`losses`)
is an algorithm, registered under its module name. A new algorithm is one file there; nothing
in `launch/` changes.

The protocol
------------
Required members of an algorithm module:

    default_config() -> ml_collections.ConfigDict
        Every hyperparameter, with the paper's defaults, plus the runner's fields
        num_updates (updates in a run), log_every (updates per jitted chunk) and
        eval_every (updates between evaluations).
    init(key, config, task) -> State
        One seed's initial State (a pytree: params, optimizer states, env state, key, step).
    update(state, config, task) -> (State, dict[str, scalar])
        ONE iteration, pure: no Python side effects, no host syncs.
    evaluate(state, key, config, task) -> dict[str, scalar]
        Pure evaluation of one seed (e.g. greedy return, normalized score, sample quality).
    make_task(name: str | None, config) -> task
        The task that init / update / evaluate take, from the value of the CLI flag
        TASK_FLAG (None when TASK_FLAG is None). A task is a pytree: the runner passes its
        array leaves to the jitted programs as ONE un-vmapped argument (all seeds read one
        copy of an offline dataset or a training set) and closes over everything else
        (environment objects, Python numbers) as static.
    TASK_FLAG: "env" | "dataset" | None
        Which flag of `launch.run` names the task: --env (an environment id; its options
        become --config.env.<option>), --dataset (a dataset name or path), or none.
    DEFAULT_TASK: str | None
        The value used when that flag is not given.
    PRIMARY_METRIC: str
        The final metric reported first ("eval/return", "eval/normalized_score", ...).

Optional members (defaults in `OPTIONAL`):

    SWEEPABLE: tuple[str, ...] = ()
        Hyperparameters kept as traced leaves in `state.hparams`, so `--sweep` trains several
        values side by side in one vmapped program.
    act(state, obs, config, task, key=None) -> action
        Every RL algorithm has it. One seed's State; `obs` a batch [B, *obs_shape] of raw
        environment observations; returns actions [B, ...] ready for `env.step` (Box actions
        in the environment's units, Discrete actions as int32). key=None acts greedily /
        deterministically (what `evaluate` uses); a key samples the behaviour policy.
    sample(state, key, config, task, n) -> array [n, *data_shape]
        Generative models: n samples from one seed's model.
    artifacts(state, config, task, workdir) -> list[str]
        Files a family writes after training besides the runner's logs (value and policy
        grids, sampler tables, pictures); `state` has the leading seed axis. Returns the
        file names written.
    step_counts(config, updates) -> dict[str, int]
        The step axes after `updates` updates, per seed: "env_steps" (environment transitions,
        online RL) and/or "grad_steps" (gradient steps, offline RL and diffusion). Every logged
        row (metrics.csv, eval.csv, TensorBoard, wandb, the PNG curves) carries them beside
        "wall_time". Host-side Python; families bind one of `algorithms.core.steps`' functions.
        Without it, rows carry the update count and wall_time only.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

# Packages whose modules are algorithms, in the order the chapters come.
PACKAGES = ("algorithms.tabular", "algorithms.online", "algorithms.offline", "algorithms.sequence",
            "diffusion.models")
_SHARED = {"common", "losses"}
# The book's order (Ch. 2-10), then deep RL and offline RL, so `--help` reads like the notes.
_ORDER = ["policy_evaluation", "value_iteration", "policy_iteration", "truncated_policy_iteration",
          "mc_basic", "mc_exploring_starts", "mc_epsilon_greedy",
          "epsilon_greedy_policy_iteration", "robbins_monro",
          "sgd_mean_estimation", "td_zero", "sarsa", "expected_sarsa", "n_step_sarsa",
          "q_learning", "q_learning_off_policy", "td_linear",
          "dqn", "reinforce", "a2c", "ppo", "trpo", "ddpg", "td3", "sac",
          "bc", "td3_bc", "awac", "cql", "iql", "sac_n", "edac", "awr", "diffusion_bc",
          "diffusion_ql", "idql",
          "grpo", "dr_grpo", "dapo", "rloo", "reinforce_seq", "ppo_seq", "kimi_k15"]

REQUIRED = ("default_config", "init", "update", "evaluate", "make_task", "TASK_FLAG",
            "DEFAULT_TASK", "PRIMARY_METRIC")
OPTIONAL = {"SWEEPABLE": (), "act": None, "sample": None, "artifacts": None,
            "step_counts": None}
TASK_FLAGS = ("env", "dataset", None)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _discover() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        folder = os.path.join(_ROOT, *package.split("."))
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext == ".py" and not stem.startswith("_") and stem not in _SHARED \
                    and stem != "__init__":
                found[stem] = f"{package}.{stem}"
    rank = {n: i for i, n in enumerate(_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[1])))


ALGORITHMS: dict[str, str] = _discover()


def names() -> list[str]:
    return list(ALGORITHMS)


def check_protocol(module: ModuleType) -> None:
    """TypeError naming the missing required members, or a bad TASK_FLAG."""
    missing = [m for m in REQUIRED if not hasattr(module, m)]
    if missing:
        raise TypeError(f"{module.__name__} does not implement the algorithm protocol: "
                        f"missing {', '.join(missing)} (see launch/registry.py)")
    if module.TASK_FLAG not in TASK_FLAGS:
        raise TypeError(f"{module.__name__}.TASK_FLAG must be one of {TASK_FLAGS}, "
                        f"got {module.TASK_FLAG!r}")


def get(name: str) -> ModuleType:
    """The algorithm module `name`; ValueError listing the valid names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid choices: {', '.join(ALGORITHMS)}")
    module = importlib.import_module(ALGORITHMS[name])
    check_protocol(module)
    return module


def optional(module: ModuleType, member: str):
    """An optional protocol member of `module`, or its documented default."""
    return getattr(module, member, OPTIONAL[member])
