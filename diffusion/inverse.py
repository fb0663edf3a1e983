"""Inverse problems and guidance with a denoiser D(x; sigma): DPS, exact denoising posterior,
classifier-free guidance.

Measurement model: y = A(x0) + sigma_y n, n ~ N(0, I), with A a linear operator given as a
function on batches, forward_fn(x [N, *dims]) -> [N, *meas_dims] (helpers below).

Diffusion posterior sampling (DPS; Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior
Sampling for General Noisy Inverse Problems", ICLR 2023, Alg. 1) approximates
p(y | x_t) ~ p(y | x0 = x0_hat(x_t)) with x0_hat = D(x_t; t) (Tweedie), and adds its gradient,
taken through the denoiser with jax.grad, to each ancestral step of the prior sampler. Here
the prior sampler is the sigma-space ancestral step of `diffusion.samplers.sample_ancestral`
(DDPM's posterior step, Ho et al. 2020 Eq. 7, for x = x0 + sigma n; Alg. 1 uses the same step
in VP scaling). Step t -> t' (< t):

    x0_hat = D(x; t)
    x'     = x0_hat + (t'^2 / t^2)(x - x0_hat) + t' sqrt(1 - t'^2 / t^2) z
    x'    <- x' - zeta_t grad_x ||y - A(x0_hat(x))||^2

Step sizes (`step_size`):
  "likelihood" (default): zeta_t = zeta (t^2 - t'^2) / (2 sigma_y^2). The ancestral mean is
      x + (t^2 - t'^2) grad log p_t(x), so with zeta = 1 this adds (t^2 - t'^2) times the DPS
      likelihood score grad log N(y; A x0_hat, sigma_y^2 I): ancestral sampling of the
      DPS-approximate posterior. zeta != 1 rescales the guidance.
  "normalized": zeta_t = zeta / ||y - A(x0_hat)|| per sample (Chung et al.'s experiments,
      App. C.4, zeta in [0.01, 1] there). Their zeta is for VP-scaled x; in this sigma form the
      same number is not the same step.
DPS is an approximation: it ignores Cov[x0 | x_t] in p(y | x_t), and so over-weights the
measurement at high noise. `guided_ancestral_sample` accepts any log-likelihood of x0_hat
(e.g. the exact one for a Gaussian prior) to separate that bias from the sampler's.

Shapes: x [N, *dims]; y [N, *meas_dims] (or without the batch axis, broadcast). The denoiser
must treat samples independently (per-sample gradients are read from the gradient of the
batch sum).
"""
from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from diffusion import samplers as S

Array = jax.Array

__all__ = ["dps_sample", "guided_ancestral_sample", "denoising_posterior_sample",
           "inpainting_operator", "denoising_operator", "matrix_operator", "cfg_denoiser"]


# --------------------------------------------------------------------------------------------
# Linear measurement operators.
# --------------------------------------------------------------------------------------------

def inpainting_operator(mask) -> Callable[[Array], Array]:
    """A(x) = mask * x: keep the observed entries (mask 1), zero the rest. mask [*dims] or
    [N, *dims] (0/1). Pass y = mask * (x_true + sigma_y n), i.e. zeros where unobserved."""
    mask = jnp.asarray(mask)

    def forward(x):
        return mask.astype(x.dtype) * x

    return forward


def denoising_operator() -> Callable[[Array], Array]:
    """A = I (denoising: y = x0 + sigma_y n). See also `denoising_posterior_sample`."""
    return lambda x: x


def matrix_operator(matrix) -> Callable[[Array], Array]:
    """A(x) = M vec(x): matrix [m, prod(dims)], x [N, *dims] -> [N, m]."""
    matrix = jnp.asarray(matrix)

    def forward(x):
        return jnp.reshape(x, (x.shape[0], -1)) @ matrix.T.astype(x.dtype)

    return forward


# --------------------------------------------------------------------------------------------
# Guided ancestral sampling (generic) and DPS.
# --------------------------------------------------------------------------------------------

