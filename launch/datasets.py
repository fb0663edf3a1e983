r"""D4RL-style offline datasets made with the project's own SAC: random, medium, expert,
medium-replay and medium-expert for each environment of `envs.datasets.ENVS`.

    python -m launch.datasets --env=pendulum             # the five kinds into the cache
    python -m launch.datasets --env=pendulum --force     # regenerate them
    python -m launch.datasets --list                     # registered names, what is cached
    ensure("pendulum-medium-replay-v0")                   # cache path; generated on first use

The recipe of D4RL's Gym-MuJoCo datasets (Fu, Kumar, Nachum, Tucker, Levine 2020, "D4RL:
Datasets for Deep Data-Driven Reinforcement Learning", arXiv:2004.07219, Sec. 5 and App. C),
scaled down to minutes on a CPU:

  1. random  = uniform random actions in the action box (D4RL used a randomly initialised
     policy instead; uniform actions make ref_min_score the usual "random policy" reference).
  2. SAC (`algorithms.online.sac`, Haarnoja et al. 2018) trains ONE seed on the environment in
     jitted chunks of `snapshot_every` environment steps (`sac.init` / `sac.update`); after each
     chunk the actor's parameters are kept (a "snapshot") with two returns: the deterministic
     tanh(mean) policy's on `eval_episodes` episodes (the learning curve, for information) and
     R_k, the stochastic policy's on exactly the episodes the medium data would hold if this
     snapshot were chosen (same key, same count). The first snapshot is the untrained actor
     after the uniform random warm-up (`learning_starts` steps).
  3. expert  = the FINAL snapshot (not the best one: no selection on noisy evaluations).
  4. medium  = the snapshot "trained to about a third of the expert" (D4RL): with the dataset
     normalized score S_k = 100 (R_k - ref_min_score) / (ref_max_score - ref_min_score), medium
     is the FIRST snapshot before the final one with |S_k - medium_score| <= medium_tolerance
     (33.3 +- 10 by default), else the one with S_k closest to medium_score (the earliest on
     ties); see `select_medium`. Since R_k is the return of the medium data itself, the medium
     dataset's normalized score IS S_k: the rule is judged on the data users get, not on a
     separate noisy evaluation (returns vary a lot between episodes with random goals).
  5. medium-replay = SAC's replay buffer in the order it was filled, from the first warm-up
     step up to the medium snapshot, cut at the last episode that had ended by then (D4RL:
     "all samples in the replay buffer observed during training until the policy reaches the
     medium level").
  6. medium-expert = the medium data followed by the expert data (equal amounts).

medium and expert data are rollouts of the STOCHASTIC policy a ~ tanh(N(mu(s), sigma(s))), as
D4RL's; every kind stores whole episodes, each run in parallel (vmap) from reset until its
first end in one jitted scan. Actions are stored in ENVIRONMENT units, center + scale * a
(SAC acts in [-1, 1]), clipped to the box; `terminals` = terminated, `timeouts` = truncated and
not terminated (episode ends that bootstrap), `next_observations` = the true next observation,
also at the end of an episode (gymnax's pre-reset `info["final_observation"]`, which SAC's
replay buffer stores as well). Replay-buffer episode ends are recovered from the buffer order:
an episode ended at i if terminated[i] or next_obs[i] differs from obs[i + 1] beyond rounding
(an auto-reset); see `replay_episode_ends`.

References: ref_min_score = the random data's mean episode return (uniform random policy,
`episodes["random"]` episodes), ref_max_score = the expert data's mean episode return, shared by
all five kinds of an environment; normalized score = 100 (R - ref_min) / (ref_max - ref_min).

Everything is a function of `seed` (one root key, split per stage): the same seed gives
bit-identical arrays. Files are written with `envs.datasets.save_hdf5` (atomic), all five only
after everything was generated; the metadata records the generator settings, the chosen
snapshots, the learning curve and the code version.
"""
from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import pathlib
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import envs
from algorithms.core.networks import TanhGaussianPolicy, flatten_obs, tanh_gaussian_sample
from algorithms.online import sac
from envs import datasets as datasets_lib

