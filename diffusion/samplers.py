"""Samplers for diffusion models: pure functions built on `lax.scan` / `lax.while_loop`.

Conventions (shared by all of `diffusion/`):

* Data are arrays x of shape ``[N, *dims]``. A denoiser is a pure function
  ``denoise_fn(x, sigma) -> D(x; sigma)`` with ``sigma`` of shape ``[N]``; it estimates
  E[x0 | x0 + sigma n = x]. The score is ``(D(x; sigma) - x) / sigma^2`` (EDM Eq. 3).
* Every sampler has the form ``sample_xxx(key, model_fn, shape, *, num_steps, ...) -> (x, info)``
  and returns ``info["nfe"]``, the exact number of model evaluations (a Python int, known
  statically; for the adaptive `sample_rk45` it is a traced int32 since it depends on the data).
* Time / noise-level schedules and every per-step coefficient (churn level, Heun weights, DDIM
  coefficients, SDE coefficients) are computed in float64 with numpy ON THE HOST and enter the
  program as constants of the sample dtype (float32 by default). In float32,
  sqrt(t_hat^2 - t^2) with t_hat = t computed on the device can come out near 1e-2 instead of 0
  and inject noise that should not be there; on the host in float64 it is exactly 0.
  Consequently `sigmas` / `alphas_bar` / `timesteps` arguments must be concrete (numpy or
  Python), not traced values.
* The step loop is one `lax.scan` over the per-step coefficient arrays, so the traced program
  (jaxpr, HLO) has the same size for 10 and for 1000 steps; the samplers jit, vmap (over keys
  or initial states) and differentiate (w.r.t. anything the model closes over).
* Stochastic samplers draw their initial state from ``split(key)[0]`` and the noise of step i
  from ``fold_in(split(key)[1], i)``: reproducible from the key, independent of batching.
* ``x_init`` (optional) replaces the drawn initial state: the state at the first grid level
  (for the sigma-space samplers ``sigma_max * n``; for DDPM / DDIM the VP-scaled ``x_T``).

Samplers, with the papers they follow:

=========================  ===================================================  ==============
sampler                    reference                                            NFE
=========================  ===================================================  ==============
`sample_euler`             Karras et al. 2022 (EDM) Alg. 1 without correction   N
`sample_heun`              EDM Alg. 1 (s(t) = 1, sigma(t) = t)                  2N - 1
`sample_edm_stochastic`    EDM Alg. 2 (S_churn, S_tmin, S_tmax, S_noise)        2N - 1
`sample_dpmpp_2m`          Lu et al. 2022, DPM-Solver++(2M), Alg. 2             N
`sample_rk45`              Dormand & Prince 1980 RK5(4) with error control      adaptive (+1)
`sample_ancestral`         DDPM ancestral step in sigma space (Ho et al. 2020)  N
`sample_reverse_sde`       Song et al. 2021, reverse SDE Euler-Maruyama         N
`sample_pc`                Song et al. 2021, Alg. 2-5 (Langevin corrector, snr) N (1 + M)
`sample_ddpm`              Ho et al. 2020, Alg. 2 (eps-prediction)              N
`sample_ddim`              Song, Meng & Ermon 2021, Eq. 12 (eta)                N
=========================  ===================================================  ==============
(N = num_steps; the last EDM step goes to sigma = 0 and Heun skips its correction there.)
"""
from __future__ import annotations

import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]

__all__ = [
    "edm_sigma_steps", "sample_euler", "sample_heun", "sample_edm_stochastic",
    "sample_dpmpp_2m", "sample_ancestral", "solve_rk45", "sample_rk45",
    "sample_reverse_sde", "sample_pc",
    "ddpm_alphas_bar", "ddpm_timesteps", "eps_from_denoiser", "sample_ddpm", "sample_ddim",
    "probability_flow_drift",
]


# ============================================================================================
# Host-side schedules (float64 numpy).
# ============================================================================================

