r"""D4RL-style offline datasets made with the project's own SAC: random, medium, expert,
medium-replay and medium-expert for each environment of `envs.datasets.ENVS`.

    generate("pendulum")                  # the five kinds into envs.datasets.cache_dir()
    ensure("pendulum-medium-replay-v0")   # cache path; the five are generated on first use

The settings per environment are `envs.generation_config.GENERATION`; the command line is
`python -m launch.datasets`. The recipe is D4RL's for Gym-MuJoCo (Fu, Kumar, Nachum, Tucker,
Levine 2020, "D4RL: Datasets for Deep Data-Driven Reinforcement Learning", arXiv:2004.07219,
Sec. 5 and App. C) at a smaller scale:

  1. random  = uniform random actions in the action box (D4RL used a randomly initialised
     policy; uniform actions make ref_min_score the usual "random policy" reference).
  2. SAC (`algorithms.online.sac`, Haarnoja et al. 2018) trains one seed in jitted chunks of
     `snapshot_every` environment steps. After each chunk the actor is kept (a "snapshot")
     with two returns: the deterministic tanh(mean) policy's on `eval_episodes` episodes (the
     learning curve) and R_k, the stochastic policy's on exactly the episodes the medium data
     would hold if this snapshot were chosen (same key, same count). The first snapshot is the
     untrained actor after the uniform warm-up (`learning_starts` steps).
  3. expert  = the final snapshot (no selection on noisy evaluations).
  4. medium  = the first snapshot before the final one whose normalized score
     S_k = 100 (R_k - ref_min_score) / (ref_max_score - ref_min_score) is within
     medium_tolerance of medium_score (D4RL: "about a third of the expert"), else the closest
     (`select_medium`). R_k is the return of the medium data itself, so the rule is judged on
     the data users get.
  5. medium-replay = SAC's replay buffer in filling order, from the first warm-up step up to
     the medium snapshot, cut at the last episode that had ended by then (D4RL: "all samples
     in the replay buffer observed during training until the policy reaches the medium
     level").
  6. medium-expert = the medium data followed by the expert data.

medium and expert are rollouts of the stochastic policy a ~ tanh(N(mu(s), sigma(s))), as in
D4RL. Every kind stores whole episodes, run in parallel (vmap) from reset to their first end in
one jitted scan. Actions are stored in environment units, center + scale * a clipped to the box
(SAC acts in [-1, 1]); `terminals` = terminated, `timeouts` = truncated and not terminated,
`next_observations` = the true next observation, also at an episode's end (gymnax's pre-reset
`info["final_observation"]`, which SAC's replay buffer stores too). Replay-buffer episode ends
are recovered from the buffer order with `algorithms.core.episodes.episode_ends`.

ref_min_score = the random data's mean episode return, ref_max_score = the expert data's,
shared by all five kinds of an environment. Everything is a function of `seed` (one root key,
split per stage): the same seed gives bit-identical arrays. The five files are written as one
set with `envs.datasets.save_set` after everything was generated (an interrupted write never
leaves a mix of two generations unnoticed); their metadata records the settings, the chosen
snapshots, the learning curve, the code version and the set id.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import numpy as np

import envs
from algorithms.core import episodes
from algorithms.core.networks import TanhGaussianPolicy, flatten_obs
from algorithms.core.spaces import box_center_scale
from algorithms.online import sac
from envs import datasets as datasets_lib
from envs.generation_config import ROLLOUT_KINDS, generation_settings, sac_config

# Replay-buffer episode ends compare next_obs[i] with obs[i + 1] up to rounding: XLA may
# compute the final observation and the observation it passes on in two fusions that round
# differently (1-ulp differences in Pendulum's angular velocity).
_REPLAY_RTOL = _REPLAY_ATOL = 1e-5


def select_medium(scores, target: float, tolerance: float) -> int:
    """Index of the medium snapshot among normalized scores in training order.

    The first k with |scores[k] - target| <= tolerance; if there is none, argmin_k
    |scores[k] - target| (the earliest on ties).
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    distance = np.abs(scores - target)
    inside = np.flatnonzero(distance <= tolerance)
    return int(inside[0]) if inside.size else int(np.argmin(distance))


