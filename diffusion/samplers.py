"""Samplers for diffusion models: pure functions, each one `lax.scan` over a ready grid.

Conventions (shared by all of `diffusion/`):

* Data are arrays x of shape ``[N, *dims]``. A denoiser is a pure function
  ``denoise_fn(x, sigma) -> D(x; sigma)`` with ``sigma`` of shape ``[N]``; it estimates
  E[x0 | x0 + sigma n = x]. The score is ``(D(x; sigma) - x) / sigma^2`` (EDM Eq. 3).
* A sampler takes its discretisation ready-made, from `diffusion.schedules`: a noise-level grid
  ``sigmas`` [N + 1] (descending, usually ending at 0), DDPM's ``alphas_bar`` and
  ``timesteps``, or SDE times ``ts`` [N + 1]. Grids and every per-step coefficient (churn
  level, Heun weights, DDIM coefficients, SDE coefficients) are float64 numpy ON THE HOST and
  enter the program as constants of the sample dtype (float32 by default): in float32,
  sqrt(t_hat^2 - t^2) with t_hat = t computed on the device can come out near 1e-2 instead of
  0 and inject noise that should not be there; on the host in float64 it is exactly 0. Grids
  must therefore be concrete (numpy or Python), not traced values.
* ``sample_xxx(key, model_fn, shape, grid, ...) -> (x, info)``; ``info["nfe"]`` is the exact
  number of model evaluations (a Python int; a traced int32 for the adaptive `sample_rk45`).
* The step loop is one `lax.scan` over the per-step coefficient arrays, so the traced program
  has the same size for 10 and for 1000 steps; the samplers jit, vmap (over keys or initial
  states) and differentiate (w.r.t. anything the model closes over).
* Stochastic samplers draw their initial state from ``split(key)[0]`` and the noise of step i
  from ``fold_in(split(key)[1], i)`` (`step_noise`): reproducible from the key, independent of
  batching; the draws of a chunk of steps are made before those steps run
  (`scan_with_noise`). Deterministic samplers accept key=None when ``x_init`` is given.
* ``x_init`` (optional) replaces the drawn initial state: the state at the first grid level
  (for the sigma-space samplers ``sigmas[0] * n``; for DDPM / DDIM the VP-scaled ``x_T``).

Samplers, with the papers they follow:

=========================  ===================================================  ==============
sampler                    reference                                            NFE
=========================  ===================================================  ==============
`sample_euler`             Karras et al. 2022 (EDM) Alg. 1 without correction   N
`sample_heun`              EDM Alg. 1 (s(t) = 1, sigma(t) = t)                  2N - 1
`sample_edm_stochastic`    EDM Alg. 2 (S_churn, S_tmin, S_tmax, S_noise)        2N - 1
`sample_dpmpp_2m`          Lu et al. 2022, DPM-Solver++(2M), Alg. 2             N
`sample_rk45`              Dormand & Prince 1980 RK5(4) (`diffusion.ode`)       adaptive (+1)
`sample_ancestral`         DDPM ancestral step in sigma space (Ho et al. 2020)  N
`sample_reverse_sde`       Song et al. 2021, reverse SDE (Euler-Maruyama or     N
                           the reverse-diffusion predictor)
`sample_pc`                Song et al. 2021, Alg. 2-5 (Langevin corrector, snr) N (1 + M)
`sample_ddpm`              Ho et al. 2020, Alg. 2 (eps-prediction)              N
`sample_ddim`              Song, Meng & Ermon 2021, Eq. 12 (eta)                N
=========================  ===================================================  ==============
(N = number of grid steps; a step to sigma = 0 skips Heun's correction.)

Single steps, for samplers written elsewhere (guidance, inverse problems: `diffusion.inverse`):
`posterior_mean` (x0_hat = D(x; sigma), Tweedie), `clip_denoiser`, `euler_step`, `heun_step` with
`heun_coefficients` (and `churn_levels`), `ancestral_step` with `ancestral_coefficients`,
`eps_from_denoiser`, `probability_flow_drift`, the reverse-SDE steps'
`reverse_sde_coefficients` and `langevin_alphas`; and the plumbing every sampler uses:
`check_shape`, `check_sigmas`, `split_key`, `initial_state`, `host_constant`, `noise_levels`,
`per_sample`, `step_noise`, `scan_with_noise`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from diffusion import rng
from diffusion.ode import solve_rk45

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]

__all__ = [
    "sample_euler", "sample_heun", "sample_edm_stochastic", "sample_dpmpp_2m",
    "sample_ancestral", "sample_rk45", "sample_reverse_sde", "sample_pc", "sample_ddpm",
    "sample_ddim",
    "posterior_mean", "clip_denoiser", "euler_step", "heun_coefficients", "heun_step",
    "churn_levels", "ancestral_coefficients",
    "ancestral_step", "eps_from_denoiser", "probability_flow_drift",
    "reverse_sde_coefficients", "langevin_alphas", "PREDICTORS",
    "check_shape", "check_sigmas", "split_key", "initial_state", "host_constant",
    "noise_levels", "per_sample", "step_noise", "scan_with_noise",
    "NOISE_BUFFER_ELEMENTS",
]


# ============================================================================================
# Plumbing shared by every sampler.
# ============================================================================================

def check_shape(shape) -> tuple[int, ...]:
    """`shape` as a tuple of ints [N, *dims]; ValueError without a data dim."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be [N, *dims], got {shape}")
    return shape


def check_sigmas(sigmas) -> np.ndarray:
    """A noise-level grid as float64 numpy [N + 1]: strictly decreasing, >= 0, only the last
    level may be 0; ValueError otherwise."""
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError("sigmas must be a 1-D grid of at least 2 levels")
    if np.any(np.diff(s) >= 0) or s[-1] < 0:
        raise ValueError("sigmas must be strictly decreasing and >= 0")
    if np.any(s[:-1] == 0):
        raise ValueError("only the last level may be 0")
    return s


def host_constant(a, dtype) -> Array:
    """Host float64 values -> a device constant of the sample dtype."""
    return jnp.asarray(np.asarray(a, dtype=np.float64), dtype=dtype)


