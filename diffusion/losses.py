"""Training losses for diffusion and flow models: public, pure, un-jitted, per-sample.

Every loss returns a per-sample vector [N] (the squared L2 norm over the data dims, weighted as
the paper says); reduce it at the call site (mean, masked, importance-weighted). Randomness comes
from one `key`, split in a documented order so a test can redraw the same noise:

    edm_loss            k_sigma, k_noise = split(key); z = normal(k_sigma, [N]);
                        n = normal(k_noise, x0.shape)
    dsm_loss            k_t, k_z = split(key); t = uniform(k_t, [N], eps, T);
                        z = normal(k_z, x0.shape)
    ddpm_eps_loss       k_t, k_eps = split(key); t = randint(k_t, [N], 0, T_steps);
                        eps = normal(k_eps, x0.shape)
    flow_matching_loss  k_t, k_eps = split(key); t = uniform(k_t, [N]);
                        eps = normal(k_eps, x0.shape)

(all draws float32). Gradients w.r.t. parameters: close the parameters into the model function,
e.g. `jax.grad(lambda p: edm_loss(make_denoiser(raw, p, 'edm'), x0, key).mean())(params)`.
"""
from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from diffusion import precond as precond_lib

Array = jax.Array


def _per_sample_sq_norm(v: Array) -> Array:
    """||v_i||^2 over all non-batch dims: [N, ...] -> [N]."""
    return jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=-1)


def _bcast(c: Array, x: Array) -> Array:
    return jnp.reshape(c, c.shape + (1,) * (x.ndim - c.ndim)).astype(x.dtype)


def _check_data(x0: Array) -> None:
    chex.assert_type(x0, float)
    if x0.ndim < 2:
        raise ValueError(f"x0 must be [N, *dims] with at least one data dim, got shape {x0.shape}")


# --------------------------------------------------------------------------------------------
# EDM.
# --------------------------------------------------------------------------------------------

def denoiser_loss(denoise_fn: Callable, x0: Array, sigma: Array, noise: Array, weight: Array
                  ) -> Array:
    """lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2 per sample (EDM Eq. 2, one draw).

    Args:
      denoise_fn: D(x, sigma) with x [N, *dims], sigma [N].
      x0: clean data [N, *dims].
      sigma: noise levels [N].
      noise: standard normal n, x0's shape.
      weight: lambda(sigma) [N].
    Returns:
      [N] weighted squared error, summed over data dims.
    """
    _check_data(x0)
    chex.assert_equal_shape([x0, noise])
    chex.assert_shape([sigma, weight], x0.shape[:1])
    d = denoise_fn(x0 + _bcast(sigma, x0) * noise, sigma)
    chex.assert_equal_shape([d, x0])
    return weight * _per_sample_sq_norm(d - x0)


def edm_loss(denoise_fn: Callable, x0: Array, key, *, p_mean: float = -1.2, p_std: float = 1.2,
             sigma_data: float = 0.5) -> Array:
    """EDM training loss (Karras et al. 2022, Eq. 2 with Table 1 "ours"), per sample.

        E_{sigma, n} [ lambda(sigma) ||D(x0 + sigma n; sigma) - x0||_2^2 ],
        ln sigma ~ N(P_mean, P_std^2),
        lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,

    one (sigma, n) draw per sample. With the EDM preconditioning lambda = 1 / c_out^2, so the loss
    is ||F - target||^2 with a unit-variance target (Eq. 8).

    Args:
      denoise_fn: D(x, sigma), x [N, *dims], sigma [N] (e.g. `precond.make_denoiser(...)`).
      x0: clean data [N, *dims], float.
      key: PRNG key; split as (k_sigma, k_noise) (see the module docstring).
    Returns:
      [N] per-sample loss (squared L2 norm over the data dims: divide by the data dimension for a
      per-element mean).
    """
    _check_data(x0)
    k_sigma, k_noise = jax.random.split(key)
    n = x0.shape[0]
    sigma = precond_lib.edm_sample_sigma(k_sigma, (n,), p_mean=p_mean, p_std=p_std)
    sigma = sigma.astype(x0.dtype)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32).astype(x0.dtype)
    weight = precond_lib.edm_weight(sigma, sigma_data=sigma_data)
    return denoiser_loss(denoise_fn, x0, sigma, noise, weight)


# --------------------------------------------------------------------------------------------
# Denoising score matching for the SDEs.
# --------------------------------------------------------------------------------------------

