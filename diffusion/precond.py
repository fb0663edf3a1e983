"""Network preconditioning, training noise levels and loss weights of EDM Table 1.

Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
Models", NeurIPS 2022, Sec. 5 and Table 1. A raw network F is wrapped into a denoiser (Eq. 7)

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)),

which estimates E[x0 | x0 + sigma n = x]; the score is (D - x) / sigma^2 (Eq. 3).

           c_skip               c_out                        c_in                  c_noise
    VP     1                    -sigma                       1/sqrt(sigma^2+1)     (M-1) t(sigma)
    VE     1                    sigma                        1                     ln(sigma / 2)
    EDM    sd^2/(sigma^2+sd^2)  sigma sd/sqrt(sigma^2+sd^2)  1/sqrt(sigma^2+sd^2)  ln(sigma) / 4

           training sigma                               loss weight lambda(sigma)
    VP     sigma = sigma_VP(t),  t ~ U(eps_t, 1)        1 / sigma^2
    VE     ln sigma ~ U(ln sigma_min, ln sigma_max)     1 / sigma^2
    EDM    ln sigma ~ N(P_mean, P_std^2)                (sigma^2 + sd^2) / (sigma sd)^2

with sd = sigma_data (EDM's lambda equals 1 / c_out^2) and t(sigma) = sigma_VP^{-1}(sigma).
Table 1's parameters are the defaults here: VP beta_d = 19.9, beta_min = 0.1, M = 1000,
eps_t = 1e-5; VE sigma_min = 0.02, sigma_max = 100 (the image setting: the toys' VE SDE uses
0.01 and 50, pass them explicitly); EDM sigma_data = 0.5, P_mean = -1.2, P_std = 1.2.
sigma_VP(t) and its inverse are `diffusion.sde.edm_vp_sigma` / `edm_vp_sigma_inv`. A network
trained on discrete levels (DDPM) takes the index of the nearest level as c_noise instead
(`discrete_vp_precond`, `nearest_level_index`).

The VP preconditioning makes F an epsilon-predictor, F = (x - D) / sigma = -sigma score, of the
VP-scaled input (c_in x = x / sqrt(1 + sigma^2) is the DDPM x_t); VE makes F = sigma score; EDM
keeps F's input and training target at unit variance when x0 has std sigma_data.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffusion import sde as sde_lib

Array = jax.Array


class Coefficients(NamedTuple):
    """The four preconditioning functions evaluated at sigma (each of sigma's shape)."""

    c_skip: Array
    c_out: Array
    c_in: Array
    c_noise: Array


# --------------------------------------------------------------------------------------------
# Coefficients.
# --------------------------------------------------------------------------------------------

def edm_precond(sigma, *, sigma_data: float = 0.5) -> Coefficients:
    """EDM Table 1 'ours' (Sec. 5, Eq. 7): unit-variance input and training target."""
    sigma = jnp.asarray(sigma)
    total = sigma ** 2 + sigma_data ** 2
    return Coefficients(
        c_skip=sigma_data ** 2 / total,
        c_out=sigma * sigma_data / jnp.sqrt(total),
        c_in=1.0 / jnp.sqrt(total),
        c_noise=0.25 * jnp.log(sigma),
    )


def vp_precond(sigma, *, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000
               ) -> Coefficients:
    """EDM Table 1 VP: c_noise = (M - 1) t with t = sigma_VP^{-1}(sigma), the VP time."""
    sigma = jnp.asarray(sigma)
    return Coefficients(
        c_skip=jnp.ones_like(sigma),
        c_out=-sigma,
        c_in=1.0 / jnp.sqrt(sigma ** 2 + 1.0),
        c_noise=(M - 1) * sde_lib.edm_vp_sigma_inv(sigma, beta_d, beta_min),
    )


def ve_precond(sigma) -> Coefficients:
    """EDM Table 1 VE: c_noise = ln(sigma / 2)."""
    sigma = jnp.asarray(sigma)
    return Coefficients(
        c_skip=jnp.ones_like(sigma),
        c_out=sigma,
        c_in=jnp.ones_like(sigma),
        c_noise=jnp.log(0.5 * sigma),
    )


def nearest_level_index(sigma, level_sigmas) -> Array:
    """The index of the level of `level_sigmas` nearest to sigma in log sigma, int32 of
    sigma's shape: what a network trained on the discrete levels of a DDPM-style model
    (eps_theta(x_t, i), i = 0 .. T - 1, index 0 the least noisy) takes as its step input when
    a sampler hands it a noise level sigma. Exact on the levels themselves (a sampler on the
    trained levels, e.g. `schedules.ddpm_sigma_steps`, gets their indices). level_sigmas:
    the levels sigma_i = sqrt((1 - ab_i) / ab_i), strictly increasing, host float [T]."""
    levels = np.asarray(level_sigmas, np.float64)
    if levels.ndim != 1 or levels.size < 1 or np.any(np.diff(levels) <= 0) or levels[0] <= 0:
        raise ValueError("level_sigmas must be a strictly increasing 1-D array of levels > 0")
    sigma = jnp.asarray(sigma)
    if levels.size == 1:
        return jnp.zeros(sigma.shape, jnp.int32)
    table = jnp.asarray(np.log(levels), jnp.float32)
    log_sigma = jnp.log(sigma).astype(jnp.float32)
    upper = jnp.clip(jnp.searchsorted(table, log_sigma), 1, levels.size - 1)
    lower_nearer = jnp.abs(table[upper - 1] - log_sigma) <= jnp.abs(table[upper] - log_sigma)
    return jnp.where(lower_nearer, upper - 1, upper).astype(jnp.int32)


def discrete_vp_precond(level_sigmas) -> Callable[[Array], Coefficients]:
    """EDM Table 1's VP column with c_noise the index of the nearest trained level
    (`nearest_level_index`): the denoiser of an eps-prediction network trained on discrete
    levels (Ho et al. 2020's DDPM; the diffusion policies of Diffusion-QL and IDQL),
    D(x; sigma) = x - sigma eps_theta(x / sqrt(1 + sigma^2), i(sigma)), where x / sqrt(1 +
    sigma^2) is the DDPM-scaled x_t. Returns sigma -> `Coefficients` (c_noise in sigma's
    dtype) for `make_denoiser`."""
    levels = np.asarray(level_sigmas, np.float64)
    nearest_level_index(jnp.ones((1,)), levels)            # validates the levels once

    def coefficients(sigma):
        sigma = jnp.asarray(sigma)
        return Coefficients(c_skip=jnp.ones_like(sigma), c_out=-sigma,
                            c_in=1.0 / jnp.sqrt(sigma ** 2 + 1.0),
                            c_noise=nearest_level_index(sigma, levels).astype(sigma.dtype))

    return coefficients


# --------------------------------------------------------------------------------------------
# Training noise distributions and loss weights.
# --------------------------------------------------------------------------------------------

def edm_sample_sigma(key, shape, *, p_mean: float = -1.2, p_std: float = 1.2) -> Array:
    """ln sigma ~ N(P_mean, P_std^2): sigma = exp(P_mean + P_std * normal(key, shape)), float32."""
    return jnp.exp(p_mean + p_std * jax.random.normal(key, shape, jnp.float32))


def edm_weight(sigma, *, sigma_data: float = 0.5) -> Array:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def vp_sample_sigma(key, shape, *, eps_t: float = 1e-5, beta_d: float = 19.9,
                    beta_min: float = 0.1) -> Array:
    """sigma = sigma_VP(t) with t = uniform(key, shape, eps_t, 1), float32."""
    t = jax.random.uniform(key, shape, jnp.float32, minval=eps_t, maxval=1.0)
    return sde_lib.edm_vp_sigma(t, beta_d, beta_min)


def vp_weight(sigma) -> Array:
    """lambda(sigma) = 1 / sigma^2."""
    return 1.0 / sigma ** 2


def ve_sample_sigma(key, shape, *, sigma_min: float = 0.02, sigma_max: float = 100.0) -> Array:
    """ln sigma ~ U(ln sigma_min, ln sigma_max), float32."""
    u = jax.random.uniform(key, shape, jnp.float32)
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return jnp.exp(lo + (hi - lo) * u)


def ve_weight(sigma) -> Array:
    """lambda(sigma) = 1 / sigma^2."""
    return 1.0 / sigma ** 2


# --------------------------------------------------------------------------------------------
# Bundles and the denoiser wrapper.
# --------------------------------------------------------------------------------------------

class Preconditioning(NamedTuple):
    """One Table 1 column: coefficients(sigma), sample_sigma(key, shape), weight(sigma)."""

    coefficients: Callable[[Array], Coefficients]
    sample_sigma: Callable[..., Array]
    weight: Callable[[Array], Array]


def get_precond(name: str, **hparams) -> Preconditioning:
    """Table 1 column `name` in {'edm', 'vp', 've'}; hparams override its defaults.

    edm: sigma_data, p_mean, p_std.  vp: beta_d, beta_min, M, eps_t.  ve: sigma_min, sigma_max.
    """
    def pick(*names):
        return {k: hparams[k] for k in names if k in hparams}

    valid = {"edm": ("sigma_data", "p_mean", "p_std"), "vp": ("beta_d", "beta_min", "M", "eps_t"),
             "ve": ("sigma_min", "sigma_max")}
    if name not in valid:
        raise ValueError(f"unknown preconditioning {name!r}; valid choices: {', '.join(valid)}")
    unknown = set(hparams) - set(valid[name])
    if unknown:
        raise ValueError(f"unknown {name} hyperparameters {sorted(unknown)}; valid: {valid[name]}")
    if name == "edm":
        sd = pick("sigma_data")
        return Preconditioning(
            lambda s: edm_precond(s, **sd),
            lambda key, shape: edm_sample_sigma(key, shape, **pick("p_mean", "p_std")),
            lambda s: edm_weight(s, **sd))
    if name == "vp":
        return Preconditioning(
            lambda s: vp_precond(s, **pick("beta_d", "beta_min", "M")),
            lambda key, shape: vp_sample_sigma(key, shape, **pick("eps_t", "beta_d", "beta_min")),
            vp_weight)
    return Preconditioning(
        ve_precond,
        lambda key, shape: ve_sample_sigma(key, shape, **pick("sigma_min", "sigma_max")),
        ve_weight)


def make_denoiser(raw_apply: Callable, params, precond) -> Callable:
    """Wrap a raw network into the denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

    Args:
      raw_apply: F as `raw_apply(params, x_in, c_noise, *args, **kwargs) -> [N, *dims]` with
        x_in [N, *dims] and c_noise [N] (extra args, e.g. class labels, are passed through).
      params: F's parameters.
      precond: a function sigma -> `Coefficients` (e.g. `functools.partial(edm_precond,
        sigma_data=0.5)`), a `Preconditioning`, or a name 'edm' / 'vp' / 've' (Table 1 defaults).

    Returns:
      denoise_fn(x, sigma, *args, **kwargs) -> D, x [N, *dims], sigma [N] or a scalar
      (broadcast to [N]); D has x's shape and dtype.
    """
    if isinstance(precond, str):
        precond = get_precond(precond)
    coefficients = precond.coefficients if isinstance(precond, Preconditioning) else precond

    def denoise_fn(x, sigma, *args, **kwargs):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
        c = coefficients(sigma)
        shape = x.shape[:1] + (1,) * (x.ndim - 1)
        c_skip, c_out, c_in = (jnp.reshape(v, shape).astype(x.dtype)
                               for v in (c.c_skip, c.c_out, c.c_in))
        f = raw_apply(params, c_in * x, c.c_noise.astype(x.dtype), *args, **kwargs)
        return c_skip * x + c_out * f.astype(x.dtype)

    return denoise_fn
