"""A one-step continuous bandit whose offline data has two well-separated action modes.

The task on which a multimodal policy class differs visibly from a unimodal one (the
motivating example of Wang, Hunt & Zhou 2023, Sec. 4 / Fig. 1, and of IDQL Sec. 6):

* Observation: s ~ N(0, I_d) at reset (d = `obs_dim`), drawn afresh every episode. It carries
  no information about the reward, so the best policy is the same at every state.
* Action: a in [-1, 1] (one dimension). Every episode ends after this one action.
* Reward: two Gaussian bumps, a better and a worse one,
      r(a) = good_reward exp(-(a - good_mode)^2 / (2 width^2))
             + bad_reward exp(-(a - bad_mode)^2 / (2 width^2)).

`behaviour_dataset` draws the offline data: at every state the behaviour action is the good
mode with probability `good_fraction`, else the bad one, plus N(0, noise^2), clipped to the
box; every transition is terminal, so Q(s, a) = r(a) exactly. Its reference returns for the
normalized score are the uniform-random policy's expected reward (random) and r(good_mode)
(the best deterministic action up to the bad bump's negligible tail at good_mode).

Registered in `envs` as "two-mode-bandit" (params as `--config.env.*` options).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

NAME = "two-mode-bandit"


@struct.dataclass
class EnvState(environment.EnvState):
    obs: jax.Array
    time: int


@struct.dataclass
class EnvParams(environment.EnvParams):
    good_mode: float = 0.8
    bad_mode: float = -0.8
    good_reward: float = 1.0
    bad_reward: float = 0.5
    width: float = 0.2
    max_steps_in_episode: int = 1


def reward(action: jax.Array, params: EnvParams) -> jax.Array:
    """r(a) for actions [..., 1] (or [...]: a scalar action per row) -> [...]."""
    a = jnp.asarray(action, jnp.float32)
    a = a[..., 0] if a.ndim and a.shape[-1] == 1 else a

    def bump(mode):
        return jnp.exp(-((a - mode) ** 2) / (2.0 * params.width ** 2))

    return params.good_reward * bump(params.good_mode) + params.bad_reward * bump(params.bad_mode)


class TwoModeBandit(environment.Environment):
    """gymnax environment of the module docstring; `obs_dim` is a constructor option."""

    def __init__(self, obs_dim: int = 2):
        super().__init__()
        if not isinstance(obs_dim, int) or obs_dim < 1:
            raise ValueError(f"obs_dim must be a positive integer, got {obs_dim!r}")
        self.obs_dim = obs_dim

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(self, key, state: EnvState, action, params: EnvParams):
        r = reward(jnp.clip(action, -1.0, 1.0), params)
        next_obs = jax.random.normal(key, (self.obs_dim,), jnp.float32)
        state = EnvState(obs=next_obs, time=state.time + 1)
        return (jax.lax.stop_gradient(next_obs), jax.lax.stop_gradient(state),
                jnp.asarray(r, jnp.float32), self.is_terminated(state, params), {})

    def reset_env(self, key, params: EnvParams):
        obs = jax.random.normal(key, (self.obs_dim,), jnp.float32)
        return obs, EnvState(obs=obs, time=0)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Every episode ends (terminates: nothing to bootstrap) after its one action."""
        return jnp.asarray(state.time >= 1)

    @property
    def name(self) -> str:
        return NAME

    @property
    def num_actions(self) -> int:
        return 1

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_dim,), jnp.float32)


def expected_random_reward(params: EnvParams) -> float:
    """E[r(a)] for a ~ U[-1, 1]: each bump integrates to w sqrt(2 pi) (Phi(hi) - Phi(lo))."""
    def bump_mass(mode):
        cdf = [0.5 * (1.0 + math.erf((edge - mode) / (params.width * math.sqrt(2.0))))
               for edge in (-1.0, 1.0)]
        return params.width * math.sqrt(2.0 * math.pi) * (cdf[1] - cdf[0])

    return 0.5 * (params.good_reward * bump_mass(params.good_mode)
                  + params.bad_reward * bump_mass(params.bad_mode))


def behaviour_dataset(size: int = 2048, good_fraction: float = 0.5, noise: float = 0.05,
                      seed: int = 0, obs_dim: int = 2, params: EnvParams | None = None):
    """Offline data of the two-mode behaviour policy as an `envs.datasets.Dataset`.

    size transitions; at each, s ~ N(0, I), a = (good_mode with probability good_fraction,
    else bad_mode) + N(0, noise^2) clipped to [-1, 1], r = r(a), terminal, s' ~ N(0, I).
    Metadata: env "two-mode-bandit" with its options, the reference returns of the module
    docstring, and "good_fraction" (the realised fraction of good-mode actions).
    """
    from envs.datasets import Dataset  # the dataset module imports envs: import at call time

    if not 0.0 <= good_fraction <= 1.0:
        raise ValueError(f"good_fraction must be in [0, 1], got {good_fraction!r}")
    if size < 1 or noise < 0:
        raise ValueError(f"size must be >= 1 and noise >= 0, got size={size!r}, noise={noise!r}")
    params = EnvParams() if params is None else params
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((size, obs_dim)).astype(np.float32)
    good = rng.random(size) < good_fraction
    centre = np.where(good, params.good_mode, params.bad_mode)
    actions = np.clip(centre + noise * rng.standard_normal(size), -1.0, 1.0)
    actions = actions[:, None].astype(np.float32)
    arrays = {
        "observations": obs,
        "actions": actions,
        "rewards": np.asarray(reward(actions, params), np.float32),
        "next_observations": rng.standard_normal((size, obs_dim)).astype(np.float32),
        "terminals": np.ones(size, bool),
        "timeouts": np.zeros(size, bool),
    }
    options: dict[str, Any] = {"obs_dim": obs_dim, **{
        f: float(getattr(params, f)) for f in ("good_mode", "bad_mode", "good_reward",
                                               "bad_reward", "width")}}
    metadata = {"name": f"{NAME}-{good_fraction:g}", "env": NAME, "env_options": options,
                "ref_min_score": expected_random_reward(params),
                "ref_max_score": float(reward(jnp.float32([params.good_mode]), params)),
                "good_fraction": float(good.mean())}
    return Dataset(arrays=arrays, metadata=metadata)


def mode_fractions(actions, params: EnvParams | None = None, radius: float = 0.25):
    """(good, bad, between): the fractions of `actions` (any shape, one action each) within
    `radius` of the good mode, within `radius` of the bad mode, and strictly between the two
    windows (the region a unimodal fit of the two modes puts its mass in)."""
    params = EnvParams() if params is None else params
    a = np.asarray(actions, np.float64).ravel()
    good = np.abs(a - params.good_mode) < radius
    bad = np.abs(a - params.bad_mode) < radius
    low, high = sorted((params.good_mode, params.bad_mode))
    between = (a > low + radius) & (a < high - radius)
    return float(good.mean()), float(bad.mean()), float(between.mean())
