"""Mean estimation by SGD, BGD and MBGD (S. Zhao, Mathematical Foundations of RL, Ch. 6.4).

Minimize J(w) = E[ ||w - X||^2 / 2 ], whose gradient is w - E[X] (so w* = E[X]), from a fixed
data set {x_i}_{i=1}^n:

    BGD:   w_{k+1} = w_k - a_k ( w_k - (1/n) sum_{i=1}^n x_i )        (all samples)
    MBGD:  w_{k+1} = w_k - a_k ( w_k - (1/m) sum_{j in I_k} x_j )      (|I_k| = m)
    SGD:   w_{k+1} = w_k - a_k ( w_k - x_k )                           (m = 1)

with a_k = step_scale / k^step_power (the book uses a_k = 1/k). With a_k = 1/k, SGD's iterate is
exactly the incremental mean of the samples drawn so far, w_{k+1} = (1/k) sum_{j<=k} x_j
(Ch. 6.1), whatever w_1 is; BGD reaches the sample mean of the data set in one step.

Data (the book's example, Ch. 6.4): X uniform on the square [-a, a]^2 with a = `half_width` = 10
(side 20) centred at `mean` (the book: the origin), n = `num_samples` = 100 points drawn in
`init` from the seed's key, w_1 = `w0` (the book: (50, 50)).

Batches (`sampling`): "random" draws I_k uniformly WITH replacement (the book's MBGD, which is why
MBGD with m = n is not BGD there); "sequential" takes the next m points cyclically (0, 1, 2,
...), so SGD visits the data in order and MBGD with m = n is exactly BGD.

`evaluate` reports ||w - E[X]|| ("abs_error"), ||w - mean of the data set||
("sample_mean_error"), and ||w - mean of all samples drawn so far|| ("drawn_mean_error"; 0 up
to rounding for SGD with a_k = 1/k).
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

METHODS = ("sgd", "mbgd", "bgd")
SAMPLINGS = ("random", "sequential")
CONFIG_RULES = {"method": rules.one_of(*METHODS), "sampling": rules.one_of(*SAMPLINGS),
                "dim": rules.count, "half_width": rules.non_negative, "mean": rules.finite(),
                "w0": rules.finite(), "step_scale": rules.positive,
                "step_power": rules.non_negative}


@struct.dataclass
class State:
    w: jax.Array  # estimate [D]
    data: jax.Array  # the fixed data set [n, D]
    drawn_sum: jax.Array  # sum of all samples used so far [D] (with multiplicity)
    drawn_count: jax.Array  # int32: number of samples used so far
    k: jax.Array  # int32: iterations taken (the next one uses a_{k+1})
    key: jax.Array  # typed PRNG key
    step: jax.Array  # int32


def default_config() -> ml_collections.ConfigDict:
    config = common.tabular_config(num_updates=400, log_every=20)
    config.method = "sgd"  # "sgd" | "mbgd" | "bgd"
    config.batch_size = 5  # m for "mbgd" (the book compares m = 1, 5, 50)
    config.sampling = "random"  # "random": with replacement (book); "sequential": in order
    config.num_samples = 100  # n (the book's example)
    config.dim = 2  # the book's example is 2-D
    config.half_width = 10.0  # a: X uniform on [-a, a]^dim + mean (the book: side length 20)
    config.mean = 0.0  # E[X] (every coordinate; the book: the origin)
    config.w0 = 50.0  # w_1 (every coordinate; the book starts at (50, 50))
    config.step_scale = 1.0  # a_k = step_scale / k^step_power (the book: 1/k)
    config.step_power = 1.0
    return config


def _check(config):
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; valid choices: {METHODS}")
    if config.sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {config.sampling!r}; valid: 'random', 'sequential'")


def batch_size(config) -> int:
    return {"sgd": 1, "mbgd": int(config.batch_size), "bgd": int(config.num_samples)}[config.method]


def true_mean(config):
    return jnp.full((config.dim,), config.mean, jnp.result_type(float))


def init(key, config, task=None) -> State:
    del task
    _check(config)
    key, k_data = jax.random.split(key)
    dtype = jnp.result_type(float)
    data = config.mean + jax.random.uniform(k_data, (config.num_samples, config.dim), dtype,
                                            -config.half_width, config.half_width)
    return State(w=jnp.full((config.dim,), config.w0, dtype), data=data,
                 drawn_sum=jnp.zeros((config.dim,), dtype), drawn_count=jnp.int32(0),
                 k=jnp.int32(0), key=key, step=jnp.int32(0))


def update(state: State, config, task=None):
    del task
    n, m = config.num_samples, batch_size(config)
    key, sub = jax.random.split(state.key)
    if config.method == "bgd":
        idx = jnp.arange(n)
    elif config.sampling == "random":
        idx = jax.random.randint(sub, (m,), 0, n)
    else:
        idx = (state.drawn_count + jnp.arange(m)) % n
    batch = state.data[idx]
    k = state.k + 1
    a_k = config.step_scale / k.astype(state.w.dtype) ** config.step_power
    grad = state.w - jnp.mean(batch, axis=0)
    w = state.w - a_k * grad
    new = State(w=w, data=state.data, drawn_sum=state.drawn_sum + batch.sum(0),
                drawn_count=state.drawn_count + m, k=k, key=key, step=state.step + 1)
    metrics = {"abs_error": jnp.linalg.norm(w - true_mean(config)),
               "grad_norm": jnp.linalg.norm(grad), "step_size": a_k}
    return new, metrics


def evaluate(state: State, key, config, task=None):
    del key, task
    drawn_mean = state.drawn_sum / jnp.maximum(state.drawn_count, 1)
    return {"abs_error": jnp.linalg.norm(state.w - true_mean(config)),
            "sample_mean_error": jnp.linalg.norm(state.w - jnp.mean(state.data, axis=0)),
            "drawn_mean_error": jnp.linalg.norm(state.w - drawn_mean)}