def _action_bounds(space) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a Box space as float32 arrays of its shape (for clipping)."""
    return tuple(np.broadcast_to(np.asarray(x, np.float32), space.shape)
                 for x in (space.low, space.high))


# ---------------------------------------------------------------------------- jitted programs
def rollout(key, actor_params, *, env, env_params, actor, num_episodes: int, mode: str):
    """`num_episodes` parallel episodes, each from reset to its first end (a lax.scan over
    max_steps_in_episode steps; steps after an episode's end are masked by "alive").

    mode: "random" (uniform actions in the box), "sample" (a ~ tanh(N(mu, sigma)), the
    stochastic SAC policy) or "mean" (tanh(mu)). Returns the D4RL arrays [num_episodes, T, ...]
    (actions in environment units) plus "alive" [num_episodes, T].
    """
    if mode not in ("random", "sample", "mean"):
        raise ValueError(f"unknown rollout mode {mode!r}; valid: random, sample, mean")
    space = env.action_space(env_params)
    low, high = _action_bounds(space)
    center, scale = box_center_scale(space)
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
            policy = actor.apply(actor_params, flat)
            a = policy.mode() if mode == "mean" else policy.sample_and_log_prob(seed=k_act)[0]
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

    An episode still running at the last step gets a timeout there, so every episode ends.
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
    """The jitted programs of one (environment, SAC config, eval size), built once per process
    (`_programs`), so generating again with the same settings compiles nothing."""

    def __init__(self, env_id: str, env_options: dict, sac_settings: dict, run: dict,
                 eval_episodes: int, medium_episodes: int):
        self.env, self.env_params = envs.make(env_id, **env_options)
        self.task = envs.Task(self.env, self.env_params)
        self.config = config = sac_config({"sac": sac_settings, **run})
        task = self.task
        action_dim = self.env.action_space(self.env_params).shape[0]
        self.actor = TanhGaussianPolicy(hidden_sizes=tuple(config.hidden_sizes),
                                        action_dim=action_dim)
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


def _mean_return(arrays: dict) -> float:
    returns = datasets_lib.episode_returns(arrays)
    return float(returns.mean()) if returns.size else float("nan")


def _replay_arrays(buffer: dict, end: int, center: np.ndarray, scale: np.ndarray,
                   low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    """The first `end` replay-buffer transitions as D4RL arrays (actions in env units); the
    stream is cut at an episode end, so its last row ends an episode."""
    obs = np.asarray(buffer["obs"][:end], np.float32)
    next_obs = np.asarray(buffer["next_obs"][:end], np.float32)
    terminated = np.asarray(buffer["terminated"][:end]) > 0.5
    ends = episodes.episode_ends(terminated, observations=obs, next_observations=next_obs,
                                 rtol=_REPLAY_RTOL, atol=_REPLAY_ATOL, close_last=True)
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
    datasets_lib.cache_dir()  # a cache path that is a file fails now, not after the training
    prog = _programs(env_id, settings)
    config = prog.config
    space = prog.env.action_space(prog.env_params)
    low, high = _action_bounds(space)
    center, scale = box_center_scale(space)
    num_chunks = (int(config.total_timesteps) - int(config.learning_starts)) // \
        int(config.num_steps)
    k_train, k_eval, k_random, k_medium, k_expert = jax.random.split(jax.random.key(seed), 5)
    num_episodes = {k: int(v) for k, v in settings["episodes"].items()}

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_chunks + 1 + len(ROLLOUT_KINDS) + 1, unit="stage",
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
                                                        num_episodes=num_episodes["random"],
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
                                                       num_episodes=num_episodes["expert"],
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
                                                       num_episodes=num_episodes["medium"],
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
        datasets = {}
        for kind in datasets_lib.KINDS:
            name = f"{prefix}-{kind}-v0"
            arrays = data[kind]
            ends = episodes.episode_ends(arrays["terminals"], arrays["timeouts"])
            metadata = {"name": name, "env": env_id, "env_options": settings["env_options"],
                        "kind": kind, "policy": policies[kind], "seed": int(seed),
                        "behaviour_return": _mean_return(arrays),
                        "num_episodes": int(np.sum(ends)),
                        "ref_min_score": ref_min, "ref_max_score": ref_max,
                        "code_version": code_version(), "generator": generator}
            datasets[name] = datasets_lib.Dataset(arrays, metadata)
        paths = {name: str(path) for name, path in
                 datasets_lib.save_set(prefix, datasets).items()}
        advance("done")
    finally:
        if bar is not None:
            bar.close()
    return paths


def _config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def ensure(name: str, *, progress: bool = True) -> pathlib.Path:
    """Path of the cached dataset `name`; if the file is missing, its environment's five
    datasets are generated first (seed 0). Only a complete file at the exact path counts: a
    leftover temporary of an interrupted write is ignored (and removed by the generation).
    Whether the cached set is complete and from one generation is `envs.datasets.check_set`."""
    prefix = datasets_lib.parse_name(name)[0]
    path = datasets_lib.dataset_path(name)
    if not path.is_file():
        generate(prefix, progress=progress)
    return path