def noise_levels(sigma: Array, x: Array) -> Array:
    """A scalar level -> the per-sample [N] vector a denoiser takes."""
    return jnp.broadcast_to(sigma.astype(x.dtype), (x.shape[0],))


def per_sample(c: Array, x: Array) -> Array:
    """A per-sample [N] coefficient shaped to broadcast over x [N, ...]."""
    return c.reshape(c.shape + (1,) * (x.ndim - 1))


def split_key(key, *, stochastic: bool = False):
    """(initial-state key, per-step key) = split(key); (None, None) for key=None, which only a
    deterministic sampler given `x_init` accepts."""
    if key is None:
        if stochastic:
            raise ValueError("this sampler is stochastic: it needs a PRNG key")
        return None, None
    k_init, k_steps = jax.random.split(key)
    return k_init, k_steps


def initial_state(k_init, shape, scale: float, x_init, dtype) -> Array:
    """`x_init` (checked against `shape`), or scale * n with n ~ N(0, I) drawn from k_init
    (the values of `jax.random.normal(k_init, shape, dtype)`)."""
    if x_init is not None:
        x = jnp.asarray(x_init, dtype=dtype)
        chex.assert_shape(x, tuple(shape))
        return x
    if k_init is None:
        raise ValueError("need a PRNG key or x_init")
    return jnp.asarray(scale, dtype) * rng.normal(k_init, shape, dtype)


def step_noise(k_steps, i: Array, x: Array) -> Array:
    """The standard normal noise of step i: normal(fold_in(k_steps, i)), x's shape and dtype.

    The values of `jax.random.normal(fold_in(k_steps, i), x.shape, x.dtype)`, drawn by
    `diffusion.rng.normal` (an unrolled Threefry that XLA fuses into one kernel)."""
    return rng.normal(jax.random.fold_in(k_steps, i), x.shape, x.dtype)


# Noise kept in memory by `scan_with_noise`, in elements: all steps' draws up to this size
# (64 MiB of float32), else buffers of as many steps as fit.
NOISE_BUFFER_ELEMENTS = 1 << 24


def scan_with_noise(step: Callable, carry, xs, noise_fn: Callable, num_steps: int, *,
                    chunk: int | None = None):
    """`lax.scan(step, carry, (noise, xs))` over `num_steps` steps, where the noise of step i
    is noise_fn(i) (e.g. `step_noise(k_steps, i, x)`: the same values as drawing it inside the
    step). Returns the final carry. xs are arrays [num_steps, ...] (a pytree);
    step(carry, (noise_i, xs_i)) -> (carry, None).

    The draws are made before the steps that use them, vmapped over i: made inside each
    step, between its network evaluations, a draw is a separate small computation that
    the step waits for. `chunk` steps' draws are made at a time (default: as many as fit in
    `NOISE_BUFFER_ELEMENTS`): all of them before the loop when chunk >= num_steps (the usual
    case), else into a buffer that the loop carries and refills every `chunk` steps (a
    `lax.cond`; the last chunk's draws past num_steps are discarded). One scan with one copy
    of `step`, whatever num_steps.
    """
    i0 = jnp.int32(0)
    per_step = sum(math.prod(v.shape) for v in jax.tree.leaves(jax.eval_shape(noise_fn, i0)))
    if chunk is None:
        chunk = NOISE_BUFFER_ELEMENTS // max(1, per_step)
    chunk = max(1, min(int(chunk), num_steps))

    def draw(first):
        return jax.vmap(noise_fn)(first + jnp.arange(chunk, dtype=jnp.int32))

    if chunk == num_steps:
        carry, _ = lax.scan(step, carry, (draw(i0), xs))
        return carry

    def body(state, c):
        carry, buffer = state
        i, x_i = c
        buffer = lax.cond(i % chunk == 0, lambda: draw(i), lambda: buffer)
        noise = jax.tree.map(lambda v: lax.dynamic_index_in_dim(v, i % chunk, keepdims=False),
                             buffer)
        carry, _ = step(carry, (noise, x_i))
        return (carry, buffer), None

    empty = jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), jax.eval_shape(draw, i0))
    (carry, _), _ = lax.scan(body, (carry, empty),
                             (jnp.arange(num_steps, dtype=jnp.int32), xs))
    return carry


# ============================================================================================
# Single steps.
# ============================================================================================

def posterior_mean(denoise_fn: DenoiseFn, x: Array, sigma: Array) -> Array:
    """x0_hat = D(x; sigma) = E[x0 | x0 + sigma n = x] (Tweedie) at one scalar level sigma."""
    return denoise_fn(x, noise_levels(sigma, x))


def clip_denoiser(denoise_fn: DenoiseFn, clip_denoised) -> DenoiseFn:
    """D clipped to the box [lo, hi] (clip_denoised = (lo, hi), scalars or arrays that
    broadcast over a sample), as DDPM implementations clip their x0 reconstruction to the
    data range (Ho et al. 2020's code; Diffusion-QL's actions in [-1, 1]); None: D itself.
    Every sampler then steps with the clipped estimate: for the ancestral steps this is the
    `clip_denoised` option of `sample_ancestral`."""
    if clip_denoised is None:
        return denoise_fn
    lo, hi = _clip_bounds(clip_denoised)
    return lambda x, sigma: jnp.clip(denoise_fn(x, sigma), lo, hi)


def _clip_bounds(clip_denoised):
    try:
        lo, hi = clip_denoised
    except (TypeError, ValueError):
        raise ValueError(f"clip_denoised must be None or a pair (lo, hi), got "
                         f"{clip_denoised!r}") from None
    if np.any(np.asarray(lo) >= np.asarray(hi)):
        raise ValueError(f"clip_denoised=(lo, hi) needs lo < hi, got {clip_denoised!r}")
    return lo, hi


def probability_flow_drift(denoise_fn: DenoiseFn, x: Array, sigma) -> Array:
    """dx/dsigma = (x - D(x; sigma)) / sigma: the probability-flow ODE with s(t) = 1,
    sigma(t) = t (EDM Eq. 4 / Alg. 1 line 4); sigma a scalar or [N] (> 0)."""
    sig = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return (x - denoise_fn(x, sig)) / per_sample(sig, x)


