"""Samplers against the exact Gaussian-mixture denoiser (no training).

The mixture, its exact denoiser and the sliced Wasserstein metric come from diffusion/data.py.
Numbers quoted in comments were measured on the CPU of the development machine (jax 0.10.2).
"""
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from diffusion import data
from diffusion import samplers as S
from diffusion import schedules as SC
from diffusion import sde as sdes
from diffusion.ode import solve_rk45

# A 2-D mixture with unequal weights and widths (stds 0.1 .. 0.3, data scale ~1).
MIX = data.make_gmm([[-1.0, -0.5], [1.0, 0.5], [0.0, 1.2], [0.8, -1.0]],
                    [0.15, 0.3, 0.1, 0.25], [0.3, 0.3, 0.2, 0.2])
D = MIX.denoise
SHAPE = (256, 2)
AB = SC.ddpm_schedule(1000).alphas_bar
VP = sdes.VPSDE()
VE = sdes.VESDE()
VE_EDM = sdes.VESDE(0.002, 80.0)          # the EDM model's view: sigma in [0.002, 80]
E = SC.edm_sigma_steps
TS = SC.ddpm_timesteps
SDE_T = SC.sde_time_steps
K0 = jax.random.key(0)


def rms(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)))


def test_exact_denoiser_is_tweedie():
    """Precondition: the test denoiser is exact, (D - x) / sigma^2 = grad log p_sigma (EDM
    Eq. 3), the gradient taken by autodiff of the closed-form noised log-density."""
    x = 2.0 * jax.random.normal(jax.random.key(0), (64, 2))

    @jax.jit
    def both(s):
        auto = jax.grad(lambda y: jnp.sum(MIX.log_density(y, s)))(x)
        return (D(x, s) - x) / s[:, None] ** 2, auto

    for sigma in (0.01, 0.3, 5.0):
        tweedie, auto = both(jnp.full((64,), sigma))
        np.testing.assert_allclose(tweedie, auto, rtol=1e-3, atol=1e-3)  # float32, 1/sigma^2


# ---------------------------------------------------------------------------------------------
# Schedules.
# ---------------------------------------------------------------------------------------------

def test_edm_sigma_steps_eq5():
    s = SC.edm_sigma_steps(18, 0.002, 80.0, 7.0)
    assert s.dtype == np.float64 and s.shape == (19,)
    # Eq. 5 written as an interpolation in sigma^(1/rho) space.
    w = np.arange(18) / 17.0
    ref = ((1 - w) * 80.0 ** (1 / 7) + w * 0.002 ** (1 / 7)) ** 7
    np.testing.assert_allclose(s[:-1], ref, rtol=1e-13)
    assert s[0] == 80.0 and abs(s[17] - 0.002) < 1e-15 and s[18] == 0.0
    assert np.all(np.diff(s) < 0)
    np.testing.assert_array_equal(SC.edm_sigma_steps(1, 0.002, 80.0), [80.0, 0.0])


def test_vp_ve_flow_and_ddpm_sigma_steps():
    """EDM Table 1's VP and VE time steps, the flow-matching uniform-t grid and DDPM's levels:
    descending grids ending at 0 with the papers' end points."""
    vp = SC.vp_sigma_steps(10)
    t = 1.0 + np.arange(10) / 9.0 * (1e-3 - 1.0)
    np.testing.assert_allclose(vp[:-1], np.sqrt(np.expm1(0.5 * 19.9 * t ** 2 + 0.1 * t)),
                               rtol=1e-12)
    ve = SC.ve_sigma_steps(10, 0.02, 100.0)
    np.testing.assert_allclose(ve[:-1], 100.0 * (0.02 / 100.0) ** (np.arange(10) / 9.0),
                               rtol=1e-12)
    fl = SC.flow_sigma_steps(8, 80.0)
    np.testing.assert_allclose(fl / (1.0 + fl), (80.0 / 81.0) * (1.0 - np.arange(9) / 8.0),
                               rtol=1e-12, atol=1e-15)
    ab = SC.ddpm_schedule(1000).alphas_bar
    dd = SC.ddpm_sigma_steps(ab, SC.ddpm_timesteps(1000, 10))
    np.testing.assert_allclose(dd[[0, -2]], np.sqrt((1 - ab[[999, 0]]) / ab[[999, 0]]))
    for grid in (vp, ve, fl, dd):
        assert grid.dtype == np.float64 and grid[-1] == 0.0 and np.all(np.diff(grid) < 0)
    np.testing.assert_array_equal(SC.sde_time_steps(4, 1.0, 1e-3),
                                  np.linspace(1.0, 1e-3, 5))


def test_churn_levels_host_float64():
    """Alg. 2's gamma_i, t_hat and noise std on the host: exactly 0 noise without churn, and
    gamma = min(S_churn / N, sqrt 2 - 1) only inside [S_tmin, S_tmax]."""
    t = SC.edm_sigma_steps(10)
    gamma, t_hat, std = S.churn_levels(t, 0.0, 0.0, float("inf"), 1.0)
    assert np.all(std == 0.0) and np.all(t_hat == t[:-1]) and np.all(gamma == 0.0)
    gamma, t_hat, std = S.churn_levels(t, 40.0, 0.05, 50.0, 1.003)
    inside = (t[:-1] >= 0.05) & (t[:-1] <= 50.0)
    np.testing.assert_array_equal(gamma, np.where(inside, math.sqrt(2) - 1, 0.0))
    np.testing.assert_allclose(std, 1.003 * t[:-1] * np.sqrt((1 + gamma) ** 2 - 1), rtol=1e-14)


