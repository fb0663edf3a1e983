"""Linear forward SDEs of Song et al. 2021 and their EDM view (Karras et al. 2022, Table 1).

Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021 (Sec. 3.4, Eqs. 9-11; Appendix B, Eqs. 29-34):

    dx = f(t) x dt + g(t) dw,                    t in [0, T], T = 1        (linear drift)

    VP     (Eq. 11): f = -beta(t)/2,  g = sqrt(beta(t)),
                     beta(t) = beta_min + t (beta_max - beta_min)
    sub-VP (3.4):    f = -beta(t)/2,  g = sqrt(beta(t) (1 - exp(-2 B(t)))),
                     B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2
    VE     (Eq. 9):  f = 0,           g = sigma(t) sqrt(2 ln(sigma_max / sigma_min)),
                     sigma(t) = sigma_min (sigma_max / sigma_min)^t    (so g^2 = d sigma(t)^2 / dt)

Perturbation kernels p_0t(x(t) | x(0)) = N(m(t) x(0), std(t)^2 I) (Appendix B):

    VP:     m = exp(-B/2),  std^2 = 1 - exp(-B)
    sub-VP: m = exp(-B/2),  std   = 1 - exp(-B)
    VE:     m = 1,          std^2 = sigma(t)^2 - sigma(0)^2
                                   = sigma_min^2 ((sigma_max / sigma_min)^(2t) - 1)

The VE kernel is the EXACT solution of the SDE started at x(0) at t = 0. Song's reference code
and the SMLD view use the approximation std(t) = sigma(t) (negligible once sigma(t) >> sigma_min);
`VESDE.smld_sigma(t)` gives that sigma(t).

Priors: N(0, I) for VP and sub-VP, N(0, sigma_max^2 I) for VE.

EDM view (Karras et al. 2022, Eq. 4 and Table 1): x(t) = s(t) (x0 + sigma(t) n), n ~ N(0, I), so

    s(t) = m(t)   (`edm_scale`),      sigma(t) = std(t) / m(t)   (`edm_sigma`),

and a denoiser D(x; sigma) ~ E[x0 | x0 + sigma n = x] gives the score of p_t as
    grad log p_t(x) = (D(x / s; sigma) - x / s) / (s sigma^2)        (`score_from_denoiser`).
For VP this is Table 1's sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), s(t) =
1 / sqrt(exp(beta_d t^2 / 2 + beta_min t)) with beta_d = beta_max - beta_min (`edm_vp_sigma`,
`edm_vp_scale`). For VE, Table 1 writes sigma(t) = sqrt(t) with its OWN time variable: EDM's VE
"t" is the variance sigma^2 (time steps t_i = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i/(N-1))),
not Song's t in [0, 1]; `edm_ve_sigma` / `edm_ve_sigma_inv` implement that convention, while
`VESDE.edm_sigma(t)` takes Song's t.

Reverse-time SDE (Eq. 6) and probability-flow ODE (Eq. 13), written as the drift of dx/dt in
forward time (integrate them from t = T down to t = eps, dt < 0):

    reverse SDE:  dx = [f(t) x - g(t)^2 score] dt + g(t) dw_bar     (`reverse_drift`)
    PF ODE:       dx = [f(t) x - g(t)^2 score / 2] dt                (`ode_drift`)

Dtypes: the coefficient functions (`marginal_*`, `edm_*`, `t_of_sigma`, `diffusion`,
`drift_coeff`) evaluate in float64 numpy when given Python floats or numpy arrays (for building
schedules on the host), and in jax otherwise (inside jit they see tracers). Functions that take
data `x` return x's dtype. `t` is a scalar or a per-sample vector [N] broadcast over x [N, ...].

`eps` is the smallest training time, EDM's eps_t = 1e-5 (Song et al. train on U(1e-5, 1) too);
samplers choose their own end time (EDM's VP eps_s = 1e-3).

Fields are static (`pytree_node=False`): an SDE is a hashable, jit-friendly constant whose
parameters are Python floats, so host code can build float64 schedules from them.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


def _xp(*values):
    """numpy (float64 on the host) if every value is a Python/numpy number, else jax.numpy."""
    if all(isinstance(v, (int, float, np.ndarray, np.generic)) for v in values):
        return np
    return jnp


def _host(v):
    """Python ints/floats -> float64 numpy so host math stays in float64."""
    return np.float64(v) if isinstance(v, (int, float)) else v


def _bcast(c, x):
    """A scalar or per-sample [N] coefficient, shaped to broadcast over x [N, ...], in x's dtype."""
    c = jnp.asarray(c, dtype=x.dtype)
    if c.ndim == 1:
        c = c.reshape(c.shape + (1,) * (x.ndim - 1))
    return c