def dsm_loss(score_fn: Callable, x0: Array, key, sde, *, eps: float | None = None) -> Array:
    """Denoising score matching for a VP / sub-VP / VE SDE (Song et al. 2021, Eq. 7), per sample.

        lambda(t) || s(x(t), t) - grad_x log p_0t(x(t) | x0) ||^2,   lambda(t) = std(t)^2,
        t ~ U(eps, T),  x(t) = m(t) x0 + std(t) z,  grad log p_0t = -z / std(t),

    which equals || std(t) s(x(t), t) + z ||^2.

    Args:
      score_fn: s(x, t) with x [N, *dims], t [N] (Song's time, in [eps, T]).
      x0: clean data [N, *dims].
      key: PRNG key; split as (k_t, k_z).
      sde: a `diffusion.sde` SDE (perturbation kernel m(t), std(t)).
      eps: smallest training time (default `sde.eps`).
    Returns:
      [N] per-sample loss (sum over the data dims).
    """
    _check_data(x0)
    eps = sde.eps if eps is None else eps
    k_t, k_z = jax.random.split(key)
    n = x0.shape[0]
    t = jax.random.uniform(k_t, (n,), jnp.float32, minval=eps, maxval=sde.T).astype(x0.dtype)
    z = jax.random.normal(k_z, x0.shape, jnp.float32).astype(x0.dtype)
    mean, std = sde.marginal(x0, t)
    score = score_fn(mean + std * z, t)
    chex.assert_equal_shape([score, x0])
    return _per_sample_sq_norm(std * score + z)


# --------------------------------------------------------------------------------------------
# DDPM.
# --------------------------------------------------------------------------------------------

def ddpm_eps_loss(eps_fn: Callable, x0: Array, key, alphas_bar) -> Array:
    """DDPM simple loss (Ho et al. 2020, Eq. 14 / Algorithm 1), per sample.

        || eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2,
        t ~ Uniform{1, ..., T},  eps ~ N(0, I).

    Args:
      eps_fn: eps_theta(x_t, t_idx) with x_t [N, *dims] and t_idx int32 [N] in {0, ..., T-1}, the
        0-based index into `alphas_bar` (t_idx = i is the paper's t = i + 1).
      x0: clean data [N, *dims].
      key: PRNG key; split as (k_t, k_eps).
      alphas_bar: [T] cumulative products (`schedules.ddpm_schedule(...).alphas_bar`); given
        as numpy, the square roots are taken in float64 before the cast to x0's dtype.
    Returns:
      [N] per-sample loss (sum over the data dims).
    """
    _check_data(x0)
    if isinstance(alphas_bar, np.ndarray):
        sqrt_ab = jnp.asarray(np.sqrt(alphas_bar), x0.dtype)
        sqrt_1mab = jnp.asarray(np.sqrt(1.0 - alphas_bar), x0.dtype)
    else:
        sqrt_ab, sqrt_1mab = jnp.sqrt(alphas_bar), jnp.sqrt(1.0 - alphas_bar)
    chex.assert_rank(sqrt_ab, 1)
    k_t, k_eps = jax.random.split(key)
    n = x0.shape[0]
    t_idx = jax.random.randint(k_t, (n,), 0, sqrt_ab.shape[0], jnp.int32)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32).astype(x0.dtype)
    x_t = _bcast(sqrt_ab[t_idx], x0) * x0 + _bcast(sqrt_1mab[t_idx], x0) * eps
    pred = eps_fn(x_t, t_idx)
    chex.assert_equal_shape([pred, x0])
    return _per_sample_sq_norm(eps - pred)


# --------------------------------------------------------------------------------------------
# Flow matching / rectified flow.
# --------------------------------------------------------------------------------------------

def flow_matching_loss(velocity_fn: Callable, x0: Array, key) -> Array:
    """Conditional flow matching with the linear (rectified-flow / OT) path, per sample.

    Lipman et al. 2023 (Eq. 23 with sigma_min = 0), Liu et al. 2023 (Eq. 1), with t = 0 data
    and t = 1 noise:

        x_t = (1 - t) x0 + t eps,   target u = dx_t/dt = eps - x0,   t ~ U(0, 1),
        loss = || v(x_t, t) - (eps - x0) ||^2.

    Sign: v points from data to noise; sample by integrating dx/dt = v(x, t) from t = 1
    (x ~ N(0, I)) DOWN to t = 0. (Lipman's paper runs time the other way, t = 1 data, and its
    velocity has the opposite sign.)

    Args:
      velocity_fn: v(x, t) with x [N, *dims], t [N] in [0, 1].
      x0: clean data [N, *dims].
      key: PRNG key; split as (k_t, k_eps).
    Returns:
      [N] per-sample loss (sum over the data dims).
    """
    _check_data(x0)
    k_t, k_eps = jax.random.split(key)
    n = x0.shape[0]
    t = jax.random.uniform(k_t, (n,), jnp.float32).astype(x0.dtype)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32).astype(x0.dtype)
    tb = _bcast(t, x0)
    v = velocity_fn((1.0 - tb) * x0 + tb * eps, t)
    chex.assert_equal_shape([v, x0])
    return _per_sample_sq_norm(v - (eps - x0))


def flow_velocity_from_denoiser(denoise_fn: Callable) -> Callable:
    """The exact flow-matching velocity of the linear path from a denoiser, for testing samplers.

    x_t = (1 - t) (x0 + sigma n) with sigma = t / (1 - t) (EDM view: s = 1 - t), so
    E[x0 | x_t] = D(x_t / (1 - t); sigma) and v = E[eps - x0 | x_t] = (x_t - D) / t.
    Valid for t in (0, 1); t scalar or [N].
    """

    def velocity_fn(x, t):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        tb = _bcast(t, x)
        d = denoise_fn(x / (1.0 - tb), t / (1.0 - t))
        return (x - d) / tb

    return velocity_fn