def test_logsnr_and_time_uniform_grids():
    """DPM-Solver's grids (Lu et al. 2022): uniform in lambda = -log sigma (geometric in sigma)
    and uniform in the linear-beta VP time; `vp_sigma_steps` is the time-uniform grid on
    [sigma_VP(1e-3), sigma_VP(1)]; `sigma_grid` picks them by name."""
    g = SC.logsnr_sigma_steps(6, 0.002, 80.0)
    np.testing.assert_allclose(np.diff(np.log(g[:-1])), np.log(0.002 / 80.0) / 5, rtol=1e-12)
    assert g[0] == 80.0 and abs(g[5] - 0.002) < 1e-15 and g[6] == 0.0
    tu = SC.time_uniform_sigma_steps(7, 0.002, 80.0)
    t = sdes.edm_vp_sigma_inv(tu[:-1], 19.9, 0.1)
    np.testing.assert_allclose(np.diff(t), (t[-1] - t[0]) / 6, rtol=1e-9)
    assert tu[0] == 80.0 and tu[6] == 0.002 and tu[7] == 0.0
    lo, hi = sdes.edm_vp_sigma(1e-3), sdes.edm_vp_sigma(1.0)
    np.testing.assert_allclose(SC.time_uniform_sigma_steps(9, lo, hi), SC.vp_sigma_steps(9),
                               rtol=1e-12)
    np.testing.assert_array_equal(SC.sigma_grid("edm", 9, 0.002, 80.0, 7.0), E(9))
    np.testing.assert_array_equal(SC.sigma_grid("logsnr", 6, 0.002, 80.0), g)
    with pytest.raises(ValueError, match="valid choices"):
        SC.sigma_grid("karras", 9, 0.002, 80.0)


@pytest.mark.parametrize("sde", [sdes.VPSDE(), sdes.SubVPSDE(), sdes.VESDE(0.002, 80.0)],
                         ids=["vp", "subvp", "ve"])
def test_sde_times_from_sigmas(sde):
    """The SDE times of a sigma grid have exactly those noise levels (edm_sigma(t_i) = sigma_i)
    and the final level 0 becomes t = 0."""
    sigmas = SC.edm_sigma_steps(12, float(sde.edm_sigma(1e-3)), float(sde.edm_sigma(1.0)))
    ts = SC.sde_times_from_sigmas(sde, sigmas)
    assert ts[-1] == 0.0 and np.all(np.diff(ts) < 0)
    np.testing.assert_allclose(sde.edm_sigma(ts[:-1]), sigmas[:-1], rtol=1e-9)


def test_ddpm_schedule_and_timesteps():
    ab = SC.ddpm_schedule(1000).alphas_bar
    betas = 1e-4 + (0.02 - 1e-4) * np.arange(1000) / 999
    np.testing.assert_allclose(ab, np.exp(np.cumsum(np.log1p(-betas))), rtol=1e-12)
    ts = SC.ddpm_timesteps(1000, 10)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 10 and np.all(np.diff(ts) < 0)
    np.testing.assert_array_equal(SC.ddpm_timesteps(5, 5), [4, 3, 2, 1, 0])


# ---------------------------------------------------------------------------------------------
# Independent references: the papers' algorithms as plain Python loops in float64.
# ---------------------------------------------------------------------------------------------

_D_JIT = jax.jit(D)


def _np_denoise(x, sigma):
    return np.asarray(_D_JIT(jnp.asarray(x, jnp.float32),
                             jnp.full((x.shape[0],), sigma, jnp.float32)), np.float64)


def _loop_heun(x, t_steps, euler_only=False):
    """EDM Alg. 1 literally (s = 1, sigma = t), float64 state."""
    for i in range(len(t_steps) - 1):
        t, tn = t_steps[i], t_steps[i + 1]
        d = (x - _np_denoise(x, t)) / t
        x_new = x + (tn - t) * d
        if tn != 0 and not euler_only:
            d2 = (x_new - _np_denoise(x_new, tn)) / tn
            x_new = x + (tn - t) * (0.5 * d + 0.5 * d2)
        x = x_new
    return x


def _loop_dpmpp_2m(x, t):
    """Lu et al. 2022 Alg. 2 (DPM-Solver++(2M)) with alpha = 1, sigma = t, lambda = -log t."""
    lam = lambda s: -np.log(s)
    d_old = None
    for i in range(len(t) - 1):
        d = _np_denoise(x, t[i])
        if t[i + 1] == 0:                           # lower-order final step
            x = d
            break
        h = lam(t[i + 1]) - lam(t[i])
        if d_old is None:
            dd = d
        else:
            r = (lam(t[i]) - lam(t[i - 1])) / h
            dd = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_old
        x = (t[i + 1] / t[i]) * x - (np.exp(-h) - 1) * dd
        d_old = d
    return x


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_samplers_match_plain_loops(name):
    n0 = jax.random.normal(jax.random.key(1), (64, 2))
    t = SC.edm_sigma_steps(12)
    x0 = 80.0 * np.asarray(n0, np.float64)
    fn = {"euler": S.sample_euler, "heun": S.sample_heun, "dpmpp_2m": S.sample_dpmpp_2m}[name]
    x, info = jax.jit(lambda: fn(None, D, (64, 2), t, x_init=80.0 * n0))()
    ref = (_loop_dpmpp_2m(x0, t) if name == "dpmpp_2m"
           else _loop_heun(x0, t, euler_only=name == "euler"))
    np.testing.assert_allclose(x, ref, atol=2e-4)
    assert info["nfe"] == {"euler": 12, "heun": 23, "dpmpp_2m": 12}[name]