# Per dataset prefix (see envs.datasets.ENVS): how its behaviour policies are trained and how
# much data each kind gets. Overrides (`generate(..., overrides=...)`) merge into these.
#   env_options      envs.make options of the environment (recorded as metadata["env_options"])
#   sac              overrides of sac.default_config() (total_timesteps, num_steps, num_envs and
#                    buffer_size are set by the generator)
#   total_timesteps  SAC environment steps, warm-up included
#   snapshot_every   environment steps per jitted chunk = between snapshots
#   episodes         whole episodes of the random, medium and expert data
#   eval_episodes    episodes of each snapshot's deterministic evaluation (learning curve)
#   medium_score     target normalized score of the medium snapshot (D4RL: a third of expert)
#   medium_tolerance accepted distance to it (see `select_medium`)
GENERATION: dict[str, dict[str, Any]] = {
    # 200-step episodes; SAC (64-64) swings up by ~8k steps and holds ~-145 from ~12k.
    "pendulum": {
        "env_options": {},
        "sac": {"hidden_sizes": (64, 64), "learning_starts": 2_000, "batch_size": 256},
        "total_timesteps": 20_000,
        "snapshot_every": 250,
        "episodes": {"random": 500, "medium": 500, "expert": 500},  # 100k transitions each
        "eval_episodes": 50,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    },
    # 500-step episodes, obs 16 (point swimmer, goal, 5 urchins), act 2; SAC (64-64) goes from
    # ~83 (random) to ~370 by ~25k steps.
    "swimmer": {
        "env_options": {},
        "sac": {"hidden_sizes": (64, 64), "learning_starts": 5_000, "batch_size": 256},
        "total_timesteps": 40_000,
        "snapshot_every": 500,
        "episodes": {"random": 200, "medium": 200, "expert": 200},  # 100k transitions each
        "eval_episodes": 50,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    },
    # 100-step episodes, obs 8, act 2 (two-link arm, goals partly out of reach); SAC (64-64)
    # goes from ~15 (random) to ~55 by 60k steps, still slowly improving.
    "reacher": {
        "env_options": {},
        "sac": {"hidden_sizes": (64, 64), "learning_starts": 5_000, "batch_size": 256},
        "total_timesteps": 60_000,
        "snapshot_every": 500,
        "episodes": {"random": 1000, "medium": 1000, "expert": 1000},  # 100k transitions each
        "eval_episodes": 50,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    },
    # Brax locomotion (optional extra, `pip install -e '.[brax]'`; envs.brax_envs): D4RL's
    # Gym-MuJoCo recipe at its own scale, SAC 256-256 for 1M environment steps, 1000-step
    # episodes; sized for an accelerator (hours on a 2-core CPU). Only a tiny-budget run of the
    # pipeline is tested (tests/test_brax_datasets.py); these settings were not run here.
    **{name: {
        "env_options": {"backend": "generalized"},
        "sac": {"hidden_sizes": (256, 256), "learning_starts": 10_000, "batch_size": 256},
        "total_timesteps": 1_000_000,
        "snapshot_every": 10_000,
        "episodes": {"random": 2000, "medium": 1000, "expert": 1000},
        "eval_episodes": 10,
        "medium_score": 100.0 / 3.0,
        "medium_tolerance": 10.0,
    } for name in ("hopper", "halfcheetah", "walker2d")},
}

_GENERATOR_SET = ("total_timesteps", "num_steps", "num_envs", "buffer_size")
_ROLLOUT_KINDS = ("random", "medium", "expert")


