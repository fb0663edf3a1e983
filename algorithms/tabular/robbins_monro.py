"""Robbins-Monro root finding (S. Zhao, Mathematical Foundations of RL, Ch. 6.2).

Find the root w* of g(w) = 0 from noisy observations g~(w, eta) = g(w) + eta only:

    w_{k+1} = w_k - a_k g~(w_k, eta_k),       a_k = step_scale / k^step_power   (k = 1, 2, ...)

The RM theorem (Thm. 6.1) gives w_k -> w* almost surely if 0 < c1 <= dg/dw <= c2,
sum_k a_k = inf, sum_k a_k^2 < inf, and the noise has zero mean and bounded variance given the
past. For a_k = c / k^p the two sums need p in (0.5, 1]; p = 0 (a constant step) breaks
sum a_k^2 < inf, and w_k then keeps fluctuating around w* with a variance that does not vanish
(for a linear g with slope 1: about a sigma^2 / (2 - a)).

Problems (`config.problem`):
  "tanh": the book's example g(w) = tanh(w - 1), root w* = 1, started at w_1 = 3 (the book's
          example is noise-free; set `noise_std = 0` to reproduce its curve);
  "mean": mean estimation as RM (Ch. 6.1-6.2): g(w) = w - E[X] with X ~ N(mean, noise_std^2);
          the observation w - x equals g(w) + eta with eta = E[X] - x. With a_k = 1/k the
          iterate is exactly the sample mean of x_1 .. x_k.

One `update` is `steps_per_update` RM steps (lax.scan). No environment: `task` is None.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.tabular import common

TASK_FLAG = None  # no environment: `task` is None
DEFAULT_TASK = None
PRIMARY_METRIC = "eval/abs_error"
make_task = common.no_task
PROBLEMS = ("tanh", "mean")
# step_power: the RM conditions need (0.5, 1]; other non-negative powers are allowed to show
# what breaks (0: a constant step).
CONFIG_RULES = {"problem": rules.one_of(*PROBLEMS), "w0": rules.finite(),
                "mean": rules.finite(), "noise_std": rules.non_negative,
                "step_scale": rules.positive, "step_power": rules.non_negative,
                "steps_per_update": rules.count}


@struct.dataclass
class State:
    w: jax.Array  # current estimate w_k (float scalar)
    k: jax.Array  # int32: number of RM steps taken so far (the next step uses a_{k+1})
    key: jax.Array  # typed PRNG key
    step: jax.Array  # int32: number of `update` calls


def default_config() -> ml_collections.ConfigDict:
    config = common.tabular_config(num_updates=1000, log_every=50)
    config.problem = "tanh"  # "tanh": g(w) = tanh(w - 1) (the book's example); "mean"
    config.w0 = 3.0  # w_1 (the book's example starts at 3)
    config.mean = 1.0  # E[X] for problem "mean"
    config.noise_std = 0.5  # std of eta (the book's tanh example is noise-free: 0)
    config.step_scale = 1.0  # a_k = step_scale / k^step_power
    config.step_power = 1.0  # RM conditions need (0.5, 1]; 0 gives a constant step
    config.steps_per_update = 1  # RM steps per `update`
    return config


def root(config) -> float:
    """w* of the configured problem."""
    if config.problem == "tanh":
        return 1.0
    if config.problem == "mean":
        return float(config.mean)
    raise ValueError(f"unknown problem {config.problem!r}; valid choices: {', '.join(PROBLEMS)}")


def g(w, config):
    """The (unknown to the algorithm) function whose root is sought."""
    if config.problem == "tanh":
        return jnp.tanh(w - 1.0)
    return w - config.mean


def step_size(k, config):
    """a_k for k = 1, 2, ... (float)."""
    return config.step_scale / jnp.asarray(k, jnp.result_type(float)) ** config.step_power


def init(key, config, task=None) -> State:
    del task
    root(config)  # validates config.problem
    return State(w=jnp.asarray(config.w0, jnp.result_type(float)), k=jnp.int32(0), key=key,
                 step=jnp.int32(0))


def update(state: State, config, task=None):
    del task
    key, sub = jax.random.split(state.key)

    def rm_step(carry, step_key):
        w, k = carry
        k = k + 1
        eta = config.noise_std * jax.random.normal(step_key, (), w.dtype)
        g_obs = g(w, config) + eta
        w = w - step_size(k, config).astype(w.dtype) * g_obs
        return (w, k), g_obs

    (w, k), g_obs = jax.lax.scan(rm_step, (state.w, state.k),
                                 jax.random.split(sub, config.steps_per_update))
    metrics = {"w": w, "abs_error": jnp.abs(w - root(config)),
               "step_size": step_size(k, config), "mean_observation": jnp.mean(g_obs)}
    return State(w=w, k=k, key=key, step=state.step + 1), metrics


def evaluate(state: State, key, config, task=None):
    del key, task
    return {"abs_error": jnp.abs(state.w - root(config)), "w": state.w}