# ---------------------------------------------------------------------------------------------
# Reverse-SDE steps and the Langevin corrector's alpha (host float64).
# ---------------------------------------------------------------------------------------------

def test_reverse_sde_coefficients():
    """Euler-Maruyama (Song et al. 2021, Eq. 6) and the reverse-diffusion step (App. E) agree
    to first order in dt; on a coarse VE grid Euler-Maruyama's multiplier b / sigma^2 on
    D - x exceeds 2 (it overshoots and diverges) while the reverse-diffusion one is
    1 - sigma_{i+1}^2 / sigma_i^2 < 1; a step to t = 0 is Tweedie's posterior mean."""
    for sde in (VP, VE_EDM):
        fine = SDE_T(4000)
        em = np.stack(S.reverse_sde_coefficients(sde, fine))
        rd = np.stack(S.reverse_sde_coefficients(sde, fine, "reverse_diffusion"))
        np.testing.assert_allclose(rd[:2, 1:], em[:2, 1:], rtol=2e-2)     # a, b: O(dt)
        np.testing.assert_allclose(rd[2, 1:], em[2, 1:], rtol=2e-2)
        ts = SC.sde_times_from_sigmas(sde, E(6, float(sde.edm_sigma(1e-3)),
                                             float(sde.edm_sigma(1.0))))
        for predictor in S.PREDICTORS:
            a, b, c = S.reverse_sde_coefficients(sde, ts, predictor)
            m, std = sde.marginal_mean_coeff(ts[-2]), sde.marginal_std(ts[-2])
            np.testing.assert_allclose([a[-1], b[-1], c[-1]], [1 / m, std ** 2 / m, 0.0],
                                       rtol=1e-12)
    ts = SDE_T(10)
    sig2 = VE_EDM.marginal_std(ts) ** 2
    _, b_em, _ = S.reverse_sde_coefficients(VE_EDM, ts)
    _, b_rd, _ = S.reverse_sde_coefficients(VE_EDM, ts, "reverse_diffusion")
    assert np.all(b_em / sig2[:-1] > 2.0)
    np.testing.assert_allclose(b_rd / sig2[:-1], 1.0 - sig2[1:] / sig2[:-1], rtol=1e-12)
    with pytest.raises(ValueError, match="predictor"):
        S.reverse_sde_coefficients(VE_EDM, ts, "heun")


def test_langevin_alphas():
    """alpha_i = m(t_i)^2 / m(t_{i+1})^2 = exp(-int beta) of the chain on the grid: in (0, 1]
    at every step count (1 - beta(t_i) dt is negative for beta_max dt > 1, i.e. N < 20 on
    [1e-3, 1]), equal to it to first order on a fine grid, and 1 for VE."""
    for n in (2, 5, 10, 17, 50):
        alpha = S.langevin_alphas(VP, SDE_T(n))
        assert np.all((alpha > 0) & (alpha <= 1)), (n, alpha)
    assert np.any(1.0 - VP.beta(SDE_T(17)[:-1]) * np.diff(-SDE_T(17)) < 0)
    t = SDE_T(2000)
    np.testing.assert_allclose(S.langevin_alphas(VP, t), 1.0 - VP.beta(t[:-1]) * -np.diff(t),
                               atol=1e-4)
    np.testing.assert_array_equal(S.langevin_alphas(VE, SDE_T(7)), np.ones(7))


def test_reverse_diffusion_on_ve_is_ancestral_beta():
    """On the VE SDE the reverse-diffusion step between sigma_i and sigma_{i+1} is the
    sigma-space ancestral step with the beta variance: the same grid and key give the same
    samples (float32 rounding apart)."""
    sigmas = E(10)
    ts = SC.sde_times_from_sigmas(VE_EDM, sigmas)
    a, b = jax.jit(lambda k: (
        S.sample_reverse_sde(k, VE_EDM.score_from_denoiser(D), SHAPE, VE_EDM, ts,
                             predictor="reverse_diffusion")[0],
        S.sample_ancestral(k, D, SHAPE, sigmas, variance="beta")[0]))(K0)
    np.testing.assert_allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Exact NFE counts and step-count-independent programs.
# ---------------------------------------------------------------------------------------------

def _counting(fn):
    calls = []

    def wrapped(x, t):
        jax.debug.callback(lambda _: calls.append(1), t[0])
        return fn(x, t)

    return wrapped, calls


SAMPLERS = {
    "euler": lambda f, n: S.sample_euler(K0, f, (8, 2), E(n)),
    "heun": lambda f, n: S.sample_heun(K0, f, (8, 2), E(n)),
    "edm_stochastic": lambda f, n: S.sample_edm_stochastic(K0, f, (8, 2), E(n), s_churn=10.0),
    "dpmpp_2m": lambda f, n: S.sample_dpmpp_2m(K0, f, (8, 2), E(n)),
    "ancestral": lambda f, n: S.sample_ancestral(K0, f, (8, 2), E(n)),
    "reverse_sde": lambda f, n: S.sample_reverse_sde(K0, VP.score_from_denoiser(f), (8, 2), VP,
                                                     SDE_T(n)),
    "reverse_sde_sigma_grid": lambda f, n: S.sample_reverse_sde(
        K0, VE_EDM.score_from_denoiser(f), (8, 2), VE_EDM,
        SC.sde_times_from_sigmas(VE_EDM, E(n)), predictor="reverse_diffusion"),
    "pc": lambda f, n: S.sample_pc(K0, VE.score_from_denoiser(f), (8, 2), VE, SDE_T(n),
                                   n_corrector=2),
    "ddpm": lambda f, n: S.sample_ddpm(K0, S.eps_from_denoiser(f, AB), (8, 2), AB, TS(1000, n)),
    "ddim": lambda f, n: S.sample_ddim(K0, S.eps_from_denoiser(f, AB), (8, 2), AB, TS(1000, n),
                                       eta=0.5),
}


