"""A jittable ring replay buffer: a pytree of [capacity, ...] arrays, a write position, a size.

    buf = buffer_init(example_transition, capacity)
    buf = buffer_add(buf, batch)              # leaves [B, ...], B <= capacity
    batch = buffer_sample(buf, key, n)        # uniform over the filled part

Pure functions on a NamedTuple, so the buffer lives inside each seed's State and vmaps.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Buffer(NamedTuple):
    data: Any  # pytree of [capacity, ...]
    position: jax.Array  # int32, next write index
    size: jax.Array  # int32, number of valid entries


def buffer_init(example: Any, capacity: int) -> Buffer:
    """An empty buffer whose entries look like `example` (one transition, no batch axis)."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
                        example)
    return Buffer(data, jnp.int32(0), jnp.int32(0))


def buffer_add(buf: Buffer, batch: Any) -> Buffer:
    """Writes a batch (leaves [B, ...]) at the ring position, overwriting the oldest entries."""
    capacity = jax.tree.leaves(buf.data)[0].shape[0]
    b = jax.tree.leaves(batch)[0].shape[0]
    idx = (buf.position + jnp.arange(b)) % capacity
    data = jax.tree.map(lambda d, x: d.at[idx].set(x.astype(d.dtype)), buf.data, batch)
    return Buffer(data, ((buf.position + b) % capacity).astype(jnp.int32),
                  jnp.minimum(buf.size + b, capacity).astype(jnp.int32))


def buffer_sample(buf: Buffer, key: jax.Array, n: int) -> Any:
    """n entries drawn uniformly with replacement from the filled part."""
    idx = jax.random.randint(key, (n,), 0, jnp.maximum(buf.size, 1))
    return jax.tree.map(lambda d: d[idx], buf.data)
