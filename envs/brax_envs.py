"""Brax / MJX locomotion environments (hopper, halfcheetah, walker2d) behind the gymnax interface.

    env, params = envs.make("brax-hopper")                  # needs the optional extra:
    env, params = envs.make("brax-hopper", backend="mjx")   #   pip install -e '.[brax]'
    env, params = envs.make("brax-hopper", backend="mjx", model="gymnasium")

Brax (Freeman et al. 2021, "Brax - A Differentiable Physics Engine for Large Scale Rigid Body
Simulation", arXiv:2106.13281) steps whole batches of MuJoCo-style robots in JAX, so on an
accelerator the dataset pipeline (`envs.generation`), online SAC/TD3 and offline evaluation run
on them unchanged: this adapter gives a brax-style env gymnax's `reset_env` / `step_env`, a
time limit in `EnvParams.max_steps_in_episode` (1000, as D4RL's Gym-MuJoCo tasks) and Box
spaces; gymnax's `Environment.step` adds the auto-reset and the six-value return (terminated =
the robot fell, truncated = the time limit).

Two models of each robot:
  model="brax"       brax's own envs (`brax.envs.get_environment`), on any brax backend: its
                     XML, observation, reward and reset follow brax, not gymnasium (sizes in
                     brax 0.14: hopper 11 / 3, halfcheetah 18 / 6, walker2d 17 / 6).
  model="gymnasium"  gymnasium's Hopper-v5 / HalfCheetah-v5 / Walker2d-v5 on MJX
                     (`envs.mujoco_match`): gymnasium's XML files, observation layout, reward
                     terms and health rules (sizes 11 / 3, 17 / 6, 17 / 6, as D4RL's files);
                     backend "mjx" only. The D4RL-style datasets hopper-*, halfcheetah-*,
                     walker2d-* are generated with it (`envs.generation_config`).
Brax's default physics backend is "generalized"; "positional" and "spring" are cheaper
approximations (fastest to compile and run on a CPU), "mjx" is MuJoCo's own dynamics.
The step draws no randomness (only `reset` does), so the step key is unused.

brax is imported only when an environment is built: without it, `envs.make("brax-hopper")`
raises an ImportError naming the extra to install, and nothing else in the codebase needs it.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

# envs.make name -> brax.envs name
BRAX_ENVS = {"brax-hopper": "hopper", "brax-halfcheetah": "halfcheetah",
             "brax-walker2d": "walker2d"}
BACKENDS = ("generalized", "positional", "spring", "mjx")
MODELS = ("brax", "gymnasium")


def _brax_envs():
    try:
        from brax import envs as brax_envs
    except ImportError as e:  # the optional extra is not installed
        raise ImportError(f"the brax environments ({', '.join(BRAX_ENVS)}) need the optional "
                          "brax extra: pip install -e '.[brax]' (brax pulls mujoco and "
                          "mujoco-mjx; an accelerator is recommended)") from e
    return brax_envs


@struct.dataclass
class BraxEnvState:
    brax_state: Any  # brax.envs.State or mujoco_match.LocomotionState: obs, reward, done
    time: jax.Array  # int32 steps since reset (gymnax's time limit reads it)


@struct.dataclass
class BraxEnvParams(environment.EnvParams):
    max_steps_in_episode: int = 1000  # D4RL Gym-MuJoCo episodes


class BraxEnv(environment.Environment):
    """gymnax view of `brax.envs.get_environment(env_name, backend=backend)`.

    Args:
      env_name: a brax env name ("hopper", "halfcheetah", "walker2d", ...).
      backend: brax physics backend, one of BACKENDS.
      model: "brax" (brax's env) or "gymnasium" (gymnasium's v5 env on MJX; backend "mjx").
    """

    def __init__(self, env_name: str = "hopper", backend: str = "generalized",
                 model: str = "brax"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown brax backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if model not in MODELS:
            raise ValueError(f"unknown locomotion model {model!r}; valid: {', '.join(MODELS)}")
        if model == "gymnasium" and backend != "mjx":
            raise ValueError(f"model 'gymnasium' runs on MuJoCo's dynamics: backend must be "
                             f"'mjx', got {backend!r}")
        self.env_name, self.backend, self.model = env_name, backend, model
        if model == "gymnasium":
            from envs import mujoco_match
            mujoco_match._mujoco_modules()  # fail here, naming the extra, when it is missing
        else:
            _brax_envs()  # fail here, naming the extra, when brax is missing

    @functools.cached_property
    def _env(self):
        """The brax-style env, built on first use: `envs.env_options` constructs a BraxEnv only
        to read its default params, which need no physics model."""
        if self.model == "gymnasium":
            from envs import mujoco_match
            return mujoco_match.MjxLocomotion(self.env_name)
        return _brax_envs().get_environment(self.env_name, backend=self.backend)

    @property
    def default_params(self) -> BraxEnvParams:
        return BraxEnvParams()

    @property
    def name(self) -> str:
        return f"brax-{self.env_name}"

    def reset_env(self, key, params):
        brax_state = self._env.reset(key)
        return brax_state.obs, BraxEnvState(brax_state, jnp.int32(0))

    def step_env(self, key, state, action, params):
        del key  # brax dynamics are deterministic
        brax_state = self._env.step(state.brax_state, action)
        terminated = brax_state.done > 0.5
        new_state = BraxEnvState(brax_state, (state.time + 1).astype(jnp.int32))
        return (brax_state.obs, new_state, brax_state.reward.astype(jnp.float32), terminated,
                {})

    def is_terminated(self, state, params):
        return state.brax_state.done > 0.5

    @property
    def num_actions(self) -> int:
        return int(self._env.action_size)

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (int(self._env.action_size),), jnp.float32)

    def observation_space(self, params=None):
        return spaces.Box(-jnp.inf, jnp.inf, (int(self._env.observation_size),), jnp.float32)
