"""Optimizers with traced hyperparameters, and target-network averaging.

Every optimizer in the codebase is built by `optimizer(...)`: an optax transformation wrapped
in `optax.inject_hyperparams`, so the learning rate is a leaf of the optimizer state rather than
a compile-time constant. A sweep over learning rates is then one vmapped program: the
algorithm keeps the rate in `state.hparams` and `apply_updates(..., learning_rate=lr)` writes it
into the optimizer state before each step.

    opt = optimizer(3e-4, max_grad_norm=0.5, eps=1e-5)
    opt_state = opt.init(params)
    params, opt_state = apply_updates(opt, opt_state, params, grads, learning_rate=lr)
    target = polyak(params, target, tau)        # theta^- <- tau theta + (1 - tau) theta^-
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def optimizer(learning_rate: float, *, kind: str = "adam", b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8, max_grad_norm: float = 0.0, rmsprop_decay: float = 0.99,
              rmsprop_eps: float = 1e-5, inject_all: bool = False) -> optax.GradientTransformation:
    """Adam (Kingma & Ba 2015) or RMSProp with an injectable learning rate.

    Args:
      learning_rate: the initial rate stored in the state (`apply_updates` may overwrite it).
      kind: "adam" or "rmsprop" (RMSProp with eps inside the square root, as PyTorch / A2C
        implementations use).
      max_grad_norm: > 0 clips the global gradient norm first (optax.clip_by_global_norm);
        0 means no clipping (and no clipping state).
      inject_all: Adam only, without clipping: b1, b2 and eps are injected too, as float32
        leaves of the state (so they can be swept); optax then forms 1 - b1 in float32, which
        rounds differently from the Python-float default. The off-policy and offline agents
        use this form.
    """
    if kind not in ("adam", "rmsprop"):
        raise ValueError(f"optimizer kind must be 'adam' or 'rmsprop', got {kind!r}")
    if inject_all:
        if kind != "adam" or max_grad_norm > 0:
            raise ValueError("inject_all is for Adam without gradient clipping")
        return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate, b1=b1, b2=b2,
                                                    eps=eps)

    def make(learning_rate):
        if kind == "adam":
            opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
        else:
            opt = optax.rmsprop(learning_rate, decay=rmsprop_decay, eps=rmsprop_eps,
                                eps_in_sqrt=True)
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), opt) \
            if max_grad_norm > 0 else opt

    return optax.inject_hyperparams(make)(learning_rate=learning_rate)


def set_learning_rate(opt_state: Any, learning_rate: jax.Array) -> Any:
    """The `optimizer(...)` state with its learning rate replaced by a (traced) scalar."""
    hp = dict(opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(learning_rate, hp["learning_rate"].dtype)
    return opt_state._replace(hyperparams=hp)


def apply_updates(opt: optax.GradientTransformation, opt_state: Any, params: Any, grads: Any,
                  learning_rate: jax.Array | None = None) -> tuple[Any, Any]:
    """One optimizer step; returns (params', opt_state').

    With `learning_rate`, that value is written into the state first (a traced
    hyperparameter); without it, the rate already in the state is used.
    """
    if learning_rate is not None:
        opt_state = set_learning_rate(opt_state, learning_rate)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def polyak(online: Any, target: Any, tau: jax.Array) -> Any:
    """Polyak averaging theta^- <- tau theta + (1 - tau) theta^- (Lillicrap et al. 2016, Alg. 1).

    tau = 1 is a hard copy (DQN's periodic target update). The same rule with tau = 1 - decay
    is the EMA of weights used for diffusion models.
    """
    return jax.tree.map(lambda p, t: tau * p + (1.0 - tau) * t, online, target)


def select(pred: jax.Array, new: Any, old: Any) -> Any:
    """`new` where the scalar `pred` holds, else `old`, leaf by leaf (a `cond` that vmaps)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)
