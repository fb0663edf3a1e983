"""What every offline algorithm shares: the task, batches, the gradient-step scan, acting.

    task  = make_task(dataset, config)     # OfflineTask: dataset arrays + the env to evaluate in
    state, metrics = run_gradient_steps(gradient_step, state, config, task)
                                           # `steps_per_update` steps of gradient_step(state,
                                           # batch, key) in one lax.scan, metrics averaged
    weights = clipped_exp(exponents, max_weight)   # min(exp(x), max_weight), advantage weights
    actions = policy_action(net, params, obs, task, key)   # raw obs -> environment actions
    metrics = evaluate_policy(act, state, key, config, task)   # return and D4RL normalized score

Where the data comes from and where the policy is evaluated are two config fields:

    --dataset=/data/hopper-medium-v2.hdf5            # D4RL name: env + reference returns built in
    --config.eval_env=gymnasium:Hopper-v5            # any registered env or gymnasium:<id>
    --config.eval_env=none                           # train only: no environment
    --config.ref_scores=-20.272305,3234.3            # (random, expert) returns of the score

`eval_env` "" uses the dataset's own env (its metadata "env", a Minari dataset's env spec, the
D4RL table for D4RL file names); `ref_scores` () the dataset's reference returns. A train-only
run's evaluation measures the policy on the data instead (`dataset_action_mse`).

Actions are stored in the task rescaled to [-1, 1]^|A| (tanh policies, CQL's uniform actions
and TD3+BC's noise all live there) and mapped back to the environment's Box when acting.
Observations are stored raw; batches and `policy_action` z-score them with the dataset's
statistics. The dataset arrays are `task.data`, the task's only array leaves: the runner passes
them to the jitted programs as one shared, un-vmapped argument, so 16 seeds read one copy.
"""
from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from algorithms.core import config_rules, scores, spaces, tasks
from algorithms.core.evaluation import evaluate_episodes
from envs import datasets as datasets_lib

# The protocol members every offline algorithm module re-exports (launch/registry.py).
TASK_FLAG = "dataset"
DEFAULT_TASK = "pendulum-medium-v0"  # generated on first use (SAC behaviour policies)
PRIMARY_METRIC = "eval/normalized_score"

# Allowed values of the shared fields (algorithms.core.config_rules; its vocabulary covers the
# others): gamma < 1, since the datasets' episodes end in timeouts that bootstrap (with
# gamma = 1 the values of a task without terminations are unbounded); a Polyak rate tau > 0
# that moves the targets. Each module adds its own fields.
NO_EVAL_ENV = "none"  # config.eval_env of a train-only run


def _reference_scores_rule(value):
    ok = isinstance(value, (tuple, list)) and len(value) in (0, 2) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
        for v in value) and (len(value) == 0 or value[0] != value[1])
    return None if ok else ("empty (the dataset's own) or two different finite numbers "
                            "RANDOM,EXPERT, e.g. -20.272305,3234.3")


CONFIG_RULES = {
    "steps_per_update": config_rules.count,
    "gamma": config_rules.in_range(0.0, 1.0, high_open=True),
    "tau": config_rules.in_range(0.0, 1.0, low_open=True),
    "eval_env": config_rules.any_string(),
    "ref_scores": _reference_scores_rule,
}
# The fields of the evaluation setup (`offline_config`), set together from the dataset.
EVAL_FIELDS = ("eval_env", "ref_scores")


class OfflineTask(NamedTuple):
    """A dataset to learn from and the environment its policy is evaluated in.

    data: {"observations", "actions" (in [-1, 1]), "rewards", "next_observations",
           "terminals" (float32 1.0 at true terminations), "obs_mean", "obs_std"} as jnp arrays;
           the runner passes it to jitted code as an argument (not a constant).
    env, params: the gymnax-interface environment and its params (evaluation episodes); None
           for a train-only run (config.eval_env = "none").
    name: dataset name; ref_min_score / ref_max_score: D4RL reference returns (random / expert;
           NaN when a train-only run has none).
    action_center, action_scale: environment action = center + scale * a, a in [-1, 1].
    """
    data: dict
    env: Any
    params: Any
    name: str
    ref_min_score: float
    ref_max_score: float
    action_center: tuple
    action_scale: tuple