def _guided_ancestral(key, shape, sigmas, guide, step_coeffs, *, x_init, dtype):
    """`samplers.ancestral_step`s plus an additive guidance term: guide(x, t, c) -> (x0_hat,
    delta) at the scalar level t with c = step_coeffs[i] (host float64 [N], from the grid)."""
    shape = S.check_shape(shape)
    s = S.check_sigmas(sigmas)
    c_mean, c_std = S.ancestral_coefficients(s)
    k_init, k_steps = S.split_key(key, stochastic=True)
    x = S.initial_state(k_init, shape, s[0], x_init, dtype)

    def step(x, c):
        i, t, cm, cstd, cg = c
        x0, delta = guide(x, t, cg)
        return S.ancestral_step(x, x0, S.step_noise(k_steps, i, x), cm, cstd) + delta, None

    cs = lambda v: S.host_constant(v, dtype)
    n = len(s) - 1
    x, _ = lax.scan(step, x, (jnp.arange(n, dtype=jnp.int32), cs(s[:-1]), cs(c_mean),
                              cs(c_std), cs(step_coeffs(s))))
    return x, {"nfe": n, "num_vjp": n, "sigmas": s}


def guided_ancestral_sample(key, denoise_fn: Callable, shape, log_likelihood_fn: Callable,
                            sigmas, *, guidance_scale: float = 1.0, x_init=None,
                            dtype=jnp.float32):
    """Ancestral sampling with likelihood guidance through the denoiser, along `sigmas` [N + 1]
    (e.g. `schedules.edm_sigma_steps`):

        x' = ancestral(x, x0_hat) + guidance_scale (t^2 - t'^2) grad_x L(x),
        L(x) = sum over the batch of log_likelihood_fn(x0_hat(x), x, t) ([N] per sample),
        x0_hat(x) = D(x; t).

    With the exact log p(y | x_t) this samples the exact posterior as the steps shrink (the
    ancestral mean is x + (t^2 - t'^2) grad log p_t(x)); DPS is log_likelihood_fn =
    -||y - A x0_hat||^2 / (2 sigma_y^2). t is passed to log_likelihood_fn as a vector [N].
    NFE = N denoiser evaluations, each with one vector-Jacobian product.
    Returns (x, {"nfe", "num_vjp", "sigmas"}).
    """

    def guide(x, t, c):
        def total(xx):
            x0 = S.posterior_mean(denoise_fn, xx, t)
            return jnp.sum(log_likelihood_fn(x0, xx, S.noise_levels(t, xx))), x0

        g, x0 = jax.grad(total, has_aux=True)(x)
        return x0, c * g

    return _guided_ancestral(key, shape, sigmas, guide,
                             lambda s: guidance_scale * (s[:-1] ** 2 - s[1:] ** 2),
                             x_init=x_init, dtype=dtype)