# ---------------------------------------------------------------------------- settings
def generation_settings(prefix: str, overrides: dict | None = None) -> dict[str, Any]:
    """GENERATION[prefix] with `overrides` merged in (nested dicts merge key by key).

    Raises ValueError naming an unknown prefix or setting and listing the valid ones.
    """
    if prefix not in GENERATION:
        raise ValueError(f"no generation settings for dataset prefix {prefix!r}; valid: "
                         f"{', '.join(sorted(GENERATION))}")
    out = copy.deepcopy(GENERATION[prefix])
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"unknown generation setting {key!r}; valid: {', '.join(out)}")
        if key == "sac":
            valid = set(sac.default_config().keys()) - set(_GENERATOR_SET)
            bad = sorted(set(value) - valid)
            if bad:
                raise ValueError(f"unknown or generator-set SAC setting(s) {bad}; valid: "
                                 f"{', '.join(sorted(valid))} ({', '.join(_GENERATOR_SET)} "
                                 "are set by the generator)")
            out["sac"].update(value)
        elif key == "episodes":
            bad = sorted(set(value) - set(_ROLLOUT_KINDS))
            if bad:
                raise ValueError(f"unknown episodes kind(s) {bad}; valid: "
                                 f"{', '.join(_ROLLOUT_KINDS)}")
            out["episodes"].update(value)
        elif key == "env_options":
            out["env_options"].update(value)
        else:
            out[key] = value
    if "hidden_sizes" in out["sac"]:
        out["sac"]["hidden_sizes"] = tuple(int(h) for h in out["sac"]["hidden_sizes"])
    ls = int(out["sac"].get("learning_starts", sac.default_config().learning_starts))
    if int(out["snapshot_every"]) <= 0 or int(out["total_timesteps"]) < ls + \
            int(out["snapshot_every"]):
        raise ValueError(f"total_timesteps ({out['total_timesteps']}) must cover learning_starts "
                         f"({ls}) plus at least one chunk of snapshot_every "
                         f"({out['snapshot_every']}) > 0 steps")
    if min(int(v) for v in out["episodes"].values()) < 1 or int(out["eval_episodes"]) < 1:
        raise ValueError(f"episodes {out['episodes']} and eval_episodes "
                         f"({out['eval_episodes']}) must be >= 1")
    return out


def sac_config(settings: dict[str, Any]):
    """sac.default_config() for the generator: one env, chunks of `snapshot_every` steps, a
    replay buffer holding the whole run (nothing is overwritten: medium-replay reads it)."""
    c = sac.default_config()
    for key, value in settings["sac"].items():
        c[key] = value
    c.total_timesteps = int(settings["total_timesteps"])
    c.num_envs = 1
    c.num_steps = int(settings["snapshot_every"])
    c.buffer_size = int(settings["total_timesteps"])
    return c


# ---------------------------------------------------------------------------- pure pieces
def select_medium(scores, target: float, tolerance: float) -> int:
    """Index of the medium snapshot among normalized scores in training order.

    The first k with |scores[k] - target| <= tolerance; if there is none, argmin_k
    |scores[k] - target| (np.argmin: the earliest on ties). D4RL Sec. 5: "trained to
    approximately 1/3 the performance of the expert".
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    distance = np.abs(scores - target)
    inside = np.flatnonzero(distance <= tolerance)
    return int(inside[0]) if inside.size else int(np.argmin(distance))


def replay_episode_ends(obs: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray, *,
                        rtol: float = 1e-5, atol: float = 1e-5) -> np.ndarray:
    """bool [N]: where the episodes of a sequential (one-env) replay stream end.

    Step i ended its episode iff terminated[i], or next_obs[i] and obs[i + 1] differ (the env
    reset in between: gymnax auto-resets, the buffer's next_obs is the pre-reset final
    observation and the following obs a fresh reset one). "Differ" means beyond
    np.isclose(rtol, atol), not bitwise: XLA may compute the final observation and the
    observation it passes on in two fusions that round differently (seen: 1-ulp differences
    in Pendulum's angular velocity). The last step counts as an end (the caller cuts the
    stream at a known episode end).
    """
    ends = np.asarray(terminated).astype(bool).copy()
    if ends.size > 1:
        same = np.isclose(np.asarray(next_obs)[:-1], np.asarray(obs)[1:], rtol=rtol, atol=atol)
        ends[:-1] |= ~np.all(same, axis=tuple(range(1, np.ndim(obs))))
    if ends.size:
        ends[-1] = True
    return ends


def episode_starts(arrays: dict) -> np.ndarray:
    """Row index of each episode's first step (episodes end at terminals | timeouts)."""
    ends = np.flatnonzero(np.asarray(arrays["terminals"]) | np.asarray(arrays["timeouts"]))
    return np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if ends.size else \
        np.zeros(0, np.int64)