def _count_eqns(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for v in eqn.params.values():
            for u in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(u, jcore.ClosedJaxpr):
                    total += _count_eqns(u.jaxpr)
                elif isinstance(u, jcore.Jaxpr):
                    total += _count_eqns(u)
    return total


EXPECTED_NFE = {"euler": lambda n: n, "heun": lambda n: 2 * n - 1,
                "edm_stochastic": lambda n: 2 * n - 1, "dpmpp_2m": lambda n: n,
                "ancestral": lambda n: n, "reverse_sde": lambda n: n,
                "reverse_sde_sigma_grid": lambda n: n, "pc": lambda n: 3 * n,
                "ddpm": lambda n: n, "ddim": lambda n: n}


def _inlined_hlo_ops(text: str) -> int:
    """Operations of a StableHLO module with every private function inlined at its calls
    (function bodies shared between calls of the same shapes count at each call)."""
    bodies, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*func\.func (?:public |private )?@([\w.]+)", line)
        if m:
            name = m.group(1)
            bodies[name] = []
        elif name and "=" in line:
            bodies[name].append(line)

    @functools.lru_cache(maxsize=None)
    def size(fn):
        total = 0
        for line in bodies[fn]:
            call = re.search(r"func\.call @([\w.]+)", line)
            total += size(call.group(1)) if call else 1
        return total

    return size("main")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_program_size_independent_of_steps(name):
    """10 and 100 steps trace to jaxprs with the same number of equations (sub-jaxprs
    included) and lower to StableHLO with the same number of operations (private functions
    inlined); only the per-step constant arrays differ. So compile time does not grow with
    the step count. info["nfe"]
    is the paper's count (PC with M = 2 corrector steps: 3N; the counted calls of every
    sampler are checked in `test_quality_at_10_20_35_nfe`)."""
    sizes, nfes = [], []

    def fn(n):
        x, info = SAMPLERS[name](D, n)
        nfes.append(info["nfe"])
        return x

    for n in (10, 100):
        traced = jax.jit(lambda n=n: fn(n)).trace()
        sizes.append((_count_eqns(traced.jaxpr.jaxpr), _inlined_hlo_ops(traced.lower().as_text())))
    assert sizes[0] == sizes[1], sizes
    assert nfes == [EXPECTED_NFE[name](10), EXPECTED_NFE[name](100)]


# ---------------------------------------------------------------------------------------------
# Sample quality: the floor is the distance between two exact sample sets of the same size.
# ---------------------------------------------------------------------------------------------

N_Q = 2000
_PROJ = jax.random.key(1234)


@jax.jit
def _sorted_projections(x):
    """The sorted projections <theta_l, x> [N_Q, 128] of data.sliced_wasserstein(., ., _PROJ,
    128): SW_2(x, y) = sqrt(mean((P(x) - P(y))^2)) for equal sizes."""
    theta = jax.random.normal(_PROJ, (128, x.shape[1]), jnp.float32)
    theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    return jnp.sort(x @ theta.T, axis=0)


@jax.jit
def _mean_sw(x, sorted_refs):
    """Mean over the references [R, N_Q, 128] (sorted once) of SW_2(x, ref)."""
    px = _sorted_projections(x)
    return jnp.mean(jnp.sqrt(jnp.mean((px[None] - sorted_refs) ** 2, axis=(1, 2))))


@pytest.fixture(scope="module")
def exact_sets():
    """8 exact sample sets [8, N_Q, 2] and the sorted projections of all 8; the first 4 are
    the references of `_quality`."""
    sample = jax.jit(lambda k: MIX.sample(k, N_Q))
    sets = jnp.stack([sample(jax.random.key(100 + i)) for i in range(8)])
    projections = jax.jit(jax.vmap(_sorted_projections))(sets)
    return sets, projections[:4], projections


@pytest.fixture(scope="module")
def floor(exact_sets):
    """Mean SW_2 between 4 independent pairs of exact sample sets (measured 0.045)."""
    _, _, p = exact_sets
    return float(jnp.mean(jnp.sqrt(jnp.mean((p[0::2] - p[1::2]) ** 2, axis=(1, 2)))))


def _quality(x, exact_sets):
    """Mean SW_2 of x to the 4 reference sets."""
    return float(_mean_sw(x, exact_sets[1]))


Q = (N_Q, 2)
BUDGETS = (10, 20, 35)
_half = lambda n: (n + 1) // 2           # Heun / EDM Alg. 2 steps for an NFE budget: 2N - 1
_CHURN = dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)   # EDM Table 5


def _sde(fn, sde, predictor="reverse_diffusion"):
    """A reverse-SDE / PC run on Song et al.'s uniform times (PC: N (1 + 1) <= budget)."""
    def run(k, d, n):
        steps = n if fn is S.sample_reverse_sde else n // 2
        return fn(k, sde.score_from_denoiser(d), Q, sde, SDE_T(steps), predictor=predictor)
    return run