def euler_step(denoise_fn: DenoiseFn, x: Array, sigma: Array, ratio: Array) -> Array:
    """One Euler step of the probability-flow ODE from sigma to sigma' (EDM Alg. 1 line 5):
    x' = x + (sigma' - sigma) / sigma (x - D(x; sigma)), with ratio = (sigma' - sigma) / sigma
    computed on the host (ratio = -1, a step to sigma' = 0, returns D(x; sigma))."""
    return x + ratio * (x - posterior_mean(denoise_fn, x, sigma))


def heun_coefficients(t_hat: np.ndarray, t_next: np.ndarray):
    """Host float64 coefficients (a, b1, b2) of Heun steps from t_hat to t_next (EDM Alg. 1
    lines 4-8), with h = t_next - t_hat:

        Euler:  x' = x + a (x - D),                    a = h / t_hat
        Heun:   x_next = x + b1 (x - D) + b2 (x' - D'),  b1 = h / (2 t_hat), b2 = h / (2 t_next)

    b2 = 0 where t_next = 0 (that step is taken by Euler alone).
    """
    h = t_next - t_hat
    a = h / t_hat
    b1 = 0.5 * h / t_hat
    with np.errstate(divide="ignore", invalid="ignore"):
        b2 = np.where(t_next > 0, 0.5 * h / np.where(t_next > 0, t_next, 1.0), 0.0)
    return a, b1, b2


def heun_step(denoise_fn: DenoiseFn, x_hat: Array, t_hat: Array, t_next: Array, a: Array,
              b1: Array, b2: Array) -> Array:
    """One second-order step of EDM Alg. 1 / 2 (lines 4-8) from x_hat at t_hat to t_next > 0,
    with `heun_coefficients(t_hat, t_next)`."""
    d_cur = x_hat - posterior_mean(denoise_fn, x_hat, t_hat)       # t_hat * d_i
    x_eul = x_hat + a * d_cur
    d_next = x_eul - posterior_mean(denoise_fn, x_eul, t_next)     # t_next * d'_i
    return x_hat + b1 * d_cur + b2 * d_next


def ancestral_coefficients(sigmas: np.ndarray, variance: str = "beta_tilde"):
    """Host float64 coefficients of the sigma-space ancestral steps along a grid [N + 1]:
    c_mean = (t' / t)^2 and c_std, each [N], with c_std^2 the variance of the step:

        "beta_tilde"  t'^2 (1 - (t' / t)^2), the posterior variance of p(x_t' | x_t, x0)
                      (Ho et al. 2020's beta-tilde; exact when x0 is known)
        "beta"        t^2 - t'^2, the forward transition's variance (Ho et al.'s beta; the
                      reverse-diffusion step of Song et al. 2021, Eq. 47, for VE); 0 on a
                      step to t' = 0, as DDPM's last step (Alg. 2, z = 0 at t = 1)
    """
    q = (sigmas[1:] / sigmas[:-1]) ** 2
    if variance == "beta_tilde":
        return q, sigmas[1:] * np.sqrt(1.0 - q)
    if variance == "beta":
        return q, np.where(sigmas[1:] > 0, np.sqrt(sigmas[:-1] ** 2 - sigmas[1:] ** 2), 0.0)
    raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")


def ancestral_step(x: Array, x0: Array, z: Array, c_mean: Array, c_std: Array) -> Array:
    """A draw from DDPM's posterior p(x_t' | x_t = x, x0) (Ho et al. 2020, Eqs. 6-7) written for
    x = x0 + t n: x' = x0 + (t'^2 / t^2)(x - x0) + t' sqrt(1 - t'^2 / t^2) z, with
    `ancestral_coefficients`, x0 the posterior mean x0_hat and z ~ N(0, I)."""
    return x0 + c_mean * (x - x0) + c_std * z


class _EpsFromDenoiser:
    """eps_fn(x_t, i) of `eps_from_denoiser`, plus `at_index(x_t, i)` for one shared scalar
    index (what the DDPM / DDIM samplers use: the same values without per-sample gathers)."""

    def __init__(self, denoise_fn: DenoiseFn, alphas_bar):
        ab = np.asarray(alphas_bar, dtype=np.float64)
        self.denoise_fn = denoise_fn
        self.tables = (np.sqrt(ab), np.sqrt(1.0 - ab), np.sqrt((1.0 - ab) / ab))

    def _eps(self, x, sab, s1m, sigma):
        return (x - sab * self.denoise_fn(x / sab, sigma)) / s1m

    def __call__(self, x, i):
        sab, s1m, sigma = (host_constant(tab, x.dtype)[i] for tab in self.tables)
        return self._eps(x, per_sample(sab, x), per_sample(s1m, x), sigma)

    def at_index(self, x, i):
        sab, s1m, sigma = (noise_levels(host_constant(tab, x.dtype)[i], x)
                           for tab in self.tables)
        return self._eps(x, per_sample(sab, x), per_sample(s1m, x), sigma)


def eps_from_denoiser(denoise_fn: DenoiseFn, alphas_bar) -> Callable:
    """An eps-prediction function eps_fn(x_t, i) from a denoiser D(x; sigma) (VP form).

    x_t = sqrt(ab) x0 + sqrt(1 - ab) eps  <=>  x_t / sqrt(ab) = x0 + sigma eps with
    sigma = sqrt((1 - ab) / ab), so
        eps = (x_t - sqrt(ab) D(x_t / sqrt(ab); sigma)) / sqrt(1 - ab).
    sqrt(ab), sqrt(1 - ab) and sigma are host float64 tables gathered by the int index i [N].
    The function also has `at_index(x_t, i)` for a scalar index shared by all samples, which
    `sample_ddpm` / `sample_ddim` call (an eps function without it gets the index as [N]).
    """
    return _EpsFromDenoiser(denoise_fn, alphas_bar)


# ============================================================================================
# Probability-flow ODE samplers: Euler, Heun, stochastic (Alg. 2), DPM-Solver++(2M), RK45.
# ============================================================================================