def offline_config() -> ml_collections.ConfigDict:
    """The fields every offline algorithm has (each adds its own hyperparameters).

    One runner `update` = `steps_per_update` gradient steps in one lax.scan (several updates
    per jitted call, no host round trip in between); num_updates * steps_per_update is the
    gradient-step budget.
    """
    c = ml_collections.ConfigDict()
    # 10k gradient steps: a CPU-sized default (the papers train 1M; README, offline results).
    c.num_updates = 10  # runner updates
    c.steps_per_update = 1000  # gradient steps per update
    c.log_every = 2  # updates per jitted chunk
    c.eval_every = 5  # updates between evaluations
    c.eval_episodes = 50  # many: Pendulum's random starts make single returns scatter widely
    c.batch_size = 256
    c.hidden_sizes = (256, 256)
    c.gamma = 0.99
    c.normalize_observations = True  # z-score with the dataset's mean / std (TD3+BC Sec. 5)
    # Where the policy is evaluated: "" = the dataset's env, "none" = train only, else a
    # registered env or "gymnasium:<id>" (the mujoco extra).
    c.eval_env = ""
    c.ref_scores = ()  # () = the dataset's reference returns, else (random, expert) returns
    return c


def ensure_dataset(name: str) -> None:
    """A registered dataset ready to load: generated (and cached) when its cache file is
    missing, then its cached set checked (`envs.datasets.check_set`: complete, readable, from
    one generation; else DatasetError naming the repair command).

    Paths, "minari:<id>" and unknown names pass through (`envs.datasets.load` reports them).
    """
    if name not in datasets_lib.dataset_names():
        return
    if not datasets_lib.dataset_path(name).is_file():
        from envs import generation
        print(f"Dataset {name} is not in {datasets_lib.cache_dir()} yet: generating it "
              "(behaviour policies trained by SAC; done once, then cached).", flush=True)
        generation.ensure(name)
    datasets_lib.check_set(datasets_lib.parse_name(name)[0])


def check_dataset(dataset: datasets_lib.Dataset, env, params, source: str,
                  env_name: str | None = None) -> dict:
    """The dataset's arrays (`envs.datasets.validate`: keys, shapes, finite values) after
    checking them against the environment they are evaluated in: a continuous (Box) action
    space of the dataset's action shape, observations with as many features as the env's,
    finite reference returns that differ. Without an env (a train-only run) only the arrays
    are checked. Raises ValueError, one line starting with `source`.
    """
    arrays = datasets_lib.validate(dataset.arrays, source)
    if env is None:
        return arrays
    meta = dataset.metadata
    env_name = env_name or meta["env"]
    space = env.action_space(params)
    if spaces.is_discrete(env, params):
        raise ValueError(f"{source}: {env_name} has discrete actions; the offline algorithms "
                         "need a continuous (Box) action space")
    if arrays["actions"].shape[1:] != space.shape:
        raise ValueError(f"{source}: dataset actions have shape {arrays['actions'].shape[1:]}, "
                         f"but {env_name} actions have shape {space.shape}")
    obs_shape = env.observation_space(params).shape
    features = int(np.prod(obs_shape))
    if arrays["observations"].shape[1] != features:
        raise ValueError(f"{source}: dataset observations have {arrays['observations'].shape[1]} "
                         f"features, but {env_name} observations have shape {obs_shape} "
                         f"({features} features): recorded in another environment or with other "
                         "env options?")
    lo, hi = meta["ref_min_score"], meta["ref_max_score"]
    try:
        ok = bool(np.isfinite([float(lo), float(hi)]).all()) and float(lo) != float(hi)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{source}: reference returns ref_min_score={lo!r}, ref_max_score="
                         f"{hi!r} must be finite numbers that differ (the normalized score "
                         "divides by their difference)")
    return arrays


def _eval_env_name(meta: dict, config, source: str) -> str | None:
    """The evaluation env of a run: config.eval_env, else the dataset's; None = train only."""
    chosen = str(config.get("eval_env", "") or "").strip()
    if chosen.lower() == NO_EVAL_ENV:
        return None
    if chosen:
        return chosen
    if meta.get("env"):
        return str(meta["env"])
    raise ValueError(f"{source} names no environment in its metadata ('env'): name the one to "
                     "evaluate in with --config.eval_env=ENV (a registered env, or "
                     "gymnasium:<id> such as gymnasium:Hopper-v5), or train without evaluation "
                     "with --config.eval_env=none")


