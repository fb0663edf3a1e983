"""Standard normal draws with the values of `jax.random.normal`, from an unrolled Threefry.

`normal(key, shape, dtype)` returns exactly `jax.random.normal(key, shape, dtype)` for a
threefry key (JAX's default implementation) in float32 under JAX's default
``jax_threefry_partitionable=True``; for any other key implementation, dtype or setting it
calls `jax.random.normal` itself. The values are JAX's: in that mode element f of the flat
array takes the 32 bits y0 ^ y1 of the Threefry-2x32 block (y0, y1) = threefry(key, (0, f))
(Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", 20 rounds), whose top 23
bits become a float u uniform in [nextafter(-1, 0), 1), and the draw is sqrt(2) erfinv(u).

Why not call `jax.random.normal`: XLA's CPU lowering of JAX's threefry primitive is a rolled
loop (five iterations of four rounds), so every draw is a small loop of its own, outside
the fusions around it; written here as 20 rounds of plain uint32 arithmetic, the whole draw
is elementwise and XLA fuses it into one kernel, on every backend. `tests/test_samplers.py`
checks the values against `jax.random.normal` bit for bit.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["threefry2x32", "normal", "uses_unrolled_threefry"]

# Threefry-2x32 rotation constants (Salmon et al. 2011, Table 4): rounds 1-4 and 5-8 of each
# 8-round cycle; the key is injected after every 4 rounds.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(v, r: int):
    return lax.shift_left(v, np.uint32(r)) | lax.shift_right_logical(v, np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 block function with 20 rounds: key words k0, k1 (uint32 scalars),
    counter words x0, x1 (uint32 arrays of one shape) -> the two output words (y0, y1).
    The same function as `jax.extend.random.threefry_2x32`, unrolled."""
    ks = (k0, k1, k0 ^ k1 ^ _KEY_PARITY)
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for injection in range(1, 6):
        for r in _ROTATIONS[(injection - 1) % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[injection % 3]
        x1 = x1 + ks[(injection + 1) % 3] + np.uint32(injection)
    return x0, x1


def uses_unrolled_threefry(key, dtype) -> bool:
    """Whether `normal(key, ., dtype)` takes the unrolled path (a threefry key, float32 and
    jax_threefry_partitionable on); otherwise it is `jax.random.normal`."""
    if jnp.dtype(dtype) != jnp.float32 or not jax.config.jax_threefry_partitionable:
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_impl(key) == "threefry2x32"
    return jax.config.jax_default_prng_impl == "threefry2x32"   # a raw uint32 [2] key


def normal(key, shape, dtype=jnp.float32):
    """A standard normal draw of `shape`: the values of `jax.random.normal(key, shape,
    dtype)` (module docstring). `key` a single key (typed, or a raw uint32 [2] key)."""
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    if not uses_unrolled_threefry(key, dtype) or size >= 2 ** 32:
        # Drawn flat (the same values: element by flat index): XLA compiles JAX's draws of
        # rank >= 3 more slowly than flat ones.
        return jax.random.normal(key, (size,), dtype).reshape(shape)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    counter = lax.iota(jnp.uint32, size)
    y0, y1 = threefry2x32(key[0], key[1], jnp.zeros_like(counter), counter)
    # JAX's uniform: 23 random mantissa bits under the exponent of 1.0 give [1, 2), minus 1,
    # then scaled to [lo, 1) and clamped at lo (lo = nextafter(-1, 0): erfinv(-1) = -inf).
    mantissa = lax.shift_right_logical(y0 ^ y1, np.uint32(32 - 23)) | np.uint32(0x3F800000)
    unit = lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = lax.max(lo, unit * (np.float32(1.0) - lo) + lo)
    return (np.float32(math.sqrt(2.0)) * lax.erf_inv(u)).reshape(shape)