def sample_euler(key, denoise_fn: DenoiseFn, shape, sigmas, *, x_init=None,
                 dtype=jnp.float32):
    """Euler on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma.

    EDM Alg. 1 (s(t) = 1, sigma(t) = t) without the second-order correction, on the grid
    `sigmas` [N + 1] (e.g. `schedules.edm_sigma_steps`); x_0 = sigmas[0] n, n ~ N(0, I) from
    `key`. Step i is `euler_step` with ratio (t_{i+1} - t_i) / t_i from the host (the last step
    to t = 0 has ratio -1, i.e. x_N = D(x_{N-1}; t_{N-1})). First order in 1 / N.

    Returns (x [shape], {"nfe": N, "sigmas": the float64 grid}).
    """
    shape = check_shape(shape)
    s = check_sigmas(sigmas)
    t_cur = s[:-1]
    ratio = (s[1:] - s[:-1]) / t_cur
    k_init, _ = split_key(key)
    x = initial_state(k_init, shape, s[0], x_init, dtype)

    def step(x, c):
        t, r = c
        return euler_step(denoise_fn, x, t, r), None

    x, _ = lax.scan(step, x, (host_constant(t_cur, dtype), host_constant(ratio, dtype)))
    return x, {"nfe": len(t_cur), "sigmas": s}


def sample_heun(key, denoise_fn: DenoiseFn, shape, sigmas, *, x_init=None,
                dtype=jnp.float32):
    """Heun's 2nd-order method on the probability-flow ODE: EDM Alg. 1, s(t) = 1, sigma(t) = t.

    On the grid `sigmas` [N + 1]. The correction (Alg. 1 lines 6-8) is skipped on the step to
    t = 0, so NFE = 2N - 1 (2N if the grid does not end at 0); EDM's 18 steps give NFE = 35.
    x_0 = sigmas[0] n from `key` unless `x_init` is given. Second order in 1 / N.

    Returns (x, {"nfe", "sigmas"}).
    """
    return _edm_sampler(key, denoise_fn, shape, sigmas, x_init=x_init, dtype=dtype, churn=None)