# ---------------------------------------------------------------------------- jitted programs
def _box(space):
    low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
    high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)
    return low, high


def rollout(key, actor_params, *, env, env_params, actor, num_episodes: int, mode: str):
    """`num_episodes` parallel episodes, each from reset to its first end (lax.scan over
    max_steps_in_episode steps; steps after an episode's end are masked by "alive").

    mode: "random" (uniform actions in the box), "sample" (a ~ tanh(N(mu, sigma)), the
    stochastic SAC policy) or "mean" (tanh(mu), deterministic). Returns the D4RL arrays
    [num_episodes, T, ...] (actions in environment units) plus "alive" [num_episodes, T].
    """
    if mode not in ("random", "sample", "mean"):
        raise ValueError(f"unknown rollout mode {mode!r}; valid: random, sample, mean")
    low, high = _box(env.action_space(env_params))
    center, scale = (high + low) / 2.0, (high - low) / 2.0
    nd = len(env.observation_space(env_params).shape)
    k_reset, k_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_reset, num_episodes), env_params)
    state = jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), state)

    def step(carry, k):
        obs, state, alive = carry
        k_act, k_env = jax.random.split(k)
        flat = flatten_obs(obs, nd)
        if mode == "random":
            a = jax.random.uniform(k_act, (num_episodes,) + low.shape, minval=-1.0, maxval=1.0)
        else:
            mean, log_std = actor.apply(actor_params, flat)
            a = jnp.tanh(mean) if mode == "mean" else \
                tanh_gaussian_sample(k_act, mean, log_std, 1.0)[0]
        action = jnp.clip(center + scale * a, low, high)
        next_obs, state, reward, terminated, truncated, info = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(jax.random.split(k_env, num_episodes), state,
                                               action, env_params)
        terminated, truncated = terminated.astype(bool), truncated.astype(bool)
        tr = {"observations": flat, "actions": action, "rewards": reward.astype(jnp.float32),
              "next_observations": flatten_obs(info["final_observation"], nd),
              "terminals": terminated, "timeouts": truncated & ~terminated, "alive": alive}
        # Pass on the stored final observation itself while the episode goes on (XLA may
        # round gymnax's auto-reset-selected copy differently), so that within an episode
        # next_observations[t] == observations[t + 1] bit for bit.
        done = terminated | truncated
        next_obs = jax.tree.map(
            lambda reset, final: jnp.where(done.reshape(done.shape + (1,) * (final.ndim - 1)),
                                           reset, final),
            next_obs, info["final_observation"])
        return (next_obs, state, alive & ~done), tr

    init = (obs, state, jnp.ones(num_episodes, bool))
    _, trs = jax.lax.scan(step, init, jax.random.split(k_run, int(env_params.max_steps_in_episode)))
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), trs)


