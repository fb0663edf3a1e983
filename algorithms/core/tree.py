"""Small pytree utilities shared by the runner and the algorithms."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def is_prng_key(x: Any) -> bool:
    """True for a typed PRNG key array (`jax.random.key`)."""
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def strong_types(tree: Any) -> Any:
    """The same pytree with weakly typed leaves made strongly typed (keys left as they are).

    gymnax resets return some weak-typed leaves (e.g. Pendulum's `last_u`); `update` returns
    strong ones. A State from `init` must have exactly the avals that `update` returns, or a
    jitted training chunk compiles again on its second call.
    """
    return jax.tree.map(
        lambda x: x if is_prng_key(x) else jnp.array(x, dtype=jnp.asarray(x).dtype), tree)