def sample_edm_stochastic(key, denoise_fn: DenoiseFn, shape, sigmas, *, s_churn: float = 0.0,
                          s_tmin: float = 0.0, s_tmax: float = float("inf"),
                          s_noise: float = 1.0, x_init=None, dtype=jnp.float32):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2) on the grid `sigmas` [N + 1].

    For each step i:
        gamma_i = min(S_churn / N, sqrt(2) - 1) if t_i in [S_tmin, S_tmax] else 0
        t_hat = t_i + gamma_i t_i
        x_hat = x_i + sqrt(t_hat^2 - t_i^2) eps,  eps ~ N(0, S_noise^2 I)
        Euler step t_hat -> t_{i+1}, then the Heun correction if t_{i+1} != 0.

    gamma_i, t_hat and the noise std S_noise sqrt(t_hat^2 - t_i^2) are computed on the host in
    float64 (exactly 0 without churn). With S_churn = 0 the arithmetic is that of
    `sample_heun`, so the result equals Heun's bit for bit. The noise of step i is drawn from
    fold_in(split(key)[1], i) even where its std is 0. NFE = 2N - 1.

    Returns (x, {"nfe", "sigmas", "gammas", "t_hat", "noise_std"}).
    """
    return _edm_sampler(key, denoise_fn, shape, sigmas, x_init=x_init, dtype=dtype,
                        churn=(s_churn, s_tmin, s_tmax, s_noise))


def churn_levels(sigmas, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    """Host float64 churn of EDM Alg. 2 along a grid [N + 1], each [N]: gamma_i =
    min(S_churn / N, sqrt(2) - 1) where t_i is in [S_tmin, S_tmax] (else 0), t_hat_i =
    (1 + gamma_i) t_i and the added noise std S_noise sqrt(t_hat_i^2 - t_i^2)."""
    s = check_sigmas(sigmas)
    t_cur = s[:-1]
    inside = (t_cur >= s_tmin) & (t_cur <= s_tmax)
    gamma = np.where(inside, min(s_churn / (len(s) - 1), math.sqrt(2.0) - 1.0), 0.0)
    t_hat = t_cur + gamma * t_cur
    return gamma, t_hat, s_noise * np.sqrt(t_hat ** 2 - t_cur ** 2)


def _edm_sampler(key, denoise_fn, shape, sigmas, *, x_init, dtype, churn):
    shape = check_shape(shape)
    s = check_sigmas(sigmas)
    n_steps = len(s) - 1
    t_cur, t_next = s[:-1], s[1:]
    info: dict[str, Any] = {"sigmas": s}
    if churn is None:
        t_hat, std = t_cur, None
    else:
        gamma, t_hat, std = churn_levels(s, *churn)
        info.update(gammas=gamma, t_hat=t_hat, noise_std=std)
    a, b1, b2 = heun_coefficients(t_hat, t_next)
    last_to_zero = t_next[-1] == 0.0
    n_heun = n_steps - 1 if last_to_zero else n_steps
    k_init, k_steps = split_key(key, stochastic=churn is not None)
    x = initial_state(k_init, shape, s[0], x_init, dtype)
    cs = lambda v: host_constant(v, dtype)
    xs = (cs(t_hat), cs(t_next), cs(a), cs(b1), cs(b2))
    if churn is None or not np.any(std > 0):     # S_churn = 0: Heun's arithmetic exactly
        def step(x, c):
            return heun_step(denoise_fn, x, *c), None

        x, _ = lax.scan(step, x, jax.tree.map(lambda v: v[:n_heun], xs))
        x_last = x
    else:
        def churn_step(x, c):
            z, (sd, c_heun) = c
            return heun_step(denoise_fn, x + sd * z, *c_heun), None

        x = scan_with_noise(churn_step, x, jax.tree.map(lambda v: v[:n_heun], (cs(std), xs)),
                            lambda i: step_noise(k_steps, i, x), n_heun)
        x_last = x + cs(std)[n_steps - 1] * step_noise(k_steps, jnp.int32(n_steps - 1), x)
    if last_to_zero:
        x = euler_step(denoise_fn, x_last, xs[0][n_steps - 1], xs[2][n_steps - 1])
    info["nfe"] = 2 * n_heun + (1 if last_to_zero else 0)
    return x, info


def sample_dpmpp_2m(key, denoise_fn: DenoiseFn, shape, sigmas, *, x_init=None,
                    dtype=jnp.float32):
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
    shape = check_shape(shape)
    s = check_sigmas(sigmas)
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
    k_init, _ = split_key(key)
    x = initial_state(k_init, shape, s[0], x_init, dtype)

    def step(carry, c):
        x, d_prev = carry
        t, q, wc, wp = c
        d = posterior_mean(denoise_fn, x, t)
        d_comb = wc * d + wp * d_prev
        return (q * x + (1.0 - q) * d_comb, d), None

    cs = lambda v: host_constant(v, dtype)
    (x, _), _ = lax.scan(step, (x, jnp.zeros_like(x)),
                         (cs(t_cur), cs(ratio), cs(w_cur), cs(w_prev)))
    return x, {"nfe": n, "sigmas": s}


def sample_rk45(key, denoise_fn: DenoiseFn, shape, *, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rtol: float = 1e-5, atol: float = 1e-5,
                final_denoise: bool = True, max_steps: int = 10_000, x_init=None,
                dtype=jnp.float32):
    """Reference solution of the probability-flow ODE with adaptive RK45 (`ode.solve_rk45`).

    Integrates dx/du = x - D(x; e^u) (the ODE dx/dsigma = (x - D)/sigma in u = log sigma, the
    same trajectories) from sigma_max down to sigma_min, then, if `final_denoise`, takes
    x <- D(x; sigma_min), which is exactly the last Euler step to sigma = 0 of EDM Alg. 1 /
    `sample_heun` (so Euler / Heun on `edm_sigma_steps(N, sigma_min, sigma_max)` converge to
    this as N grows). The whole batch is one ODE system (one step size for all samples).
    The solver picks its own steps: only the end points are given.

    Returns (x, info) with info["nfe"] a traced int32: solver evaluations + 1 for the final
    denoise; also "num_accepted", "num_rejected", "success".
    """
    shape = check_shape(shape)
    k_init, _ = split_key(key)
    x = initial_state(k_init, shape, sigma_max, x_init, dtype)

    def fn(u, x):
        return x - denoise_fn(x, noise_levels(jnp.exp(u), x))

    x, info = solve_rk45(fn, x, math.log(sigma_max), math.log(sigma_min), rtol=rtol, atol=atol,
                         max_steps=max_steps)
    if final_denoise:
        x = denoise_fn(x, noise_levels(jnp.asarray(sigma_min, dtype), x))
        info = dict(info, nfe=info["nfe"] + 1)
    return x, info


# ============================================================================================
# Ancestral sampling in sigma space.
# ============================================================================================

def sample_ancestral(key, denoise_fn: DenoiseFn, shape, sigmas, *,
                     variance: str = "beta_tilde", clip_denoised=None, x_init=None,
                     dtype=jnp.float32):
    """Ancestral sampling in sigma space: DDPM's posterior step (Ho et al. 2020, Eqs. 6-7)
    written for x = x0 + sigma n (the VE / EDM form; identical to DDPM with the beta-tilde
    variance after the change of variables x_vp = x / sqrt(1 + sigma^2)).

    Step t -> t' (< t) along `sigmas` [N + 1], with x0_hat = D(x; t) (`ancestral_step`):
        x' = x0_hat + (t'^2 / t^2) (x - x0_hat) + t' sqrt(1 - t'^2 / t^2) z,   z ~ N(0, I)
    i.e. a draw from p(x_{t'} | x_t, x0 = x0_hat). Started at x_init = y (a noisy observation
    with noise std sigmas[0]) it samples the posterior of the denoising problem.
    `variance="beta"` replaces the noise std by sqrt(t^2 - t'^2), Ho et al.'s other choice
    (`ancestral_coefficients`): beta-tilde ignores the uncertainty of x0_hat and draws too
    narrow samples at few steps; beta adds more noise per step (the README's sampler table
    compares the two). `clip_denoised=(lo, hi)` clips x0_hat to the box before each step
    (`clip_denoiser`; DDPM's clipped x0 reconstruction, e.g. Diffusion-QL's actions).
    NFE = N. Returns (x, {"nfe", "sigmas"}).
    """
    shape = check_shape(shape)
    s = check_sigmas(sigmas)
    c_mean, c_std = ancestral_coefficients(s, variance)
    denoise_fn = clip_denoiser(denoise_fn, clip_denoised)
    k_init, k_steps = split_key(key, stochastic=True)
    x = initial_state(k_init, shape, s[0], x_init, dtype)

    def step(x, c):
        z, (t, cm, cstd) = c
        x0 = posterior_mean(denoise_fn, x, t)
        return ancestral_step(x, x0, z, cm, cstd), None

    cs = lambda v: host_constant(v, dtype)
    x = scan_with_noise(step, x, (cs(s[:-1]), cs(c_mean), cs(c_std)),
                        lambda i: step_noise(k_steps, i, x), len(s) - 1)
    return x, {"nfe": len(s) - 1, "sigmas": s}


# ============================================================================================
# Reverse-time SDE (Song et al. 2021): Euler-Maruyama and predictor-corrector.
# ============================================================================================
#
# Both take a score function score_fn(x, t) -> grad_x log p_t(x) with x [N, *dims] in the SDE's
# own scaling and t a float [N] of SDE time in [eps, T]. For a denoiser use
# `sde.score_from_denoiser(denoise_fn)` (diffusion/sde.py): (D(x/s; sigma) - x/s) / (s sigma^2).
# The `sde` object needs (float64 numpy on the host): drift_coeff(t) = f(t) of the linear
# drift f(t) x, diffusion(t) = g(t), marginal_mean_coeff(t) = m(t), marginal_std(t) and
# prior_std (diffusion.sde.VPSDE / SubVPSDE / VESDE provide these). The time grid `ts` [N + 1]
# descends from T: Song et al.'s uniform times (`schedules.sde_time_steps`, ending at a small
# eps), or the times of a noise-level grid (`schedules.sde_times_from_sigmas`, e.g. of
# `edm_sigma_steps`), which end at t = 0: the step to t = 0 is the posterior mean
# x0_hat = (x + std(t)^2 score) / m(t) (Tweedie; the sigma samplers' last step to sigma = 0).

def _check_times(ts) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(ts, dtype=np.float64)
    if t.ndim != 1 or t.shape[0] < 2 or np.any(np.diff(t) >= 0) or t[-1] < 0:
        raise ValueError("ts must be a strictly decreasing 1-D grid of at least 2 times >= 0")
    return t, t[:-1] - t[1:]                       # grid, positive step sizes


def _host_coeff(fn, t: np.ndarray) -> np.ndarray:
    return np.asarray(fn(t), np.float64) * np.ones_like(t)


PREDICTORS = ("euler_maruyama", "reverse_diffusion")


def reverse_sde_coefficients(sde, ts, predictor: str = "euler_maruyama"):
    """Host float64 coefficients (a, b, c), each [N], of the reverse-time steps along the SDE
    time grid `ts` [N + 1]: x_mean = a x + b score(x, t_i), x = x_mean + c z.

    "euler_maruyama": Song et al. 2021's Eq. 6 with the coefficients frozen at t_i, for a step
        of length dt = t_i - t_{i+1}: a = 1 - f(t_i) dt, b = g(t_i)^2 dt, c = g(t_i) sqrt(dt).
        b / sigma_i^2 multiplies the denoising direction D - x; it exceeds 2 (the step
        overshoots and diverges) once sigma falls by more than ~2x in one step on a VE SDE.
    "reverse_diffusion": the reverse of the forward chain on the grid (Song et al. 2021,
        App. E, Eq. 45-47): in the coordinates y = x / m(t), where the forward chain is
        y_{i} = y_{i+1} + sqrt(sigma_i^2 - sigma_{i+1}^2) z (sigma = std / m), one step
        y' = y + (sigma_i^2 - sigma_{i+1}^2) grad_y log p + sqrt(sigma_i^2 - sigma_{i+1}^2) z,
        i.e. a = m_{i+1} / m_i, b = m_i m_{i+1} (sigma_i^2 - sigma_{i+1}^2),
        c = m_{i+1} sqrt(sigma_i^2 - sigma_{i+1}^2). The multiplier on D - x is
        1 - sigma_{i+1}^2 / sigma_i^2 < 1 on any grid. For VE (m = 1) this is Song et al.'s
        Eq. 47; for VP its mean coefficient is 1 / sqrt(alpha_i) where Song et al. expand to
        first order, 2 - sqrt(1 - beta_i).

    Either way a step to t_{i+1} = 0 is the posterior mean of x(0) (Tweedie):
    a = 1 / m(t_i), b = std(t_i)^2 / m(t_i), c = 0.
    """
    t, dt = _check_times(ts)
    t_cur = t[:-1]
    if predictor == "euler_maruyama":
        f = _host_coeff(sde.drift_coeff, t_cur)
        g = _host_coeff(sde.diffusion, t_cur)
        a, b, c = 1.0 - f * dt, g ** 2 * dt, g * np.sqrt(dt)
    elif predictor == "reverse_diffusion":
        m = _host_coeff(sde.marginal_mean_coeff, t)
        var = (_host_coeff(sde.marginal_std, t) / m) ** 2          # sigma(t)^2
        dvar = var[:-1] - var[1:]
        a, b, c = m[1:] / m[:-1], m[:-1] * m[1:] * dvar, m[1:] * np.sqrt(dvar)
    else:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    if t[-1] == 0.0:
        m = float(_host_coeff(sde.marginal_mean_coeff, t_cur[-1:])[0])
        std = float(_host_coeff(sde.marginal_std, t_cur[-1:])[0])
        a[-1], b[-1], c[-1] = 1.0 / m, std ** 2 / m, 0.0
    return a, b, c


def langevin_alphas(sde, ts) -> np.ndarray:
    """alpha_i of the Langevin corrector at t_i (Song et al. 2021, Alg. 5), host float64 [N]:
    alpha_i = 1 - beta_i of the discrete chain whose levels are the grid, i.e.
    m(t_{i+1})^2 alpha_i = m(t_i)^2 with m the kernel mean (DDPM's alpha_bar = m^2): for VP
    and sub-VP alpha_i = exp(-int_{t_{i+1}}^{t_i} beta(s) ds), in (0, 1] for every grid (the
    first-order 1 - beta(t_i) dt of Song et al.'s code is negative once beta dt > 1); 1 for
    VE (m = 1)."""
    t, _ = _check_times(ts)
    m = _host_coeff(sde.marginal_mean_coeff, t)
    return (m[:-1] / m[1:]) ** 2


def sample_reverse_sde(key, score_fn: Callable, shape, sde, ts, *, denoise: bool = True,
                       predictor: str = "euler_maruyama", x_init=None, dtype=jnp.float32):
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6):

        dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dw_bar,  from t = ts[0] down to ts[-1],

    Step from t_i (dt = t_i - t_{i+1} > 0):
        x_mean = x - [f(t_i) x - g(t_i)^2 score(x, t_i)] dt,   x = x_mean + g(t_i) sqrt(dt) z,
    and a step to t = 0 (grids from `schedules.sde_times_from_sigmas`) is the posterior mean
    x0_hat = (x + std(t_i)^2 score) / m(t_i). `predictor="reverse_diffusion"` takes Song et
    al.'s reverse-diffusion steps instead, which stay stable where Euler-Maruyama's big steps
    diverge (`reverse_sde_coefficients`). x_T ~ N(0, sde.prior_std^2 I). With `denoise` the
    noise-free mean of the last step is returned (as in Song et al.'s reference sampler).
    Coefficients are host float64.

    score_fn(x, t): t is a float [N] array of SDE times. NFE = N = len(ts) - 1.
    Returns (x, {"nfe", "t"}).
    """
    shape = check_shape(shape)
    t, _ = _check_times(ts)
    num_steps = len(t) - 1
    a, b, c = reverse_sde_coefficients(sde, t, predictor)
    k_init, k_steps = split_key(key, stochastic=True)
    x = initial_state(k_init, shape, float(sde.prior_std), x_init, dtype)

    def step(carry, cf):
        x, _ = carry
        z, (ti, ca, cb, cc) = cf
        score = score_fn(x, noise_levels(ti, x))
        x_mean = ca * x + cb * score
        return (x_mean + cc * z, x_mean), None

    cs = lambda v: host_constant(v, dtype)
    x, x_mean = scan_with_noise(step, (x, x), (cs(t[:-1]), cs(a), cs(b), cs(c)),
                                lambda i: step_noise(k_steps, i, x), num_steps)
    return (x_mean if denoise else x), {"nfe": num_steps, "t": t}


def sample_pc(key, score_fn: Callable, shape, sde, ts, *, snr: float = 0.16,
              n_corrector: int = 1, norm: str = "batch", denoise: bool = True,
              predictor: str = "euler_maruyama", x_init=None, dtype=jnp.float32):
    """Predictor-corrector sampling (Song et al. 2021, Sec. 4.2, Alg. 2-5): `n_corrector`
    Langevin corrector steps and an Euler-Maruyama predictor step (`sample_reverse_sde`'s) at
    each grid time.

    Grid ts[0] = T > ... > ts[N] (eps, or 0 for the times of a sigma grid). At each t_i,
    i = 0 .. N-1 (the order of Song et al.'s reference sampler; the paper's Alg. 2 writes the
    predictor first):
      corrector, M times (Alg. 5):  z ~ N(0, I);  g = score(x, t_i);
                                    e = 2 alpha_i (snr ||z|| / ||g||)^2;
                                    x <- x + e g + sqrt(2 e) z
      predictor t_i -> t_{i+1}:     x_mean = x - [f x - g^2 score] dt,  x = x_mean + g sqrt(dt) z
                                    (the posterior mean when t_{i+1} = 0; `predictor` as in
                                    `sample_reverse_sde`)
    alpha_i = 1 - beta_i of the discrete chain on the grid (`langevin_alphas`: in (0, 1] for
    VP and sub-VP at any step count, 1 for VE). With `denoise` the noise-free mean of the last
    predictor step is returned (ending on a corrector and dropping its noise would shrink
    narrow directions by a factor 1 - e / s^2).

    `norm="batch"` (default, as Song et al.'s reference code): ||z|| and ||g|| are per-sample
    norms averaged over the batch, so one step size serves the batch (samples then depend on
    the batch they are drawn with). `norm="sample"`: Alg. 5 literally, per-sample norms; in
    low dimensions ||g|| is often near 0 (at modes and between them) and the step explodes,
    so use it only for high-dimensional data.

    Keys: grid step i uses fold_in(fold_in(k, 2 i + 1), j) for corrector step j and
    fold_in(k, 2 i) for the predictor. NFE = N (1 + M). Returns (x, {"nfe", "t"}).
    """
    shape = check_shape(shape)
    if norm not in ("batch", "sample"):
        raise ValueError(f"norm must be 'batch' or 'sample', got {norm!r}")
    t, _ = _check_times(ts)
    num_steps = len(t) - 1
    a, b, c = reverse_sde_coefficients(sde, t, predictor)
    alpha = langevin_alphas(sde, t)
    k_init, k_steps = split_key(key, stochastic=True)
    x = initial_state(k_init, shape, float(sde.prior_std), x_init, dtype)
    red = tuple(range(1, len(shape)))

    def langevin(j, x, tv, al, zs):
        z = zs[j]
        g = score_fn(x, tv)
        g_norm = jnp.sqrt(jnp.sum(g * g, axis=red))
        z_norm = jnp.sqrt(jnp.sum(z * z, axis=red))
        if norm == "batch":
            g_norm = jnp.broadcast_to(jnp.mean(g_norm), g_norm.shape)
            z_norm = jnp.broadcast_to(jnp.mean(z_norm), z_norm.shape)
        e = 2.0 * al * jnp.square(snr * z_norm / jnp.maximum(g_norm, 1e-30))
        return x + per_sample(e, x) * g + per_sample(jnp.sqrt(2.0 * e), x) * z

    def noise(i):
        """(corrector noises [M, *shape], predictor noise) of grid step i."""
        key_i = jax.random.fold_in(k_steps, 2 * i + 1)
        corrector = jax.vmap(lambda j: step_noise(key_i, j, x))(
            jnp.arange(n_corrector, dtype=jnp.int32))
        return corrector, step_noise(k_steps, 2 * i, x)

    def step(carry, cf):
        x, _ = carry
        (z_corrector, z), (ti, ca, cb, cc, al) = cf
        tv = noise_levels(ti, x)
        for j in range(n_corrector):         # M is small: unrolled, no loop in the step
            x = langevin(j, x, tv, al, z_corrector)
        x_mean = ca * x + cb * score_fn(x, tv)
        return (x_mean + cc * z, x_mean), None

    cs = lambda v: host_constant(v, dtype)
    x, x_mean = scan_with_noise(step, (x, x), (cs(t[:-1]), cs(a), cs(b), cs(c), cs(alpha)),
                                noise, num_steps)
    return (x_mean if denoise else x), {"nfe": num_steps * (1 + n_corrector), "t": t}


# ============================================================================================
# Discrete-time DDPM / DDIM with an eps-prediction function.
# ============================================================================================
#
# Index convention: `alphas_bar` is a length-T host array, alphas_bar[i] = prod_{s<=i} (1 -
# beta_s) for the paper's t = i + 1 (so index 0 is the least noisy level); eps_fn(x, i) takes the
# VP-scaled x_t [N, *dims] and an int32 [N] index i in [0, T). `timesteps` are descending
# indices (`schedules.ddpm_timesteps`). The level "before" index 0 has alpha_bar = 1 (clean
# data), which is where the last step lands.

def _check_timesteps(alphas_bar, timesteps):
    ab = np.asarray(alphas_bar, dtype=np.float64)
    ts = np.asarray(timesteps, dtype=np.int64)
    if ts.ndim != 1 or np.any(np.diff(ts) >= 0) or ts[-1] < 0 or ts[0] >= len(ab):
        raise ValueError("timesteps must be strictly decreasing indices into alphas_bar")
    ab_t = ab[ts]
    ab_prev = np.concatenate([ab[ts[1:]], [1.0]])
    return ts, ab_t, ab_prev


def sample_ddpm(key, eps_fn: Callable, shape, alphas_bar, timesteps, *,
                variance: str = "beta", clip_denoised=None, x_init=None, dtype=jnp.float32):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) with an eps-prediction eps_fn(x, i).

    x_T ~ N(0, I); for each index t of `timesteps` (descending; every index of alphas_bar for
    the paper's sampler), with alpha = ab_t / ab_prev and beta = 1 - alpha (the sub-sequence's
    effective beta; the usual ones when every index is used):
        x_prev = (x - beta / sqrt(1 - ab_t) eps(x, t)) / sqrt(alpha) + sigma z,
    sigma^2 = beta (`variance="beta"`, Ho et al.'s choice) or beta_tilde = (1 - ab_prev) /
    (1 - ab_t) beta (`"beta_tilde"`); no noise on the last step (z = 0 at t = 1 in Alg. 2).
    `clip_denoised=(lo, hi)`: the mean is the posterior mean of q(x_prev | x_t, x0_hat)
    (Ho et al. Eq. 7) at the clipped reconstruction x0_hat = clip((x - sqrt(1 - ab_t) eps) /
    sqrt(ab_t), lo, hi), as Ho et al.'s and Diffusion-QL's code sample (without the clip it
    is the same mean). Coefficients are host float64. NFE = number of steps.
    Returns (x, {"nfe", "timesteps"}).
    """
    shape = check_shape(shape)
    ts, ab_t, ab_prev = _check_timesteps(alphas_bar, timesteps)
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
    return _ddpm_like(key, eps_fn, shape, ts, c_x, c_eps, np.sqrt(var), x_init, dtype,
                      _clip_table(clip_denoised, ab_t))


def sample_ddim(key, eps_fn: Callable, shape, alphas_bar, timesteps, *, eta: float = 0.0,
                clip_denoised=None, x_init=None, dtype=jnp.float32):
    """DDIM (Song, Meng & Ermon 2021, Eq. 12) with an eps-prediction eps_fn(x, i):

        x_prev = sqrt(ab_prev) (x - sqrt(1 - ab_t) eps) / sqrt(ab_t)
                 + sqrt(1 - ab_prev - sigma_t^2) eps + sigma_t z,
        sigma_t = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)   (Eq. 16).

    eta = 0 is deterministic: in x / sqrt(ab) coordinates it is exactly Euler's method on the
    probability-flow ODE dx/dsigma = (x - D)/sigma on the grid `schedules.ddpm_sigma_steps`;
    eta = 1 is DDPM with the beta-tilde variance. `timesteps` as in `sample_ddpm`;
    x_T ~ N(0, I). `clip_denoised=(lo, hi)`: eps is replaced by the eps of the clipped
    reconstruction, (x - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t), as in `sample_ddpm`.
    NFE = number of steps. Returns (x, {"nfe", "timesteps"}).
    """
    shape = check_shape(shape)
    ts, ab_t, ab_prev = _check_timesteps(alphas_bar, timesteps)
    sig = eta * np.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * np.sqrt(1.0 - ab_t / ab_prev)
    c_x = np.sqrt(ab_prev / ab_t)
    c_dir = np.sqrt(np.maximum(1.0 - ab_prev - sig ** 2, 0.0))
    c_eps = c_dir - np.sqrt(ab_prev) * np.sqrt(1.0 - ab_t) / np.sqrt(ab_t)
    return _ddpm_like(key, eps_fn, shape, ts, c_x, c_eps, sig, x_init, dtype,
                      _clip_table(clip_denoised, ab_t))


def _clip_table(clip_denoised, ab_t):
    """None, or ((lo, hi), the host tables sqrt(ab_t) and sqrt(1 - ab_t) [N]) for the clipped
    reconstruction of `_ddpm_like`."""
    if clip_denoised is None:
        return None
    return _clip_bounds(clip_denoised), (np.sqrt(ab_t), np.sqrt(1.0 - ab_t))


def _ddpm_like(key, eps_fn, shape, ts, c_x, c_eps, c_z, x_init, dtype, clip=None):
    """x <- c_x x + c_eps eps(x, t) + c_z z over the index sequence ts (one lax.scan); with
    `clip` (`_clip_table`), eps is first replaced by the eps of the clipped x0 estimate."""
    noisy = bool(np.any(np.asarray(c_z) > 0))
    k_init, k_steps = split_key(key, stochastic=noisy)
    x = initial_state(k_init, shape, 1.0, x_init, dtype)

    at_index = getattr(eps_fn, "at_index", None)
    cs = lambda v: host_constant(v, dtype)

    def mean(x, t, a, b, *root_ab):
        eps = at_index(x, t) if at_index else eps_fn(x, jnp.broadcast_to(t, (x.shape[0],)))
        if root_ab:                               # sqrt(ab_t), sqrt(1 - ab_t)
            sab, s1m = root_ab
            x0 = jnp.clip((x - s1m * eps) / sab, *clip[0])
            eps = (x - sab * x0) / s1m
        return a * x + b * eps

    n = len(ts)
    coeffs = (jnp.asarray(ts, jnp.int32), cs(c_x), cs(c_eps))
    if clip is not None:
        coeffs += tuple(cs(v) for v in clip[1])
    if not noisy:                       # DDIM eta = 0: deterministic, no draws
        x, _ = lax.scan(lambda x, c: (mean(x, *c), None), x, coeffs)
    else:
        def step(x, c):
            z, (s, c_mean) = c
            return mean(x, *c_mean) + s * z, None

        x = scan_with_noise(step, x, (cs(c_z), coeffs), lambda i: step_noise(k_steps, i, x), n)
    return x, {"nfe": n, "timesteps": ts}