def flatten_episodes(trs: dict) -> dict[str, np.ndarray]:
    """[E, T, ...] rollout arrays -> flat D4RL arrays of the alive steps, episode by episode.

    An episode still running at the last step (an env without a time limit in
    max_steps_in_episode) gets a timeout there, so every episode ends.
    """
    trs = {k: np.asarray(v) for k, v in jax.device_get(trs).items()}
    alive = trs.pop("alive")
    last = alive.sum(axis=1) - 1
    ended = (trs["terminals"] | trs["timeouts"])[np.arange(alive.shape[0]), np.maximum(last, 0)]
    trs["timeouts"] = trs["timeouts"].copy()
    fix = (last >= 0) & ~ended
    trs["timeouts"][np.flatnonzero(fix), last[fix]] = True
    return {k: v[alive] for k, v in trs.items()}


class _Programs:
    """The jitted programs of one (environment, SAC config, eval size); built once per process
    (see `_programs`), so generating again with the same settings compiles nothing."""

    def __init__(self, env_id: str, env_options: dict, sac_settings: dict, run: dict,
                 eval_episodes: int, medium_episodes: int):
        self.env, self.env_params = envs.make(env_id, **env_options)
        self.task = envs.Task(self.env, self.env_params)
        self.config = config = sac_config({"sac": sac_settings, **run})
        task = self.task
        self.action_shape = self.env.action_space(self.env_params).shape
        self.actor = TanhGaussianPolicy(tuple(config.hidden_sizes), self.action_shape[0])
        self.init = jax.jit(lambda key: sac.init(key, config, task))
        self.chunk = jax.jit(lambda state: sac.update(state, config, task)[0])
        kwargs = dict(env=self.env, env_params=self.env_params, actor=self.actor)
        self.rollout = jax.jit(functools.partial(rollout, **kwargs),
                               static_argnames=("num_episodes", "mode"))

        def evaluate(actor_params, k_eval, k_medium):
            """(deterministic return on eval_episodes, stochastic return on the medium data's
            episodes)."""
            out = []
            for key, n, mode in ((k_eval, eval_episodes, "mean"),
                                 (k_medium, medium_episodes, "sample")):
                trs = rollout(key, actor_params, num_episodes=n, mode=mode, **kwargs)
                out.append((trs["rewards"] * trs["alive"]).sum(axis=1).mean())
            return tuple(out)

        self.evaluate = jax.jit(evaluate)


@functools.lru_cache(maxsize=4)
def _programs_cached(key: str) -> _Programs:
    return _Programs(*json.loads(key))


def _programs(env_id: str, settings: dict) -> _Programs:
    run = {k: settings[k] for k in ("total_timesteps", "snapshot_every")}
    key = json.dumps([env_id, settings["env_options"], settings["sac"], run,
                      int(settings["eval_episodes"]), int(settings["episodes"]["medium"])],
                     sort_keys=True)
    return _programs_cached(key)


# ---------------------------------------------------------------------------- generation
@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """'<package version>+g<git hash>[.dirty]' of this checkout (just the version without git)."""
    try:
        version = importlib.metadata.version("jaxrl-diffusion-lab")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = str(pathlib.Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], check=True,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{head}" + (".dirty" if dirty.strip() else "")


def _num_episodes(arrays: dict) -> int:
    return int(np.sum(np.asarray(arrays["terminals"]) | np.asarray(arrays["timeouts"])))


def _mean_return(arrays: dict) -> float:
    returns = datasets_lib.episode_returns(arrays)
    return float(returns.mean()) if returns.size else float("nan")


def _replay_arrays(buffer: dict, end: int, center: np.ndarray, scale: np.ndarray,
                   low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    """The first `end` replay-buffer transitions as D4RL arrays (actions in env units)."""
    obs = np.asarray(buffer["obs"][:end], np.float32)
    next_obs = np.asarray(buffer["next_obs"][:end], np.float32)
    terminated = np.asarray(buffer["terminated"][:end]) > 0.5
    ends = replay_episode_ends(obs, next_obs, terminated)
    actions = np.clip(center + scale * np.asarray(buffer["action"][:end], np.float32), low, high)
    return {"observations": obs, "actions": actions.astype(np.float32),
            "rewards": np.asarray(buffer["reward"][:end], np.float32),
            "next_observations": next_obs, "terminals": terminated,
            "timeouts": ends & ~terminated}


def _concat(a: dict, b: dict) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in datasets_lib.KEYS}