# name: (run(key, denoiser, budget) -> (x, info), NFE of a budget, stochastic?, upper bounds on
# q / floor at 10 / 20 / 35 NFE). The bounds are about 1.35x the ratios measured with key 7
# (printed in the README's table); the ODE samplers' floor is ~1.0-1.3 with these sets.
LOW_NFE = {
    "euler": (lambda k, d, n: S.sample_euler(k, d, Q, E(n)), lambda n: n, False,
              (4.9, 2.7, 1.9)),
    "heun": (lambda k, d, n: S.sample_heun(k, d, Q, E(_half(n))),
             lambda n: 2 * _half(n) - 1, False, (37.0, 3.6, 1.5)),
    "edm_stochastic": (lambda k, d, n: S.sample_edm_stochastic(k, d, Q, E(_half(n)), **_CHURN),
                       lambda n: 2 * _half(n) - 1, True, (53.0, 6.3, 3.5)),
    "dpmpp_2m": (lambda k, d, n: S.sample_dpmpp_2m(k, d, Q, E(n)), lambda n: n, False,
                 (4.9, 1.6, 1.4)),
    # DPM-Solver's logSNR-uniform grid (Lu et al. 2022) instead of EDM's rho = 7 one.
    "dpmpp_2m_logsnr": (lambda k, d, n: S.sample_dpmpp_2m(k, d, Q, SC.logsnr_sigma_steps(n)),
                        lambda n: n, False, (2.6, 1.5, 1.4)),
    "ancestral": (lambda k, d, n: S.sample_ancestral(k, d, Q, E(n)), lambda n: n, True,
                  (6.3, 4.6, 3.0)),
    # Ho et al.'s other variance, beta = t^2 - t'^2: wider steps than the posterior's
    # beta-tilde, which ignores the error of x0_hat (README: which variance at which NFE).
    "ancestral_beta": (lambda k, d, n: S.sample_ancestral(k, d, Q, E(n), variance="beta"),
                       lambda n: n, True, (6.2, 3.5, 2.3)),
    "ddim": (lambda k, d, n: S.sample_ddim(k, S.eps_from_denoiser(d, AB), Q, AB, TS(1000, n)),
             lambda n: n, False, (3.7, 2.2, 1.7)),
    "ddpm": (lambda k, d, n: S.sample_ddpm(k, S.eps_from_denoiser(d, AB), Q, AB, TS(1000, n)),
             lambda n: n, True, (4.8, 3.5, 1.7)),
    "reverse_sde_vp": (_sde(S.sample_reverse_sde, VP), lambda n: n, True, (1.8, 2.8, 1.4)),
    "reverse_sde_ve": (_sde(S.sample_reverse_sde, VE_EDM), lambda n: n, True, (5.1, 2.3, 2.5)),
    # PC on the VP SDE was all-NaN at <= 35 NFE (whatever the predictor) while the
    # corrector's alpha was 1 - beta(t) dt, negative once beta_max dt > 1.
    "pc_vp": (_sde(S.sample_pc, VP), lambda n: 2 * (n // 2), True, (2.7, 2.5, 1.8)),
    "pc_ve": (_sde(S.sample_pc, VE_EDM), lambda n: 2 * (n // 2), True, (19.0, 4.7, 3.0)),
}


@pytest.mark.parametrize("name", list(LOW_NFE))
def test_quality_at_10_20_35_nfe(name, exact_sets, floor):
    """Every sampler (the sampler table's defaults) at 10 / 20 / 35 NFE on the exact mixture:
    finite, within its stated factor of the quality floor, info["nfe"] the paper's count and
    equal to the denoiser calls counted inside the jitted program (at 10 NFE); stochastic
    ones reproducible from the key."""
    run, nfe_of, stochastic, bounds = LOW_NFE[name]
    counting, calls = _counting(D)           # denoiser calls counted at the first budget

    def program(key):
        return [run(key, counting if n == BUDGETS[0] else D, n) for n in BUDGETS]

    fn = jax.jit(program)
    outs = jax.block_until_ready(fn(jax.random.key(7)))
    assert outs[0][1]["nfe"] == len(calls)
    ratios = []
    for (x, info), n in zip(outs, BUDGETS):
        assert info["nfe"] == nfe_of(n) <= n
        assert bool(jnp.all(jnp.isfinite(x))), n
        ratios.append(_quality(x, exact_sets) / floor)
    assert np.all(np.array(ratios) < np.array(bounds)), (ratios, bounds)
    if stochastic:
        np.testing.assert_array_equal(fn(jax.random.key(7))[-1][0], outs[-1][0])


MANY_STEPS = {
    # Measured ratio q / floor in comments (seeds 7 / 8).
    "vp_reverse_sde_500": lambda k: S.sample_reverse_sde(k, VP.score_from_denoiser(D), Q, VP,
                                                         SDE_T(500)),
    # PC: VP with snr 0.16 measured 0.93 / 1.15. (VE with snr 0.16 measured 1.69 / 1.47: in 2-D
    # the batch-averaged Langevin step is too large for the narrow components.)
    "vp_pc_250x2": lambda k: S.sample_pc(k, VP.score_from_denoiser(D), Q, VP, SDE_T(250),
                                         snr=0.16),
    "ddpm_1000": lambda k: S.sample_ddpm(k, S.eps_from_denoiser(D, AB), Q, AB, TS(1000, 1000)),
    "edm_stochastic_64steps": lambda k: S.sample_edm_stochastic(k, D, Q, E(64), **_CHURN),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MANY_STEPS))
def test_quality_many_steps(name, exact_sets, floor):
    """The papers' step counts reach the floor: below 1.5x."""
    x, _ = jax.jit(MANY_STEPS[name])(jax.random.key(7))
    assert _quality(x, exact_sets) < 1.5 * floor


# ---------------------------------------------------------------------------------------------
# Convergence order against the adaptive reference solution.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ode_reference():
    noise = jax.random.normal(jax.random.key(11), SHAPE)
    f, calls = _counting(D)
    ref, info = jax.jit(lambda: S.sample_rk45(None, f, SHAPE, x_init=80.0 * noise,
                                              rtol=1e-6, atol=1e-6))()
    assert bool(info["success"])
    return noise, ref, info, len(calls)


def test_rk45_reference_agrees_with_fine_heun(ode_reference):
    """RK45 (rtol = atol = 1e-6, ~210 NFE) vs Heun with 1024 steps: RMS ~8e-6. Its
    info["nfe"] equals the denoiser calls counted inside the solver's while loop: the initial
    step's 2, 6 per attempted step, 1 for the final denoise."""
    noise, ref, info, calls = ode_reference
    assert int(info["nfe"]) == calls
    assert calls == 2 + 6 * int(info["num_accepted"] + info["num_rejected"]) + 1
    fine, _ = jax.jit(lambda: S.sample_heun(None, D, SHAPE, E(1024), x_init=80.0 * noise))()
    assert rms(fine, ref) < 5e-5


def test_rk45_solver_exact_ode():
    """dy/dt = -y + cos t, y(0) = 1 on [0, 5]: y = (e^-t + cos t + sin t) / 2; and backwards."""
    fn = lambda t, y: {"a": -y["a"] + jnp.cos(t)}
    y, info = jax.jit(lambda: solve_rk45(fn, {"a": jnp.ones(3)}, 0.0, 5.0,
                                         rtol=1e-7, atol=1e-7))()
    exact = 0.5 * (np.exp(-5.0) + np.cos(5.0) + np.sin(5.0))
    np.testing.assert_allclose(y["a"], exact, atol=2e-6)
    assert bool(info["success"]) and int(info["nfe"]) > 0
    y2, _ = jax.jit(lambda: solve_rk45(lambda t, y: y, jnp.ones(2), 1.0, 0.0))()
    np.testing.assert_allclose(y2, np.exp(-1.0), rtol=5e-5)


@pytest.mark.parametrize("name,lo,hi", [("euler", -1.25, -0.75), ("heun", -2.6, -1.7),
                                        ("dpmpp_2m", -2.6, -1.6)])
def test_convergence_order(name, lo, hi, ode_reference):
    """RMS error vs the RK45 reference for N = 8, 16, 32, 64 EDM steps (fixed noise); fitted
    log-log slope (measured: Euler -0.92, Heun -2.41, DPM-Solver++(2M) -2.14; Heun's N = 8 is
    pre-asymptotic, its slope over 16..64 is -2.15)."""
    noise, ref, _, _ = ode_reference
    fn = {"euler": S.sample_euler, "heun": S.sample_heun, "dpmpp_2m": S.sample_dpmpp_2m}[name]
    ns = np.array([8, 16, 32, 64])
    xs = jax.jit(lambda: [fn(None, D, SHAPE, E(int(n)), x_init=80.0 * noise)[0] for n in ns])()
    errs = [rms(x, ref) for x in xs]
    slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert lo < slope < hi, (slope, errs)
    assert np.all(np.diff(errs) < 0), errs


# ---------------------------------------------------------------------------------------------
# DDIM / DDPM.
# ---------------------------------------------------------------------------------------------

def test_ddim_eta0_is_euler_on_sigma_grid_and_matches_ode():
    """DDIM (eta = 0) in x / sqrt(ab) coordinates is Euler's method on the probability-flow ODE
    over sigma_t = sqrt((1 - ab_t) / ab_t): equal to the EDM Euler sampler on that grid (to
    float32 rounding, measured <= 1.4e-5), and converging to the RK45 ODE solution at first
    order (measured RMS: 0.144 / 0.035 / 0.0166 / 0.0020 at 10 / 50 / 100 / 1000 steps)."""
    sig = np.sqrt((1 - AB) / AB)
    eps_fn = S.eps_from_denoiser(D, AB)
    x_t = jax.random.normal(jax.random.key(1), SHAPE)
    x_sig = x_t / np.sqrt(AB[-1])

    @jax.jit
    def run():
        ref = S.sample_rk45(None, D, SHAPE, sigma_max=sig[-1], sigma_min=sig[0], x_init=x_sig,
                            rtol=1e-6, atol=1e-6)[0]
        out = {n: (S.sample_ddim(None, eps_fn, SHAPE, AB, TS(1000, n), x_init=x_t)[0],
                   S.sample_euler(None, D, SHAPE, SC.ddpm_sigma_steps(AB, TS(1000, n)),
                                  x_init=x_sig)[0]) for n in (50, 1000)}
        return ref, out

    ref, out = run()
    errs = {}
    for n, (x, xe) in out.items():
        np.testing.assert_allclose(x, xe, atol=1e-4)
        errs[n] = rms(x, ref)
    assert errs[1000] < 5e-3
    assert 8.0 < errs[50] / errs[1000] < 40.0, errs       # first order: ~20x for 20x steps


def test_ddim_eta1_is_ddpm_beta_tilde():
    """DDIM Eq. 12 with eta = 1 is DDPM ancestral sampling with the beta-tilde variance: with
    the same key (same noise draws) the outputs agree (measured: bit-identical)."""
    eps_fn = S.eps_from_denoiser(D, AB)
    ts = TS(1000, 50)
    a, b = jax.jit(lambda k: (
        S.sample_ddim(k, eps_fn, SHAPE, AB, ts, eta=1.0)[0],
        S.sample_ddpm(k, eps_fn, SHAPE, AB, ts, variance="beta_tilde")[0]))(jax.random.key(3))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_eps_from_denoiser_inverts_forward_process():
    """With a denoiser that knows x0 exactly (a single point mass), eps_fn returns the eps
    that produced x_t = sqrt(ab) x0 + sqrt(1 - ab) eps."""
    x0 = jnp.array([[0.3, -0.7]])
    point = lambda x, s: jnp.broadcast_to(x0, x.shape)
    eps_fn = S.eps_from_denoiser(point, AB)
    eps = jax.random.normal(jax.random.key(0), (5, 2))
    i = jnp.array([0, 10, 200, 600, 999])
    x_t = np.sqrt(AB[i])[:, None] * x0 + np.sqrt(1 - AB[i])[:, None] * eps
    np.testing.assert_allclose(eps_fn(jnp.asarray(x_t, jnp.float32), i), eps, atol=2e-4)
    # The samplers' shared-index path gives the per-sample path's values.
    shared, per_sample = jax.jit(lambda x: (eps_fn.at_index(x, jnp.int32(600)),
                                            eps_fn(x, jnp.full((5,), 600, jnp.int32))))(
        jnp.asarray(x_t, jnp.float32))
    np.testing.assert_array_equal(shared, per_sample)


# ---------------------------------------------------------------------------------------------
# Stochastic samplers: S_churn = 0 equals Heun; reproducibility; vmap.
# ---------------------------------------------------------------------------------------------

def _ddpm_clipped_numpy(eps_fn, x, alphas_bar, ts, noises, lo, hi):
    """Ho et al. 2020's sampler as their code writes it, float64: x0 = sqrt(1 / ab) x -
    sqrt(1 / ab - 1) eps, clipped; mean = coef1 x0 + coef2 x (posterior q(x_prev | x, x0),
    Eq. 7: coef1 = beta sqrt(ab_prev) / (1 - ab), coef2 = (1 - ab_prev) sqrt(alpha) / (1 - ab));
    plus sqrt(beta) z except on the last step."""
    for j, t in enumerate(ts):
        ab = alphas_bar[t]
        ab_prev = alphas_bar[ts[j + 1]] if j + 1 < len(ts) else 1.0
        alpha, beta = ab / ab_prev, 1.0 - ab / ab_prev
        x0 = np.clip(np.sqrt(1 / ab) * x - np.sqrt(1 / ab - 1) * eps_fn(x, t), lo, hi)
        x = (beta * np.sqrt(ab_prev) / (1 - ab)) * x0 + ((1 - ab_prev) * np.sqrt(alpha)
                                                         / (1 - ab)) * x
        if j + 1 < len(ts):
            x = x + np.sqrt(beta) * noises[j]
    return x


def test_clip_denoised_is_ho_et_al_clipped_reconstruction():
    """`clip_denoised=(lo, hi)`: DDPM equals the numpy reference of the clipped-x0 sampler
    (Ho et al.'s / Diffusion-QL's code); the ancestral sampler in sigma space with the clip
    equals it on the wrapped denoiser (`clip_denoiser`); with bounds far outside the samples
    DDPM and DDIM equal their unclipped runs; bad bounds are refused."""
    ab = SC.ddpm_schedule(8, 1e-4, 0.2).alphas_bar             # a short, strong schedule
    ts = TS(8, 8)
    eps_np = lambda x, t: np.tanh(x) * (1.0 + 0.1 * t)
    eps_fn = lambda x, i: jnp.tanh(x) * (1.0 + 0.1 * S.per_sample(i.astype(x.dtype), x))
    key, shape = jax.random.key(3), (64, 2)
    k_init, k_steps = jax.random.split(key)
    x_top = np.asarray(jax.random.normal(k_init, shape), np.float64)
    noises = [np.asarray(S.step_noise(k_steps, j, jnp.zeros(shape)), np.float64)
              for j in range(len(ts))]
    reference = _ddpm_clipped_numpy(eps_np, x_top, ab, ts, noises, -0.5, 0.5)
    clipped, free, wide, ddim, ddim_wide = jax.jit(lambda k: [
        S.sample_ddpm(k, eps_fn, shape, ab, ts, clip_denoised=(-0.5, 0.5))[0],
        S.sample_ddpm(k, eps_fn, shape, ab, ts)[0],
        S.sample_ddpm(k, eps_fn, shape, ab, ts, clip_denoised=(-1e6, 1e6))[0],
        S.sample_ddim(k, eps_fn, shape, ab, ts)[0],
        S.sample_ddim(k, eps_fn, shape, ab, ts, clip_denoised=(-1e6, 1e6))[0]])(key)
    np.testing.assert_allclose(clipped, reference, rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(clipped - free))) > 0.05        # the clip acts here
    np.testing.assert_allclose(wide, free, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ddim_wide, ddim, rtol=1e-4, atol=1e-4)

    sig = E(6)
    option, wrapped = jax.jit(lambda k: (
        S.sample_ancestral(k, D, (32, 2), sig, clip_denoised=(-0.3, 0.4))[0],
        S.sample_ancestral(k, S.clip_denoiser(D, (-0.3, 0.4)), (32, 2), sig)[0]))(key)
    np.testing.assert_array_equal(option, wrapped)
    assert float(jnp.max(option)) <= 0.4 + 1e-6 and float(jnp.min(option)) >= -0.3 - 1e-6
    for bad in ((1.0, -1.0), 0.5, (0.0,)):
        with pytest.raises(ValueError, match="clip_denoised"):
            S.sample_ancestral(key, D, (4, 2), sig, clip_denoised=bad)


def test_edm_stochastic_without_churn_equals_heun():
    key = jax.random.key(5)
    (h, hi), (s, si) = jax.jit(lambda: (S.sample_heun(key, D, SHAPE, E(18)),
                                        S.sample_edm_stochastic(key, D, SHAPE, E(18))))()

    assert hi["nfe"] == si["nfe"] == 35
    np.testing.assert_array_equal(np.asarray(h), np.asarray(s))       # bit-for-bit
    # (With churn the samples differ: `test_quality_at_10_20_35_nfe[edm_stochastic]`.)


def test_vmap_over_keys_equals_loop():
    keys = jax.random.split(jax.random.key(0), 2)
    run = lambda k: S.sample_ancestral(k, D, (16, 2), E(8))[0]
    batched, single = jax.jit(lambda ks: (jax.vmap(run)(ks), [run(k) for k in ks]))(keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i], single[i], atol=1e-5)


def test_rng_normal_is_jax_random_normal():
    """`rng.normal` (the samplers' draws) returns jax.random.normal's values bit for bit: for
    typed and raw threefry keys, odd and multi-dimensional shapes, under jit and vmap over keys
    and step indices; an rbg key falls back to jax.random.normal. Its block function equals
    jax.extend.random.threefry_2x32 (Salmon et al. 2011's Threefry-2x32-20)."""
    from jax.extend.random import threefry_2x32
    from diffusion import rng

    counts = jnp.arange(20, dtype=jnp.uint32) * jnp.uint32(2654435761)
    raw = jax.random.key_data(jax.random.key(42))
    mine = rng.threefry2x32(raw[0], raw[1], counts[:10], counts[10:])
    np.testing.assert_array_equal(jnp.concatenate(mine), threefry_2x32(raw, counts))
    assert rng.uses_unrolled_threefry(jax.random.key(0), jnp.float32)
    for shape in [(1,), (7,), (256, 16), (3, 5, 4)]:
        for key in (jax.random.key(3), jax.random.PRNGKey(11), jax.random.key(5, impl="rbg")):
            np.testing.assert_array_equal(rng.normal(key, shape),
                                          jax.random.normal(key, shape))
    keys = jax.random.split(jax.random.key(9), 3)
    theirs, ours = jax.jit(lambda ks: (
        jax.vmap(lambda k: jax.random.normal(k, (33, 2)))(ks),
        jax.vmap(lambda k: rng.normal(k, (33, 2)))(ks)))(keys)
    np.testing.assert_array_equal(ours, theirs)
    x = jnp.zeros((17, 3))
    steps = jnp.arange(6)
    theirs, ours = jax.jit(lambda k: (
        jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k, i), x.shape))(steps),
        jax.vmap(lambda i: S.step_noise(k, i, x))(steps)))(keys[0])
    np.testing.assert_array_equal(ours, theirs)