def edm_sigma_steps(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> np.ndarray:
    """EDM time steps (Karras et al. 2022, Eq. 5), float64 numpy, with sigma_N = 0 appended.

        t_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
        i = 0 .. N - 1, and t_N = 0.

    Returns an array of length num_steps + 1, descending from sigma_max to sigma_min, then 0.
    num_steps = 1 gives [sigma_max, 0].
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    i = np.arange(num_steps, dtype=np.float64)
    if num_steps == 1:
        t = np.array([sigma_max], dtype=np.float64)
    else:
        a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
        t = (a + i / (num_steps - 1) * (b - a)) ** rho
    return np.concatenate([t, [0.0]])


def _resolve_sigmas(sigmas, num_steps, sigma_min, sigma_max, rho) -> np.ndarray:
    """A float64 host grid: `sigmas` if given (descending, >= 0), else EDM Eq. 5."""
    if sigmas is None:
        return edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError("sigmas must be a 1-D grid of at least 2 levels")
    if np.any(np.diff(s) >= 0) or s[-1] < 0:
        raise ValueError("sigmas must be strictly decreasing and >= 0")
    if np.any(s[:-1] == 0):
        raise ValueError("only the last level may be 0")
    return s


def _const(a, dtype) -> Array:
    """Host float64 values -> a device constant of the sample dtype."""
    return jnp.asarray(np.asarray(a, dtype=np.float64), dtype=dtype)


def _levels(v: Array, x: Array) -> Array:
    """A scalar level -> the per-sample [N] vector the model takes."""
    return jnp.broadcast_to(v.astype(x.dtype), (x.shape[0],))


def _per_sample(c: Array, x: Array) -> Array:
    """A per-sample [N] coefficient shaped to broadcast over x [N, ...]."""
    return c.reshape(c.shape + (1,) * (x.ndim - 1))


def _split(key, *, stochastic: bool = False):
    """(initial-state key, per-step key). Deterministic samplers accept key=None when x_init
    is given."""
    if key is None:
        if stochastic:
            raise ValueError("this sampler is stochastic: it needs a PRNG key")
        return None, None
    k_init, k_steps = jax.random.split(key)
    return k_init, k_steps


def _initial(k_init, shape, scale: float, x_init, dtype) -> Array:
    if x_init is not None:
        x = jnp.asarray(x_init, dtype=dtype)
        chex.assert_shape(x, tuple(shape))
        return x
    if k_init is None:
        raise ValueError("need a PRNG key or x_init")
    return jnp.asarray(scale, dtype) * jax.random.normal(k_init, tuple(shape), dtype)


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be [N, *dims], got {shape}")
    return shape


def probability_flow_drift(denoise_fn: DenoiseFn, x: Array, sigma) -> Array:
    """dx/dsigma = (x - D(x; sigma)) / sigma: the probability-flow ODE with s(t) = 1,
    sigma(t) = t (EDM Eq. 4 / Alg. 1 line 4); sigma a scalar or [N] (> 0)."""
    sig = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return (x - denoise_fn(x, sig)) / _per_sample(sig, x)


# ============================================================================================
# EDM-space ODE samplers: Euler, Heun, stochastic (Alg. 2), DPM-Solver++(2M).
# ============================================================================================

def sample_euler(key, denoise_fn: DenoiseFn, shape, *, num_steps: int = 18,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 sigmas=None, x_init=None, dtype=jnp.float32):
    """Euler on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma.

    EDM Alg. 1 (s(t) = 1, sigma(t) = t) without the second-order correction, on the EDM time
    steps `edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)` (or a given host grid `sigmas`,
    descending, optionally ending at 0). x_0 = sigma_max * n, n ~ N(0, I) from `key`.

    Step i: x <- x + (t_{i+1} - t_i) / t_i * (x - D(x; t_i)); the ratio is computed on the host in
    float64 (the last step to t = 0 has ratio -1, i.e. x_N = D(x_{N-1}; t_{N-1})).

    Returns (x [shape], {"nfe": N, "sigmas": the float64 grid}). First order in 1 / N.
    """
    shape = _check_shape(shape)
    s = _resolve_sigmas(sigmas, num_steps, sigma_min, sigma_max, rho)
    t_cur = s[:-1]
    ratio = (s[1:] - s[:-1]) / t_cur
    k_init, _ = _split(key)
    x = _initial(k_init, shape, s[0], x_init, dtype)

    def step(x, c):
        t, r = c
        d = denoise_fn(x, _levels(t, x))
        return x + r * (x - d), None

    x, _ = lax.scan(step, x, (_const(t_cur, dtype), _const(ratio, dtype)))
    return x, {"nfe": len(t_cur), "sigmas": s}


def _heun_coeffs(t_hat: np.ndarray, t_next: np.ndarray):
    """Host coefficients of one Heun step from t_hat to t_next (EDM Alg. 1 lines 4-8).

    Euler:    x' = x + h / t_hat (x - D)                          (a = h / t_hat)
    Heun:     x_next = x + h/(2 t_hat) (x - D) + h/(2 t_next) (x' - D')   (b1, b2)
    with h = t_next - t_hat; b2 unused when t_next = 0.
    """
    h = t_next - t_hat
    a = h / t_hat
    b1 = 0.5 * h / t_hat
    with np.errstate(divide="ignore", invalid="ignore"):
        b2 = np.where(t_next > 0, 0.5 * h / np.where(t_next > 0, t_next, 1.0), 0.0)
    return a, b1, b2


def _heun_body(denoise_fn, x_hat, t_hat, t_next, a, b1, b2):
    """One EDM Alg. 1/2 step from x_hat at t_hat with second-order correction to t_next > 0."""
    d_cur = x_hat - denoise_fn(x_hat, _levels(t_hat, x_hat))       # t_hat * d_i
    x_eul = x_hat + a * d_cur
    d_next = x_eul - denoise_fn(x_eul, _levels(t_next, x_eul))     # t_next * d'_i
    return x_hat + b1 * d_cur + b2 * d_next


def _euler_body(denoise_fn, x_hat, t_hat, a):
    return x_hat + a * (x_hat - denoise_fn(x_hat, _levels(t_hat, x_hat)))


def sample_heun(key, denoise_fn: DenoiseFn, shape, *, num_steps: int = 18,
                sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                sigmas=None, x_init=None, dtype=jnp.float32):
    """Heun's 2nd-order method on the probability-flow ODE: EDM Alg. 1, s(t) = 1, sigma(t) = t.

    Grid: `edm_sigma_steps(num_steps, ...)` (EDM Eq. 5) or `sigmas`. The correction (Alg. 1
    lines 6-8) is skipped on the step to t = 0, so NFE = 2N - 1 (2N if the grid does not end at
    0). N = 18 gives NFE = 35. x_0 = sigma_max * n from `key` unless `x_init` is given.

    Returns (x, {"nfe", "sigmas"}). Second order in 1 / N.
    """
    return _edm_sampler(key, denoise_fn, shape, num_steps=num_steps, sigma_min=sigma_min,
                        sigma_max=sigma_max, rho=rho, sigmas=sigmas, x_init=x_init,
                        dtype=dtype, churn=None)


def sample_edm_stochastic(key, denoise_fn: DenoiseFn, shape, *, num_steps: int = 18,
                          sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                          s_churn: float = 0.0, s_tmin: float = 0.0,
                          s_tmax: float = float("inf"), s_noise: float = 1.0,
                          sigmas=None, x_init=None, dtype=jnp.float32):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2).

    For each step i (t_i from `edm_sigma_steps` or `sigmas`):
        gamma_i = min(S_churn / N, sqrt(2) - 1) if t_i in [S_tmin, S_tmax] else 0
        t_hat = t_i + gamma_i t_i
        x_hat = x_i + sqrt(t_hat^2 - t_i^2) eps,  eps ~ N(0, S_noise^2 I)
        Euler step t_hat -> t_{i+1}, then the Heun correction if t_{i+1} != 0.

    gamma_i, t_hat and the noise std S_noise sqrt(t_hat^2 - t_i^2) are computed on the host in
    float64 (exactly 0 without churn). With S_churn = 0 the arithmetic is that of
    `sample_heun`, so the result equals Heun's (bit-for-bit in our tests). The noise of step i is
    drawn from fold_in(split(key)[1], i) even where its std is 0. NFE = 2N - 1.

    Returns (x, {"nfe", "sigmas", "gammas", "t_hat", "noise_std"}).
    """
    return _edm_sampler(key, denoise_fn, shape, num_steps=num_steps, sigma_min=sigma_min,
                        sigma_max=sigma_max, rho=rho, sigmas=sigmas, x_init=x_init,
                        dtype=dtype, churn=(s_churn, s_tmin, s_tmax, s_noise))


def _edm_sampler(key, denoise_fn, shape, *, num_steps, sigma_min, sigma_max, rho, sigmas,
                 x_init, dtype, churn):
    shape = _check_shape(shape)
    s = _resolve_sigmas(sigmas, num_steps, sigma_min, sigma_max, rho)
    n_steps = len(s) - 1
    t_cur, t_next = s[:-1], s[1:]
    info: dict[str, Any] = {"sigmas": s}
    if churn is None:
        t_hat, std = t_cur, None
    else:
        s_churn, s_tmin, s_tmax, s_noise = churn
        inside = (t_cur >= s_tmin) & (t_cur <= s_tmax)
        gamma = np.where(inside, min(s_churn / n_steps, math.sqrt(2.0) - 1.0), 0.0)
        t_hat = t_cur + gamma * t_cur
        std = s_noise * np.sqrt(t_hat ** 2 - t_cur ** 2)
        info.update(gammas=gamma, t_hat=t_hat, noise_std=std)
    a, b1, b2 = _heun_coeffs(t_hat, t_next)
    last_to_zero = t_next[-1] == 0.0
    n_heun = n_steps - 1 if last_to_zero else n_steps
    k_init, k_steps = _split(key, stochastic=churn is not None)
    x = _initial(k_init, shape, s[0], x_init, dtype)

    def churn_at(x, i, sd):
        if churn is None:
            return x
        eps = jax.random.normal(jax.random.fold_in(k_steps, i), x.shape, x.dtype)
        return x + sd * eps

    cs = lambda v: _const(v, dtype)  # noqa: E731
    sd_all = cs(std) if std is not None else cs(np.zeros(n_steps))

    def step(x, c):
        i, th, tn, ca, cb1, cb2, sd = c
        x_hat = churn_at(x, i, sd)
        return _heun_body(denoise_fn, x_hat, th, tn, ca, cb1, cb2), None

    idx = jnp.arange(n_steps, dtype=jnp.int32)
    xs = (idx, cs(t_hat), cs(t_next), cs(a), cs(b1), cs(b2), sd_all)
    x, _ = lax.scan(step, x, jax.tree.map(lambda v: v[:n_heun], xs))
    if last_to_zero:
        i, th, _, ca, _, _, sd = jax.tree.map(lambda v: v[n_steps - 1], xs)
        x = _euler_body(denoise_fn, churn_at(x, i, sd), th, ca)
    info["nfe"] = 2 * n_heun + (1 if last_to_zero else 0)
    return x, info


def sample_dpmpp_2m(key, denoise_fn: DenoiseFn, shape, *, num_steps: int = 18,
                    sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                    sigmas=None, x_init=None, dtype=jnp.float32):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), data prediction, multistep.

    In the EDM parameterisation alpha_t = 1, sigma_t = t, lambda_t = -log t, h_i = lambda_{t_i}
    - lambda_{t_{i-1}} = log(t_{i-1} / t_i), so with D_i the denoiser output at (x_i, t_i):

        step 1 (first order):  x_1 = (t_1 / t_0) x_0 + (1 - t_1 / t_0) D_0
        step i >= 2:           r_i = h_{i-1} / h_i
                               D~ = (1 + 1 / (2 r_i)) D_{i-1} - 1 / (2 r_i) D_{i-2}
                               x_i = (t_i / t_{i-1}) x_{i-1} + (1 - t_i / t_{i-1}) D~

    (alpha_t (e^{-h} - 1) = t_i / t_{i-1} - 1). The step to t = 0 (h = inf) is taken at first
    order, x_N = D(x_{N-1}; t_{N-1}) (the "lower order final" step; r -> 0 would divide by 0).
    All ratios and weights are host float64. One denoiser call per step: NFE = N.

    Returns (x, {"nfe", "sigmas"}).
    """
    shape = _check_shape(shape)
    s = _resolve_sigmas(sigmas, num_steps, sigma_min, sigma_max, rho)
    n = len(s) - 1
    t_cur, t_next = s[:-1], s[1:]
    ratio = t_next / t_cur
    with np.errstate(divide="ignore"):
        lam = -np.log(s)                       # lambda_N = +inf when t_N = 0
    h = lam[1:] - lam[:-1]
    w_cur = np.ones(n)
    w_prev = np.zeros(n)
    for i in range(1, n):
        if np.isfinite(h[i]):
            r = h[i - 1] / h[i]
            w_cur[i] = 1.0 + 0.5 / r
            w_prev[i] = -0.5 / r
    k_init, _ = _split(key)
    x = _initial(k_init, shape, s[0], x_init, dtype)

    def step(carry, c):
        x, d_prev = carry
        t, q, wc, wp = c
        d = denoise_fn(x, _levels(t, x))
        d_comb = wc * d + wp * d_prev
        return (q * x + (1.0 - q) * d_comb, d), None

    cs = lambda v: _const(v, dtype)  # noqa: E731
    (x, _), _ = lax.scan(step, (x, jnp.zeros_like(x)),
                         (cs(t_cur), cs(ratio), cs(w_cur), cs(w_prev)))
    return x, {"nfe": n, "sigmas": s}


def sample_ancestral(key, denoise_fn: DenoiseFn, shape, *, num_steps: int = 256,
                     sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                     sigmas=None, x_init=None, dtype=jnp.float32):
    """Ancestral sampling in sigma space: DDPM's posterior step (Ho et al. 2020, Eqs. 6-7)
    written for x = x0 + sigma n (the VE / EDM form; identical to DDPM with the beta-tilde
    variance after the change of variables x_vp = x / sqrt(1 + sigma^2)).

    Step t -> t' (< t), with x0_hat = D(x; t):
        x' = x0_hat + (t'^2 / t^2) (x - x0_hat) + t' sqrt(1 - t'^2 / t^2) z,   z ~ N(0, I)
    i.e. a draw from p(x_{t'} | x_t, x0 = x0_hat). Started at x_init = y (a noisy observation
    with noise std sigma_max) it samples the posterior of the denoising problem.
    NFE = N. Returns (x, {"nfe", "sigmas"}).
    """
    shape = _check_shape(shape)
    s = _resolve_sigmas(sigmas, num_steps, sigma_min, sigma_max, rho)
    c_mean, c_std = _ancestral_coeffs(s)
    k_init, k_steps = _split(key, stochastic=True)
    x = _initial(k_init, shape, s[0], x_init, dtype)

    def step(x, c):
        i, t, cm, cstd = c
        x0 = denoise_fn(x, _levels(t, x))
        z = jax.random.normal(jax.random.fold_in(k_steps, i), x.shape, x.dtype)
        return x0 + cm * (x - x0) + cstd * z, None

    cs = lambda v: _const(v, dtype)  # noqa: E731
    x, _ = lax.scan(step, x, (jnp.arange(len(s) - 1, dtype=jnp.int32), cs(s[:-1]),
                              cs(c_mean), cs(c_std)))
    return x, {"nfe": len(s) - 1, "sigmas": s}


def _ancestral_coeffs(s: np.ndarray):
    """Host float64 coefficients of the sigma-space ancestral step: (t'/t)^2 and
    t' sqrt(1 - (t'/t)^2)."""
    q = (s[1:] / s[:-1]) ** 2
    return q, s[1:] * np.sqrt(1.0 - q)


# ============================================================================================
# Adaptive reference solver: Dormand-Prince RK5(4) with error control.
# ============================================================================================

# Dormand & Prince (1980) RK5(4)7FM tableau (FSAL).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_E = tuple(b5 - b4 for b5, b4 in zip(_DP_B5, _DP_B4))


def solve_rk45(fn: Callable, y0, t0: float, t1: float, *, rtol: float = 1e-5,
               atol: float = 1e-5, first_step: float | None = None, max_steps: int = 10_000,
               safety: float = 0.9, min_factor: float = 0.2, max_factor: float = 10.0):
    """Solve dy/dt = fn(t, y) from t0 to t1 (either direction) with Dormand-Prince RK5(4).

    `y0` is any pytree of float arrays; `fn(t, y)` returns a pytree of the same structure
    (t a scalar of y's dtype). Local extrapolation (the 5th-order solution is propagated), FSAL,
    error norm = RMS over all entries of err / (atol + rtol max(|y|, |y_new|)), step factor
    safety * norm^(-1/5) clipped to [min_factor, max_factor] (<= 1 after a rejection); initial
    step by Hairer, Norsett & Wanner's heuristic (Solving ODEs I, II.4) unless `first_step`.
    All inside one `lax.while_loop` (jittable; differentiate it only forward-mode).

    Returns (y1, info) with traced int32 counts: info["nfe"] (evaluations of fn, including the
    initial-step heuristic's), "num_accepted", "num_rejected", and bool "success" (t1 reached
    within max_steps attempted steps).
    """
    flat0, unravel = ravel_pytree(y0)
    dtype = flat0.dtype
    direction = 1.0 if t1 >= t0 else -1.0
    t0a, t1a = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    span = abs(float(t1) - float(t0))

    def f(t, y):
        return ravel_pytree(fn(t, unravel(y)))[0].astype(dtype)

    def rms(v):
        return jnp.sqrt(jnp.mean(jnp.square(v)))

    k1 = f(t0a, flat0)
    nfe = 1
    if first_step is None:
        scale = atol + rtol * jnp.abs(flat0)
        d0, d1 = rms(flat0 / scale), rms(k1 / scale)
        h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
        h0 = jnp.minimum(h0, span)
        y1 = flat0 + direction * h0 * k1
        k2 = f(t0a + direction * h0, y1)
        d2 = rms((k2 - k1) / scale) / h0
        dmax = jnp.maximum(d1, d2)
        h1 = jnp.where(dmax <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / dmax) ** 0.2)
        h = jnp.minimum(jnp.minimum(100.0 * h0, h1), span).astype(dtype)
        nfe = 2
    else:
        h = jnp.asarray(min(abs(first_step), span), dtype)

    def cond(st):
        t, _, _, _, _, n_acc, n_rej, _ = st
        return ((t1a - t) * direction > 0) & (n_acc + n_rej < max_steps)

    def body(st):
        t, y, k1, h, _, n_acc, n_rej, nfe = st
        remaining = jnp.abs(t1a - t)
        last = h >= remaining
        h_use = jnp.where(last, remaining, h)
        hs = direction * h_use
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * k for a, k in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(f(t + _DP_C[i] * hs, yi))
        y_new = y + hs * sum(b * k for b, k in zip(_DP_B5, ks) if b != 0.0)
        err = hs * sum(e * k for e, k in zip(_DP_E, ks) if e != 0.0)
        scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_new))
        enorm = rms(err / scale)
        accept = enorm <= 1.0
        factor = jnp.where(enorm == 0.0, max_factor,
                           safety * jnp.power(jnp.maximum(enorm, 1e-30), -0.2))
        factor = jnp.clip(factor, min_factor, jnp.where(accept, max_factor, 1.0))
        t_new = jnp.where(accept, jnp.where(last, t1a, t + hs), t)
        y_out = jnp.where(accept, y_new, y)
        k_out = jnp.where(accept, ks[6], k1)                 # FSAL: k7 = f(t + h, y_new)
        h_next = (h_use * factor).astype(dtype)
        return (t_new, y_out, k_out, h_next, enorm, n_acc + accept.astype(jnp.int32),
                n_rej + (~accept).astype(jnp.int32), nfe + 6)

    zero = jnp.zeros((), jnp.int32)
    st = (t0a, flat0, k1, h, jnp.zeros((), dtype), zero, zero, zero + nfe)
    t, y, _, _, _, n_acc, n_rej, nfe = lax.while_loop(cond, body, st)
    info = {"nfe": nfe, "num_accepted": n_acc, "num_rejected": n_rej,
            "success": (t1a - t) * direction <= 0}
    return unravel(y), info


def sample_rk45(key, denoise_fn: DenoiseFn, shape, *, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rtol: float = 1e-5, atol: float = 1e-5,
                final_denoise: bool = True, max_steps: int = 10_000, x_init=None,
                dtype=jnp.float32):
    """Reference solution of the probability-flow ODE with adaptive RK45 (`solve_rk45`).

    Integrates dx/du = x - D(x; e^u) (the ODE dx/dsigma = (x - D)/sigma in u = log sigma, the
    same trajectories) from sigma_max down to sigma_min, then, if `final_denoise`, takes
    x <- D(x; sigma_min), which is exactly the last Euler step to sigma = 0 of EDM Alg. 1 /
    `sample_heun` (so Euler / Heun on `edm_sigma_steps(N, sigma_min, sigma_max)` converge to
    this as N grows). The whole batch is one ODE system (one step size for all samples).

    Returns (x, info) with info["nfe"] a traced int32: solver evaluations + 1 for the final
    denoise; also "num_accepted", "num_rejected", "success".
    """
    shape = _check_shape(shape)
    k_init, _ = _split(key)
    x = _initial(k_init, shape, sigma_max, x_init, dtype)

    def fn(u, x):
        return x - denoise_fn(x, _levels(jnp.exp(u), x))

    x, info = solve_rk45(fn, x, math.log(sigma_max), math.log(sigma_min), rtol=rtol, atol=atol,
                         max_steps=max_steps)
    if final_denoise:
        x = denoise_fn(x, _levels(jnp.asarray(sigma_min, dtype), x))
        info = dict(info, nfe=info["nfe"] + 1)
    return x, info


# ============================================================================================
# Reverse-time SDE (Song et al. 2021): Euler-Maruyama and predictor-corrector.
# ============================================================================================
#
# Both take a score function score_fn(x, t) -> grad_x log p_t(x) with x [N, *dims] in the SDE's
# own scaling and t a float [N] of SDE time in [eps, T]. For a denoiser use
# `sde.score_from_denoiser(denoise_fn)` (diffusion/sde.py): (D(x/s; sigma) - x/s) / (s sigma^2).
# The `sde` object needs (float64 numpy on the host): drift_coeff(t) = f(t) of the linear
# drift f(t) x, diffusion(t) = g(t), prior_std, T, and for the VP-type corrector beta(t)
# (diffusion.sde.VPSDE / SubVPSDE / VESDE provide these).

def _sde_grid(sde, num_steps: int, eps: float):
    t = np.linspace(float(sde.T), float(eps), num_steps + 1, dtype=np.float64)
    return t, t[:-1] - t[1:]                       # grid, positive step sizes


def _em_coeffs(sde, t: np.ndarray, dt: np.ndarray):
    """x_mean = a x + b score, x = x_mean + c z for a reverse step of length dt from t:
    a = 1 - f(t) dt, b = g(t)^2 dt, c = g(t) sqrt(dt) (Song et al. 2021, Eq. 6 discretised)."""
    f = np.asarray(sde.drift_coeff(t), np.float64) * np.ones_like(t)
    g = np.asarray(sde.diffusion(t), np.float64) * np.ones_like(t)
    return 1.0 - f * dt, g ** 2 * dt, g * np.sqrt(dt)


def sample_reverse_sde(key, score_fn: Callable, shape, *, sde, num_steps: int = 1000,
                       eps: float = 1e-3, denoise: bool = True, x_init=None,
                       dtype=jnp.float32):
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6):

        dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dw_bar,  from t = T down to t = eps,

    on the uniform grid t_i = T - i (T - eps) / N. Step from t (dt = (T - eps) / N > 0):
        x_mean = x - [f(t) x - g(t)^2 score(x, t)] dt,   x = x_mean + g(t) sqrt(dt) z.
    x_T ~ N(0, sde.prior_std^2 I). With `denoise` the noise-free mean of the last step is
    returned (as in Song et al.'s reference sampler). Coefficients are host float64.

    score_fn(x, t): t is a float [N] array of SDE times. NFE = N.
    Returns (x, {"nfe", "t"}).
    """
    shape = _check_shape(shape)
    t, dt = _sde_grid(sde, num_steps, eps)
    a, b, c = _em_coeffs(sde, t[:-1], dt)
    k_init, k_steps = _split(key, stochastic=True)
    x = _initial(k_init, shape, float(sde.prior_std), x_init, dtype)

    def step(carry, cf):
        x, _ = carry
        i, ti, ca, cb, cc = cf
        score = score_fn(x, _levels(ti, x))
        x_mean = ca * x + cb * score
        z = jax.random.normal(jax.random.fold_in(k_steps, i), x.shape, x.dtype)
        return (x_mean + cc * z, x_mean), None

    cs = lambda v: _const(v, dtype)  # noqa: E731
    (x, x_mean), _ = lax.scan(step, (x, x), (jnp.arange(num_steps, dtype=jnp.int32),
                                             cs(t[:-1]), cs(a), cs(b), cs(c)))
    return (x_mean if denoise else x), {"nfe": num_steps, "t": t}


def sample_pc(key, score_fn: Callable, shape, *, sde, num_steps: int = 1000,
              snr: float = 0.16, n_corrector: int = 1, eps: float = 1e-3,
              norm: str = "batch", denoise: bool = True, x_init=None, dtype=jnp.float32):
    """Predictor-corrector sampling (Song et al. 2021, Sec. 4.2, Alg. 2-5): `n_corrector`
    Langevin corrector steps and an Euler-Maruyama predictor step (`sample_reverse_sde`'s) at
    each grid time.

    Grid t_0 = T > ... > t_N = eps (uniform). At each t_i, i = 0 .. N-1 (the order of Song et
    al.'s reference sampler; the paper's Alg. 2 writes the predictor first):
      corrector, M times (Alg. 5):  z ~ N(0, I);  g = score(x, t_i);
                                    e = 2 alpha_i (snr ||z|| / ||g||)^2;
                                    x <- x + e g + sqrt(2 e) z
      predictor t_i -> t_{i+1}:     x_mean = x - [f x - g^2 score] dt,  x = x_mean + g sqrt(dt) z
    alpha_i = 1 - beta(t_i) dt for VP-type SDEs (objects with a `beta` method: the alphas of
    the discretised chain, as in Song et al.'s code), 1 for VE. With `denoise` the noise-free
    mean of the last predictor step is returned. (Ending on a corrector and dropping ITS noise
    sqrt(2 e) z instead shrinks narrow directions by a factor 1 - e / s^2: measured -9% std
    on a coordinate with std 0.3 at snr = 0.16 in 2-D.)

    `norm="batch"` (default, as Song et al.'s reference code): ||z|| and ||g|| are per-sample
    norms averaged over the batch, so one step size serves the batch (samples then depend on
    the batch they are drawn with). `norm="sample"`: Alg. 5 literally, per-sample norms; in
    low dimensions ||g|| is often near 0 (at modes and between them) and the step explodes,
    so use it only for high-dimensional data.

    Keys: grid step i uses fold_in(fold_in(k, 2 i + 1), j) for corrector step j and
    fold_in(k, 2 i) for the predictor. NFE = N (1 + M). Returns (x, {"nfe", "t"}).
    """
    shape = _check_shape(shape)
    if norm not in ("batch", "sample"):
        raise ValueError(f"norm must be 'batch' or 'sample', got {norm!r}")
    t, dt = _sde_grid(sde, num_steps, eps)
    a, b, c = _em_coeffs(sde, t[:-1], dt)
    if hasattr(sde, "beta"):
        alpha = 1.0 - np.asarray(sde.beta(t[:-1]), np.float64) * dt
    else:
        alpha = np.ones_like(t[:-1])
    k_init, k_steps = _split(key, stochastic=True)
    x = _initial(k_init, shape, float(sde.prior_std), x_init, dtype)
    red = tuple(range(1, len(shape)))

    def langevin(j, x, tv, al, key_i):
        z = jax.random.normal(jax.random.fold_in(key_i, j), x.shape, x.dtype)
        g = score_fn(x, tv)
        g_norm = jnp.sqrt(jnp.sum(g * g, axis=red))
        z_norm = jnp.sqrt(jnp.sum(z * z, axis=red))
        if norm == "batch":
            g_norm = jnp.broadcast_to(jnp.mean(g_norm), g_norm.shape)
            z_norm = jnp.broadcast_to(jnp.mean(z_norm), z_norm.shape)
        e = 2.0 * al * jnp.square(snr * z_norm / jnp.maximum(g_norm, 1e-30))
        return x + _per_sample(e, x) * g + _per_sample(jnp.sqrt(2.0 * e), x) * z

    def step(carry, cf):
        x, _ = carry
        i, ti, ca, cb, cc, al = cf
        tv = _levels(ti, x)
        key_i = jax.random.fold_in(k_steps, 2 * i + 1)
        x = lax.fori_loop(0, n_corrector, lambda j, xx: langevin(j, xx, tv, al, key_i), x)
        x_mean = ca * x + cb * score_fn(x, tv)
        z = jax.random.normal(jax.random.fold_in(k_steps, 2 * i), x.shape, x.dtype)
        return (x_mean + cc * z, x_mean), None

    cs = lambda v: _const(v, dtype)  # noqa: E731
    (x, x_mean), _ = lax.scan(step, (x, x), (jnp.arange(num_steps, dtype=jnp.int32),
                                             cs(t[:-1]), cs(a), cs(b), cs(c), cs(alpha)))
    return (x_mean if denoise else x), {"nfe": num_steps * (1 + n_corrector), "t": t}


# ============================================================================================
# Discrete-time DDPM / DDIM with an eps-prediction function.
# ============================================================================================
#
# Index convention: `alphas_bar` is a length-T host array, alphas_bar[i] = prod_{s<=i} (1 -
# beta_s) for the paper's t = i + 1 (so index 0 is the least noisy level); eps_fn(x, i) takes the
# VP-scaled x_t [N, *dims] and an int32 [N] index i in [0, T). The level "before" index 0 has
# alpha_bar = 1 (clean data), which is where the last step lands.

def ddpm_alphas_bar(num_train_steps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> np.ndarray:
    """Linear beta schedule of Ho et al. 2020 (beta_1 = 1e-4 ... beta_T = 0.02, T = 1000):
    alphas_bar[i] = prod_{s <= i} (1 - beta_s), float64 numpy of length T."""
    betas = np.linspace(beta_start, beta_end, num_train_steps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def ddpm_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """A strided sub-sequence of `num_steps` indices, descending from T - 1 to 0 (both
    included; evenly spaced and rounded), int64 numpy. num_steps = T gives every index."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"need 1 <= num_steps <= {num_train_steps}, got {num_steps}")
    if num_steps == 1:
        return np.array([num_train_steps - 1])
    ts = np.round(np.linspace(num_train_steps - 1, 0, num_steps)).astype(np.int64)
    if len(np.unique(ts)) != num_steps:
        raise ValueError("timesteps are not distinct")
    return ts


def _resolve_timesteps(alphas_bar, num_steps, timesteps):
    ab = np.asarray(alphas_bar, dtype=np.float64)
    if timesteps is None:
        ts = ddpm_timesteps(len(ab), num_steps if num_steps is not None else len(ab))
    else:
        ts = np.asarray(timesteps, dtype=np.int64)
        if np.any(np.diff(ts) >= 0) or ts[-1] < 0 or ts[0] >= len(ab):
            raise ValueError("timesteps must be strictly decreasing indices into alphas_bar")
    ab_t = ab[ts]
    ab_prev = np.concatenate([ab[ts[1:]], [1.0]])
    return ab, ts, ab_t, ab_prev


def eps_from_denoiser(denoise_fn: DenoiseFn, alphas_bar) -> Callable:
    """An eps-prediction function eps_fn(x_t, i) from a denoiser D(x; sigma) (VP form).

    x_t = sqrt(ab) x0 + sqrt(1 - ab) eps  <=>  x_t / sqrt(ab) = x0 + sigma eps with
    sigma = sqrt((1 - ab) / ab), so
        eps = (x_t - sqrt(ab) D(x_t / sqrt(ab); sigma)) / sqrt(1 - ab).
    sqrt(ab), sqrt(1 - ab) and sigma are host float64 tables gathered by the int index i [N].
    """
    ab = np.asarray(alphas_bar, dtype=np.float64)
    tab_sqrt_ab = np.sqrt(ab)
    tab_sqrt_1m = np.sqrt(1.0 - ab)
    tab_sigma = np.sqrt((1.0 - ab) / ab)

    def eps_fn(x, i):
        dt = x.dtype
        sab = _per_sample(_const(tab_sqrt_ab, dt)[i], x)
        s1m = _per_sample(_const(tab_sqrt_1m, dt)[i], x)
        sigma = _const(tab_sigma, dt)[i]
        return (x - sab * denoise_fn(x / sab, sigma)) / s1m

    return eps_fn


def sample_ddpm(key, eps_fn: Callable, shape, *, alphas_bar, num_steps: int | None = None,
                timesteps=None, variance: str = "beta", x_init=None, dtype=jnp.float32):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) with an eps-prediction eps_fn(x, i).

    x_T ~ N(0, I); for each index t of the (possibly strided) sequence, with alpha = ab_t /
    ab_prev and beta = 1 - alpha (the sub-sequence's effective beta; the usual ones when every
    index is used):
        x_prev = (x - beta / sqrt(1 - ab_t) eps(x, t)) / sqrt(alpha) + sigma z,
    sigma^2 = beta (`variance="beta"`, Ho et al.'s choice) or beta_tilde = (1 - ab_prev) /
    (1 - ab_t) beta (`"beta_tilde"`); no noise on the last step (z = 0 at t = 1 in Alg. 2).
    Timesteps: `timesteps` (descending indices) or `ddpm_timesteps(T, num_steps)` (all T if
    neither). Coefficients are host float64. NFE = number of steps.
    Returns (x, {"nfe", "timesteps"}).
    """
    shape = _check_shape(shape)
    _, ts, ab_t, ab_prev = _resolve_timesteps(alphas_bar, num_steps, timesteps)
    alpha = ab_t / ab_prev
    beta = 1.0 - alpha
    c_x = 1.0 / np.sqrt(alpha)
    c_eps = -beta / (np.sqrt(1.0 - ab_t) * np.sqrt(alpha))
    if variance == "beta":
        var = beta.copy()
    elif variance == "beta_tilde":
        var = (1.0 - ab_prev) / (1.0 - ab_t) * beta
    else:
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    var[-1] = 0.0
    return _ddpm_like(key, eps_fn, shape, ts, c_x, c_eps, np.sqrt(var), x_init, dtype)


def sample_ddim(key, eps_fn: Callable, shape, *, alphas_bar, num_steps: int | None = None,
                eta: float = 0.0, timesteps=None, x_init=None, dtype=jnp.float32):
    """DDIM (Song, Meng & Ermon 2021, Eq. 12) with an eps-prediction eps_fn(x, i):

        x_prev = sqrt(ab_prev) (x - sqrt(1 - ab_t) eps) / sqrt(ab_t)
                 + sqrt(1 - ab_prev - sigma_t^2) eps + sigma_t z,
        sigma_t = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)   (Eq. 16).

    eta = 0 is deterministic: in x / sqrt(ab) coordinates it is exactly Euler's method on the
    probability-flow ODE dx/dsigma = (x - D)/sigma on the grid sigma_t = sqrt((1 - ab_t) / ab_t)
    (ending at sigma = 0); eta = 1 is DDPM with the beta-tilde variance. Timesteps as in
    `sample_ddpm`; x_T ~ N(0, I). NFE = number of steps. Returns (x, {"nfe", "timesteps"}).
    """
    shape = _check_shape(shape)
    _, ts, ab_t, ab_prev = _resolve_timesteps(alphas_bar, num_steps, timesteps)
    sig = eta * np.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * np.sqrt(1.0 - ab_t / ab_prev)
    c_x = np.sqrt(ab_prev / ab_t)
    c_dir = np.sqrt(np.maximum(1.0 - ab_prev - sig ** 2, 0.0))
    c_eps = c_dir - np.sqrt(ab_prev) * np.sqrt(1.0 - ab_t) / np.sqrt(ab_t)
    return _ddpm_like(key, eps_fn, shape, ts, c_x, c_eps, sig, x_init, dtype)


def _ddpm_like(key, eps_fn, shape, ts, c_x, c_eps, c_z, x_init, dtype):
    """x <- c_x x + c_eps eps(x, t) + c_z z over the index sequence ts (one lax.scan)."""
    noisy = bool(np.any(np.asarray(c_z) > 0))
    k_init, k_steps = _split(key, stochastic=noisy)
    x = _initial(k_init, shape, 1.0, x_init, dtype)

    def step(x, c):
        i, t, a, b, s = c
        eps = eps_fn(x, jnp.broadcast_to(t, (x.shape[0],)))
        if not noisy:                   # DDIM eta = 0: deterministic, no draws
            return a * x + b * eps, None
        z = jax.random.normal(jax.random.fold_in(k_steps, i), x.shape, x.dtype)
        return a * x + b * eps + s * z, None

    cs = lambda v: _const(v, dtype)  # noqa: E731
    n = len(ts)
    x, _ = lax.scan(step, x, (jnp.arange(n, dtype=jnp.int32), jnp.asarray(ts, jnp.int32),
                              cs(c_x), cs(c_eps), cs(c_z)))
    return x, {"nfe": n, "timesteps": ts}