def _make_eval_env(env_name: str, meta: dict, config):
    """(env, params) of the evaluation env, with the dataset's env options when it is the
    dataset's own env, and config.env's on top."""
    options = dict(meta.get("env_options") or {}) if env_name == meta.get("env") else {}
    try:
        valid = tasks.env_options(env_name)
        if "env" in config:
            options.update({k: v for k, v in dict(config.env).items() if k in valid})
        return tasks.make_env(env_name, **{k: v for k, v in options.items() if k in valid})
    except ValueError as e:
        raise ValueError(f"evaluation env {env_name!r} (config.eval_env): {e} (gymnasium "
                         "MuJoCo envs are gymnasium:<id>, e.g. gymnasium:Hopper-v5)") from None


def _reference_scores(meta: dict, config, source: str, needed: bool):
    """(ref_min_score, ref_max_score): config.ref_scores, else the dataset's; NaN when a
    train-only run has none."""
    given = tuple(config.get("ref_scores", ()) or ())
    if given:
        return float(given[0]), float(given[1])
    missing = [k for k in ("ref_min_score", "ref_max_score") if meta.get(k) is None]
    if not missing:
        return meta["ref_min_score"], meta["ref_max_score"]
    if not needed:
        return float("nan"), float("nan")
    d4rl_like = " (not a D4RL dataset name with published reference returns)" \
        if not meta.get("d4rl_name") else ""
    raise ValueError(f"{source} has no {' / '.join(missing)} in its metadata{d4rl_like}: the "
                     "D4RL normalized score needs the random and expert reference returns of "
                     "its environment; pass them with --config.ref_scores=RANDOM,EXPERT (e.g. "
                     "-20.272305,3234.3), or train without evaluation with "
                     "--config.eval_env=none")


def make_task(dataset, config) -> OfflineTask:
    """OfflineTask for `dataset`: an `envs.datasets.Dataset`, a registered name (loaded from the
    cache, generated first when missing), a path to a D4RL-style HDF5 file or "minari:<id>".

    The evaluation environment is config.eval_env when set ("none": no evaluation), else the
    dataset's `metadata["env"]` (a gymnax id, or "gymnasium:<id>": a Minari dataset's env spec,
    a D4RL file name's env) with its `env_options`; `config.env` options, when given, override
    them. The reference returns are config.ref_scores when set, else the dataset's. A D4RL v0
    file's episodes are cut at that env's `max_steps_in_episode`. The data is checked against
    the environment before anything is trained (`check_dataset`).
    """
    loaded = None
    if isinstance(dataset, datasets_lib.Dataset):
        loaded = dataset
        source = f"dataset {dataset.metadata.get('name', '?')!r}"
        meta = dataset.metadata
    else:
        name = os.fspath(DEFAULT_TASK if dataset is None else dataset)
        ensure_dataset(name)
        source = (str(datasets_lib.dataset_path(name)) if name in datasets_lib.dataset_names()
                  else name)
        if name.startswith("minari:"):
            loaded = datasets_lib.load(name)
            source = str(loaded.metadata.get("source", name))
            meta = loaded.metadata
        else:
            meta = datasets_lib.load_metadata(name)
    env_name = _eval_env_name(meta, config, source)
    env, params = _make_eval_env(env_name, meta, config) if env_name else (None, None)
    if loaded is None:
        steps = int(params.max_steps_in_episode) if env is not None else None
        loaded = datasets_lib.load(name, max_episode_steps=steps)
    lo, hi = _reference_scores(loaded.metadata, config, source, needed=env is not None)
    meta = {**loaded.metadata, "ref_min_score": lo, "ref_max_score": hi}
    a = check_dataset(datasets_lib.Dataset(loaded.arrays, meta), env, params, source, env_name)
    if env is not None:
        center, scale = spaces.box_center_scale(env.action_space(params))
    else:  # train only: the data's own action range is the box
        low, high = a["actions"].min(0), a["actions"].max(0)
        center, scale = (high + low) / 2.0, np.maximum((high - low) / 2.0, 1e-6)
    obs = a["observations"].astype(np.float32)
    if bool(config.get("normalize_observations", False)):
        mean, std = obs.mean(0), obs.std(0) + 1e-3
    else:
        mean, std = np.zeros(obs.shape[1], np.float32), np.ones(obs.shape[1], np.float32)
    data = {
        "observations": obs,
        "actions": np.clip((a["actions"] - center) / scale, -1.0, 1.0).astype(np.float32),
        "rewards": a["rewards"].astype(np.float32),
        "next_observations": a["next_observations"].astype(np.float32),
        "terminals": a["terminals"].astype(np.float32),
        "obs_mean": mean.astype(np.float32), "obs_std": std.astype(np.float32),
    }
    return OfflineTask(data=jax.tree.map(jnp.asarray, data), env=env, params=params,
                       name=str(meta.get("name", "dataset")),
                       ref_min_score=float(lo), ref_max_score=float(hi),
                       action_center=tuple(float(x) for x in np.asarray(center).reshape(-1)),
                       action_scale=tuple(float(x) for x in np.asarray(scale).reshape(-1)))