# --------------------------------------------------------------------------------------------
# EDM Table 1 schedules in EDM's own time variables.
# --------------------------------------------------------------------------------------------

def edm_vp_sigma(t, beta_d: float = 19.9, beta_min: float = 0.1):
    """EDM Table 1, VP: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    t = _host(t)
    xp = _xp(t)
    return xp.sqrt(xp.expm1(0.5 * beta_d * t ** 2 + beta_min * t))


def edm_vp_scale(t, beta_d: float = 19.9, beta_min: float = 0.1):
    """EDM Table 1, VP: s(t) = 1 / sqrt(exp(beta_d t^2 / 2 + beta_min t))."""
    t = _host(t)
    xp = _xp(t)
    return xp.exp(-0.5 * (0.5 * beta_d * t ** 2 + beta_min * t))


def edm_vp_sigma_inv(sigma, beta_d: float = 19.9, beta_min: float = 0.1):
    """Inverse of `edm_vp_sigma` (Table 1's sigma^{-1}, used by the VP c_noise):
    t = (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d."""
    sigma = _host(sigma)
    return _solve_integral_beta(_xp(sigma).log1p(sigma ** 2), beta_d, beta_min)


def _solve_integral_beta(b, beta_d, beta_min):
    """The t >= 0 with beta_min t + beta_d t^2 / 2 = b, written as 2b / (beta_min + sqrt(beta_min^2
    + 2 beta_d b)) (equal to (sqrt(.) - beta_min) / beta_d, without its cancellation at small b)."""
    return 2.0 * b / (beta_min + _xp(b).sqrt(beta_min ** 2 + 2.0 * beta_d * b))


def edm_ve_sigma(t):
    """EDM Table 1, VE: sigma(t) = sqrt(t), where EDM's VE time t is the noise VARIANCE."""
    t = _host(t)
    return _xp(t).sqrt(t)


def edm_ve_sigma_inv(sigma):
    """Inverse of `edm_ve_sigma`: t = sigma^2 (EDM's VE time; s(t) = 1)."""
    return _host(sigma) ** 2


# --------------------------------------------------------------------------------------------
# The SDEs.
# --------------------------------------------------------------------------------------------

class _LinearSDE:
    """Shared methods; subclasses define drift_coeff, diffusion, marginal_mean_coeff,
    marginal_std, t_of_sigma and prior_std."""

    T: float
    eps: float

    # ---- forward SDE -------------------------------------------------------------------
    def drift(self, x: Array, t) -> Array:
        """f(x, t) = f(t) x, the forward drift; x [N, ...], t scalar or [N]."""
        return _bcast(self.drift_coeff(t), x) * x

    # ---- marginals ---------------------------------------------------------------------
    def marginal(self, x0: Array, t) -> tuple[Array, Array]:
        """(mean, std) of p_0t(x(t) | x0): mean [N, ...], std broadcastable to x0."""
        return _bcast(self.marginal_mean_coeff(t), x0) * x0, _bcast(self.marginal_std(t), x0)

    def perturb(self, x0: Array, t, noise: Array) -> Array:
        """x(t) = m(t) x0 + std(t) noise: a draw from p_0t given standard normal `noise`."""
        mean, std = self.marginal(x0, t)
        return mean + std * noise

    # ---- prior -------------------------------------------------------------------------
    def prior_sample(self, key, shape) -> Array:
        """z ~ p_T = N(0, prior_std^2 I), float32 of the given shape."""
        return self.prior_std * jax.random.normal(key, shape, jnp.float32)

    def prior_logp(self, z: Array) -> Array:
        """log N(z; 0, prior_std^2 I) per sample: z [N, ...] -> [N]."""
        d = math.prod(z.shape[1:])
        sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
        return (-0.5 * d * math.log(2.0 * math.pi * self.prior_std ** 2)
                - 0.5 * sq / self.prior_std ** 2)

    # ---- EDM view ----------------------------------------------------------------------
    def edm_scale(self, t):
        """s(t) of EDM Eq. 4: x(t) = s(t) (x0 + sigma(t) n); equals the kernel mean coefficient."""
        return self.marginal_mean_coeff(t)

    def edm_sigma(self, t):
        """sigma(t) of EDM Eq. 4: the noise level of x(t) / s(t), i.e. std(t) / m(t)."""
        return self.marginal_std(t) / self.marginal_mean_coeff(t)

    # ---- reverse processes given a score -----------------------------------------------
    def reverse_drift(self, x: Array, t, score: Array) -> Array:
        """Reverse-time SDE drift f(t) x - g(t)^2 score (Song Eq. 6), as dx/dt in forward time."""
        return self.drift(x, t) - _bcast(self.diffusion(t) ** 2, x) * score

    def ode_drift(self, x: Array, t, score: Array) -> Array:
        """Probability-flow ODE drift f(t) x - g(t)^2 score / 2 (Song Eq. 13)."""
        return self.drift(x, t) - 0.5 * _bcast(self.diffusion(t) ** 2, x) * score

    def score_from_denoiser(self, denoise_fn: Callable) -> Callable:
        """score_fn(x, t) = grad log p_t(x) from a denoiser D(x; sigma) in the EDM view:
        (D(x/s; sigma) - x/s) / (s sigma^2) with s = s(t), sigma = sigma(t); t scalar or [N]."""

        def score_fn(x, t):
            n = x.shape[0]
            t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
            s, sigma = self.edm_scale(t), self.edm_sigma(t)
            y = x / _bcast(s, x)
            d = denoise_fn(y, sigma)
            return (d - y) / _bcast(s * sigma ** 2, x)

        return score_fn


@struct.dataclass
class VPSDE(_LinearSDE):
    """Variance-preserving SDE (Song Eq. 11; continuous DDPM). Prior N(0, I)."""

    beta_min: float = struct.field(pytree_node=False, default=0.1)
    beta_max: float = struct.field(pytree_node=False, default=20.0)
    T: float = struct.field(pytree_node=False, default=1.0)
    eps: float = struct.field(pytree_node=False, default=1e-5)

    prior_std = 1.0

    @property
    def beta_d(self) -> float:
        """EDM's beta_d = beta_max - beta_min."""
        return self.beta_max - self.beta_min

    def beta(self, t):
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + _host(t) * self.beta_d

    def integral_beta(self, t):
        """B(t) = int_0^t beta(s) ds = beta_min t + beta_d t^2 / 2."""
        t = _host(t)
        return self.beta_min * t + 0.5 * self.beta_d * t ** 2

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        """g(t) = sqrt(beta(t))."""
        return _xp(_host(t)).sqrt(self.beta(t))

    def marginal_mean_coeff(self, t):
        """m(t) = exp(-B(t) / 2)."""
        b = self.integral_beta(t)
        return _xp(b).exp(-0.5 * b)

    def marginal_std(self, t):
        """std(t) = sqrt(1 - exp(-B(t)))."""
        b = self.integral_beta(t)
        xp = _xp(b)
        return xp.sqrt(-xp.expm1(-b))

    def edm_sigma(self, t):
        """sigma(t) = sqrt(exp(B(t)) - 1) (= `edm_vp_sigma(t, beta_d, beta_min)`)."""
        b = self.integral_beta(t)
        xp = _xp(b)
        return xp.sqrt(xp.expm1(b))

    def t_of_sigma(self, sigma):
        """The time t with edm_sigma(t) = sigma (= `edm_vp_sigma_inv`)."""
        return edm_vp_sigma_inv(sigma, self.beta_d, self.beta_min)


@struct.dataclass
class SubVPSDE(VPSDE):
    """sub-VP SDE (Song Sec. 3.4): same beta(t), drift and mean as VP, std = 1 - exp(-B(t)) <= VP
    std. Prior N(0, I). Only the diffusion, the std and the EDM sigma differ from `VPSDE`."""

    def diffusion(self, t):
        """g(t) = sqrt(beta(t) (1 - exp(-2 B(t))))."""
        b = self.integral_beta(t)
        xp = _xp(b)
        return xp.sqrt(self.beta(t) * -xp.expm1(-2.0 * b))

    def marginal_std(self, t):
        """std(t) = 1 - exp(-B(t))."""
        b = self.integral_beta(t)
        return -_xp(b).expm1(-b)

    def edm_sigma(self, t):
        """sigma(t) = (1 - exp(-B)) exp(B/2) = 2 sinh(B(t) / 2)."""
        b = self.integral_beta(t)
        return 2.0 * _xp(b).sinh(0.5 * b)

    def t_of_sigma(self, sigma):
        """Inverse of `edm_sigma`: B = 2 asinh(sigma / 2), then beta_d t^2 / 2 + beta_min t = B."""
        sigma = _host(sigma)
        xp = _xp(sigma)
        return _solve_integral_beta(2.0 * xp.arcsinh(0.5 * sigma), self.beta_d, self.beta_min)


@struct.dataclass
class VESDE(_LinearSDE):
    """Variance-exploding SDE (Song Eq. 9; continuous SMLD/NCSN). Prior N(0, sigma_max^2 I).

    Defaults sigma_min = 0.01, sigma_max = 50 are for the 2-D toys (data scale ~1: Song & Ermon
    2020's rule takes sigma_max about the largest pairwise data distance; 50 is generous). Song et
    al. use sigma_min = 0.01, sigma_max = 50 for CIFAR-10 as well; EDM Table 1 trains VE with
    sigma in [0.02, 100].
    """

    sigma_min: float = struct.field(pytree_node=False, default=0.01)
    sigma_max: float = struct.field(pytree_node=False, default=50.0)
    T: float = struct.field(pytree_node=False, default=1.0)
    eps: float = struct.field(pytree_node=False, default=1e-5)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def smld_sigma(self, t):
        """Song's sigma(t) = sigma_min (sigma_max / sigma_min)^t (the SMLD noise scale)."""
        t = _host(t)
        return self.sigma_min * _xp(t).exp(t * self._log_ratio)

    def drift_coeff(self, t):
        t = _host(t)
        return 0.0 * t

    def diffusion(self, t):
        """g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min)) = sqrt(d sigma(t)^2 / dt)."""
        return self.smld_sigma(t) * math.sqrt(2.0 * self._log_ratio)

    def marginal_mean_coeff(self, t):
        t = _host(t)
        return _xp(t).ones_like(t)

    def marginal_std(self, t):
        """std(t) = sqrt(sigma(t)^2 - sigma_min^2) (exact kernel of the SDE started at t = 0)."""
        t = _host(t)
        xp = _xp(t)
        return self.sigma_min * xp.sqrt(xp.expm1(2.0 * self._log_ratio * t))

    def edm_sigma(self, t):
        return self.marginal_std(t)

    def t_of_sigma(self, sigma):
        """Inverse of `edm_sigma`: t = ln(1 + (sigma/sigma_min)^2) / (2 ln(sigma_max/sigma_min))."""
        sigma = _host(sigma)
        return _xp(sigma).log1p((sigma / self.sigma_min) ** 2) / (2.0 * self._log_ratio)


SDE = VPSDE | SubVPSDE | VESDE

SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def get_sde(name: str, **params) -> SDE:
    """An SDE by name ('vp', 'subvp', 've') with optional field overrides."""
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; valid choices: {', '.join(SDES)}")
    return SDES[name](**params)