def generate(prefix: str, *, seed: int = 0, progress: bool = True,
             overrides: dict | None = None) -> dict[str, str]:
    """Generates and writes the five datasets of `prefix` (see the module docstring).

    Args:
      prefix: a key of envs.datasets.ENVS with settings in GENERATION (e.g. "pendulum").
      seed: root seed; the same seed gives bit-identical arrays.
      progress: tqdm bar over the SAC chunks, the rollouts and the writes.
      overrides: merged into GENERATION[prefix] (see `generation_settings`), e.g.
        {"total_timesteps": 5000, "sac": {"hidden_sizes": (32, 32)}}.
    Returns: {dataset name: path} of the five files in envs.datasets.cache_dir().
    """
    if prefix not in datasets_lib.ENVS:
        raise datasets_lib.DatasetError(f"unknown dataset prefix {prefix!r}; valid: "
                                        f"{', '.join(datasets_lib.ENVS)}")
    env_id = datasets_lib.ENVS[prefix]
    settings = generation_settings(prefix, overrides)
    prog = _programs(env_id, settings)
    config = prog.config
    low, high = (np.asarray(x) for x in _box(prog.env.action_space(prog.env_params)))
    center, scale = (high + low) / 2.0, (high - low) / 2.0
    num_chunks = (int(config.total_timesteps) - int(config.learning_starts)) // \
        int(config.num_steps)
    k_train, k_eval, k_random, k_medium, k_expert = jax.random.split(jax.random.key(seed), 5)
    episodes = {k: int(v) for k, v in settings["episodes"].items()}

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_chunks + 1 + len(_ROLLOUT_KINDS) + 1, unit="stage",
                   dynamic_ncols=True, desc=f"{prefix}: random data")

    def advance(desc: str | None = None, **postfix):
        if bar is not None:
            bar.update(1)
            if desc:
                bar.set_description(f"{prefix}: {desc}", refresh=False)
            if postfix:
                bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    try:
        data = {"random": flatten_episodes(prog.rollout(k_random, None,
                                                        num_episodes=episodes["random"],
                                                        mode="random"))}
        r_random = _mean_return(data["random"])
        advance("SAC", random_return=r_random)

        snapshots = []

        def snapshot(state):
            det, sto = jax.device_get(prog.evaluate(state.actor_params, k_eval, k_medium))
            steps = int(config.learning_starts) + int(state.step) * int(config.num_steps)
            # Steps into the episode still running (envs.wrappers.EpisodeStats, one env):
            # the replay data is cut before it.
            partial = int(np.asarray(state.env_state.episode_length)[0])
            snapshots.append({"env_steps": steps, "partial_episode": partial,
                              "eval_return": float(det), "sampled_return": float(sto),
                              "params": jax.device_get(state.actor_params)})

        state = prog.init(k_train)
        snapshot(state)
        for _ in range(num_chunks):
            state = prog.chunk(state)
            snapshot(state)
            advance(eval_return=snapshots[-1]["eval_return"],
                    sampled_return=snapshots[-1]["sampled_return"])
        buffer = jax.device_get(state.buffer.data)
        expert = snapshots[-1]
        advance("expert data")
        data["expert"] = flatten_episodes(prog.rollout(k_expert, expert["params"],
                                                       num_episodes=episodes["expert"],
                                                       mode="sample"))
        ref_min, ref_max = r_random, _mean_return(data["expert"])

        # medium: the first snapshot whose medium data would score about a third of expert.
        span = ref_max - ref_min if ref_max != ref_min else 1.0
        scores = [100.0 * (s["sampled_return"] - ref_min) / span for s in snapshots]
        candidates = scores[:-1] if len(scores) > 1 else scores
        m = select_medium(candidates, float(settings["medium_score"]),
                          float(settings["medium_tolerance"]))
        medium = snapshots[m]
        advance("medium data")
        data["medium"] = flatten_episodes(prog.rollout(k_medium, medium["params"],
                                                       num_episodes=episodes["medium"],
                                                       mode="sample"))
        # Replay up to the medium snapshot, cut after the last episode that had ended.
        end = medium["env_steps"] - medium["partial_episode"]
        replay_partial = end <= 0
        if replay_partial:  # no episode ended yet: keep the started one (ends in a timeout)
            end = medium["env_steps"]
        data["medium-replay"] = _replay_arrays(buffer, end, center, scale, low, high)
        data["medium-expert"] = _concat(data["medium"], data["expert"])
        advance("writing")

        def snap_info(s, k):
            return {"index": k, "env_steps": s["env_steps"], "eval_return": s["eval_return"],
                    "sampled_return": s["sampled_return"], "normalized": scores[k]}

        generator = {
            "algorithm": "sac", "settings": settings, "sac_config": _config_dict(config),
            "medium_rule": (f"first snapshot before the final one whose medium data (the "
                            f"stochastic policy on the medium episodes) has a normalized score "
                            f"within {settings['medium_tolerance']} of "
                            f"{settings['medium_score']:.4g}, else the closest"),
            "medium_snapshot": snap_info(medium, m),
            "expert_snapshot": snap_info(expert, len(snapshots) - 1),
            "replay_transitions": int(end), "replay_last_episode_partial": bool(replay_partial),
            "curve": {"env_steps": [s["env_steps"] for s in snapshots],
                      "eval_return": [s["eval_return"] for s in snapshots],
                      "sampled_return": [s["sampled_return"] for s in snapshots]},
        }
        policies = {
            "random": "uniform random actions in the action box",
            "medium": (f"SAC stochastic policy after {medium['env_steps']} env steps "
                       f"(normalized score {scores[m]:.1f})"),
            "expert": f"SAC stochastic policy after {expert['env_steps']} env steps (final)",
            "medium-replay": (f"SAC replay buffer, first {end} env steps of training "
                              f"({config.learning_starts} uniform random warm-up steps, then "
                              f"the learning policy) up to the medium snapshot"),
            "medium-expert": "the medium data followed by the expert data",
        }
        paths = {}
        for kind in datasets_lib.KINDS:
            name = f"{prefix}-{kind}-v0"
            arrays = data[kind]
            metadata = {"name": name, "env": env_id, "env_options": settings["env_options"],
                        "kind": kind, "policy": policies[kind], "seed": int(seed),
                        "behaviour_return": _mean_return(arrays),
                        "num_episodes": _num_episodes(arrays),
                        "ref_min_score": ref_min, "ref_max_score": ref_max,
                        "code_version": code_version(), "generator": generator}
            path = datasets_lib.save_hdf5(datasets_lib.dataset_path(name),
                                          datasets_lib.Dataset(arrays, metadata))
            paths[name] = str(path)
        advance("done")
    finally:
        if bar is not None:
            bar.close()
    return paths


def _config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def ensure(name: str, progress: bool = True) -> str:
    """Path of the cached dataset `name`; if the file is missing, generates its environment's
    five datasets (seed 0) first. Only a complete file at the exact path counts: a leftover
    temporary file of an interrupted write is ignored."""
    prefix = datasets_lib.parse_name(name)[0]
    path = datasets_lib.dataset_path(name)
    if not path.is_file():
        generate(prefix, progress=progress)
    return str(path)


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
        ret = _mean_return(ds.arrays)
        rows.append({"name": name, "transitions": ds.size,
                     "episodes": _num_episodes(ds.arrays), "mean_return": ret,
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
            generate(fl.env, seed=fl.seed, progress=fl.progress)
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