def dps_sample(key, denoise_fn: Callable, shape, y, forward_fn: Callable, sigmas, *,
               sigma_y: float, zeta: float = 1.0, step_size: str = "likelihood", x_init=None,
               dtype=jnp.float32):
    """Diffusion posterior sampling (Chung et al. 2023, Alg. 1) for y = A x0 + sigma_y n.

    Each step (module docstring): x0_hat = D(x; t), the ancestral step, then
    x' -= zeta_t grad_x ||y - A(x0_hat(x))||^2 (jax.grad through the denoiser), with
    zeta_t = zeta (t^2 - t'^2) / (2 sigma_y^2) for step_size="likelihood" or
    zeta / ||y - A(x0_hat)|| (per sample) for "normalized".

    Args:
      key: PRNG key (initial noise and per-step noise, as in `samplers.sample_ancestral`).
      denoise_fn: D(x, sigma) of the prior.
      shape: [N, *dims] of the samples.
      y: measurement [N, *meas_dims] or [*meas_dims] (broadcast to every sample).
      forward_fn: the linear operator A on batches.
      sigmas: the noise-level grid [N + 1] (e.g. `schedules.edm_sigma_steps`, ending at 0; the
        guidance is applied on every step, the last one included, as in Alg. 1).
      sigma_y: measurement noise std (> 0 for "likelihood").
      zeta, step_size: see above.
    Returns:
      (x [N, *dims], {"nfe", "num_vjp", "sigmas"}).
    """
    y = jnp.asarray(y, dtype)
    if step_size == "likelihood":
        if sigma_y <= 0:
            raise ValueError("step_size='likelihood' needs sigma_y > 0")

        def loglik(x0, x, t):
            r = y - forward_fn(x0)
            return -0.5 * jnp.sum(jnp.reshape(r, (r.shape[0], -1)) ** 2, axis=-1) / sigma_y ** 2

        return guided_ancestral_sample(key, denoise_fn, shape, loglik, sigmas,
                                       guidance_scale=zeta, x_init=x_init, dtype=dtype)
    if step_size != "normalized":
        raise ValueError(f"step_size must be 'likelihood' or 'normalized', got {step_size!r}")

    def guide(x, t, c):
        def total(xx):
            x0 = S.posterior_mean(denoise_fn, xx, t)
            r = y - forward_fn(x0)
            sq = jnp.sum(jnp.reshape(r, (r.shape[0], -1)) ** 2, axis=-1)
            return jnp.sum(sq), (x0, sq)

        g, (x0, sq) = jax.grad(total, has_aux=True)(x)
        step = c / jnp.sqrt(jnp.maximum(sq, 1e-30))
        return x0, -S.per_sample(step, x) * g

    return _guided_ancestral(key, shape, sigmas, guide,
                             lambda s: np.full(len(s) - 1, float(zeta)),
                             x_init=x_init, dtype=dtype)


def denoising_posterior_sample(key, denoise_fn: Callable, y: Array, sigmas):
    """Exact posterior sampling for denoising (A = I): y = x0 + sigma_y n is x at noise level
    sigma_y, so the reverse process started from x = y at sigma = sigma_y samples p(x0 | y).
    Runs `samplers.sample_ancestral` from x_init = y along `sigmas` [N + 1], whose first level
    must be sigma_y (e.g. `schedules.edm_sigma_steps(N, sigma_min, sigma_y)`); exact as the
    steps shrink, for an exact denoiser. y [N, *dims].
    Returns (x, info) as `sample_ancestral`."""
    y = jnp.asarray(y)
    chex.assert_rank(y, set(range(2, 8)))
    return S.sample_ancestral(key, denoise_fn, y.shape, sigmas, x_init=y, dtype=y.dtype)


# --------------------------------------------------------------------------------------------
# Classifier-free guidance.
# --------------------------------------------------------------------------------------------

def cfg_denoiser(cond_fn: Callable, uncond_fn: Callable, w) -> Callable:
    """Classifier-free guidance as a denoiser combinator (Ho & Salimans 2022, Eq. 6).

    Ho & Salimans: eps~(z, c) = (1 + w) eps(z, c) - w eps(z). Since eps = (x - D) / sigma is
    affine in D at fixed (x, sigma), the same combination of denoisers is the same guidance:

        D_w(x; sigma) = (1 + w) D_cond(x; sigma) - w D_uncond(x; sigma),

    and the score of D_w is s_cond + w (s_cond - s_uncond) = grad log p(x | c) + w grad log
    p(c | x). w = 0 is the plain conditional model, w = -1 the unconditional one. (Other codes
    write a "guidance scale" gamma = 1 + w: D_u + gamma (D_c - D_u).)

    cond_fn / uncond_fn: D(x, sigma) with the label already bound (e.g. functools.partial).
    w: a scalar or a per-sample [N] array (traced values are fine).
    """

    def denoise_fn(x, sigma):
        d_c = cond_fn(x, sigma)
        d_u = uncond_fn(x, sigma)
        ww = jnp.asarray(w, d_c.dtype)
        if ww.ndim == 1:
            ww = S.per_sample(ww, d_c)
        return d_c + ww * (d_c - d_u)

    return denoise_fn