def obs_dim(task: OfflineTask) -> int:
    return int(task.data["observations"].shape[1])


def action_dim(task: OfflineTask) -> int:
    return int(task.data["actions"].shape[1])


def normalize_obs(obs: jax.Array, task: OfflineTask) -> jax.Array:
    """(obs - mean) / std with the dataset statistics (identity without normalization)."""
    return (obs - task.data["obs_mean"]) / task.data["obs_std"]


def batch_at(task: OfflineTask, rows: jax.Array) -> dict:
    """The transitions at dataset rows `rows` [B] (int); observations normalized.

    Returns {"obs", "action", "reward", "next_obs", "terminal"} ([B, ...], float32).
    """
    d = task.data
    return {"obs": normalize_obs(d["observations"][rows], task), "action": d["actions"][rows],
            "reward": d["rewards"][rows],
            "next_obs": normalize_obs(d["next_observations"][rows], task),
            "terminal": d["terminals"][rows]}


def sample_rows(task: OfflineTask, key: jax.Array, batch_size: int) -> jax.Array:
    """`batch_size` dataset rows drawn uniformly with replacement, int32 [B]."""
    return jax.random.randint(key, (batch_size,), 0, task.data["rewards"].shape[0])


def sample_batch(task: OfflineTask, key: jax.Array, batch_size: int) -> dict:
    """`batch_size` transitions drawn uniformly with replacement (`batch_at` of `sample_rows`)."""
    return batch_at(task, sample_rows(task, key, batch_size))


def scan_gradient_steps(gradient_step: Callable, state, task: OfflineTask, batch_size: int,
                        num_steps: int, per_row: dict | None = None):
    """`num_steps` steps of gradient_step(state, batch, key) in one lax.scan, each on a fresh
    uniform batch; returns (state', metrics stacked over the steps).

    per_row: optional {name: [N, ...] array} of per-transition quantities an algorithm computed
    over the whole dataset (e.g. AWR's returns and weights); each batch carries them at its
    rows under the same names. gradient_step gets the state with `state.key` already advanced.
    """
    per_row = per_row or {}

    def body(state, _):
        key, k_batch, k_step = jax.random.split(state.key, 3)
        rows = sample_rows(task, k_batch, batch_size)
        batch = {**batch_at(task, rows), **{name: x[rows] for name, x in per_row.items()}}
        return gradient_step(state.replace(key=key), batch, k_step)

    return jax.lax.scan(body, state, None, length=int(num_steps))


def run_gradient_steps(gradient_step: Callable, state, config, task: OfflineTask):
    """`config.steps_per_update` gradient steps in one lax.scan; returns (state', mean metrics).

    gradient_step(state, batch, key) -> (state, metrics) with `state.key` already advanced;
    the state needs `key` and `step` fields (flax struct dataclass); `step` counts updates.
    """
    state, metrics = scan_gradient_steps(gradient_step, state, task, config.batch_size,
                                         config.steps_per_update)
    return state.replace(step=state.step + 1), jax.tree.map(jnp.mean, metrics)