def test_scan_with_noise_buffers_equal_draws_in_the_step():
    """All draws up front (the default at this size), a refilled buffer of 5 steps (23 steps:
    the last chunk partly unused) and of 1 step hand each step the noise `step_noise` draws
    for it, bit for bit (the steps store what they get)."""
    x = jnp.zeros((4, 3))
    k_steps = jax.random.key(2)
    num = 23

    def step(seen, c):
        z, i = c
        return seen.at[i].set(z), None

    expected = jax.vmap(lambda i: S.step_noise(k_steps, i, x))(jnp.arange(num))
    outs = jax.jit(lambda k: [
        S.scan_with_noise(step, jnp.zeros((num,) + x.shape), jnp.arange(num),
                          lambda i: S.step_noise(k, i, x), num, chunk=c)
        for c in (None, 5, 1)])(k_steps)
    for out in outs:
        np.testing.assert_array_equal(out, expected)


def test_sampler_is_differentiable():
    """Gradient of a sample statistic w.r.t. a parameter the denoiser closes over (a mixture
    shift c: the samples shift by c exactly, so d mean(x) / dc = 1)."""
    def mean_sample(c):
        den = lambda x, s: D(x - c, s) + c
        x, _ = S.sample_heun(jax.random.key(0), den, (64, 2), E(10))
        return jnp.mean(x)

    g = jax.jit(jax.grad(mean_sample))(0.3)
    np.testing.assert_allclose(g, 1.0, atol=0.05)


def test_sde_samplers_gaussian_moments():
    """Reverse-SDE Euler-Maruyama (VP) and PC (VE) on a Gaussian N(m, diag(s^2)) with its
    exact denoiser reproduce mean and std (2000 samples; tolerances cover MC error ~0.02 and
    the eps = 1e-3 end time; PC with snr 0.16 measured std +1..3% on the narrow coordinate)."""
    m, s = jnp.array([0.5, -1.0]), jnp.array([0.3, 1.0])
    gauss = lambda x, sig: m + s ** 2 / (s ** 2 + sig[:, None] ** 2) * (x - m)
    runs = [functools.partial(fn, score_fn=sde.score_from_denoiser(gauss), shape=(2000, 2),
                              sde=sde, ts=SDE_T(200), **kw)
            for sde, fn, kw in ((VP, S.sample_reverse_sde, {}), (VE, S.sample_pc, dict(snr=0.16)))]
    for x in jax.jit(lambda k: [run(k)[0] for run in runs])(jax.random.key(0)):
        np.testing.assert_allclose(jnp.mean(x, 0), m, atol=0.05)
        np.testing.assert_allclose(jnp.std(x, 0), s, rtol=0.06)