def clipped_exp(exponents: jax.Array, max_value: jax.Array | float) -> jax.Array:
    """min(exp(x), max_value) elementwise: the clipped exponentiated advantages of
    advantage-weighted regression (AWR's weight clip omega_max, IQL's and AWAC's clip at 100).

    Wherever exp(x) >= max_value the result is exactly max_value (in x's dtype), not
    exp(log(max_value)), which rounds to 100.0000076 for max_value = 100 in float32; below the
    clip it is exp(x). The exponent is first capped at log(max_value) + 1, so a huge advantage
    neither overflows to inf nor gives a non-finite gradient.

    Args:
      exponents: x, any shape (e.g. beta A or A / lambda, [B]).
      max_value: the clip (> 0), a scalar.
    Returns: weights, x's shape and dtype (no stop-gradient: callers add it).
    """
    cap = jnp.log(max_value) + 1.0  # exp(cap) = e * max_value > max_value: the clip binds there
    return jnp.minimum(jnp.exp(jnp.minimum(exponents, cap)), max_value).astype(exponents.dtype)


def policy_action(policy, params, obs: jax.Array, task: OfflineTask,
                  key: jax.Array | None = None) -> jax.Array:
    """Environment actions [B, |A|] of a policy network at raw observations `obs` [B, obs_dim].

    The observations are z-scored with the dataset's statistics; the network returns either a
    deterministic action or a distrax distribution over [-1, 1]^|A| (its mode without `key`, a
    sample with it); the action is clipped to [-1, 1] and mapped to the environment's Box,
    center + scale * a.
    """
    out = policy.apply(params, normalize_obs(obs.reshape(obs.shape[0], -1).astype(jnp.float32),
                                             task))
    if isinstance(out, distrax.Distribution):
        out = out.mode() if key is None else out.sample(seed=key)
    return spaces.to_env_action(jnp.clip(out, -1.0, 1.0),
                                jnp.asarray(task.action_center, jnp.float32),
                                jnp.asarray(task.action_scale, jnp.float32))


# Dataset rows a train-only run's evaluation acts on (evenly spaced, the same every time).
DATASET_EVAL_ROWS = 1024


def dataset_action_mse(act_fn: Callable, task: OfflineTask) -> jax.Array:
    """Mean squared difference, in the [-1, 1] action box, between act_fn(obs) [B, |A|]
    (environment units) and the dataset's actions at DATASET_EVAL_ROWS evenly spaced rows: what
    a train-only run (no environment) evaluates."""
    n = task.data["rewards"].shape[0]
    rows = jnp.linspace(0, n - 1, min(n, DATASET_EVAL_ROWS)).astype(jnp.int32)
    actions = act_fn(task.data["observations"][rows])
    center = jnp.asarray(task.action_center, jnp.float32)
    scale = jnp.asarray(task.action_scale, jnp.float32)
    return jnp.mean(jnp.square((actions - center) / scale - task.data["actions"][rows]))


def evaluate_actions(act_fn: Callable, key: jax.Array, config, task: OfflineTask) -> dict:
    """`eval_episodes` episodes of act_fn(obs, key) -> environment actions in the task's env:
    {"return", "normalized_score", "length"} (means over episodes; the same episode keys for
    every seed). A train-only task (no env): {"dataset_action_mse"} (`dataset_action_mse`,
    act_fn called with `key`)."""
    if task.env is None:
        return {"dataset_action_mse": dataset_action_mse(lambda obs: act_fn(obs, key), task)}
    out = evaluate_episodes(key, task.env, task.params, act_fn, int(config.eval_episodes))
    return {**out, "normalized_score": scores.normalized_score(
        out["return"], task.ref_min_score, task.ref_max_score)}


def evaluate_policy(act: Callable, state, key: jax.Array, config, task: OfflineTask) -> dict:
    """`evaluate_actions` of the module's deterministic `act(state, obs, config, task)`:
    {"return", "normalized_score", "length"}, or {"dataset_action_mse"} for a train-only task.
    """
    return evaluate_actions(lambda obs, _: act(state, obs, config, task), key, config, task)
