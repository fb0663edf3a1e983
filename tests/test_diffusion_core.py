"""Diffusion core: SDEs, EDM Table 1 preconditioning, losses, data (GMM exact denoiser, toys,
digits) and the sliced Wasserstein metric, each against an independent numpy reference,
a Monte Carlo estimate or an identity (Tweedie, unit-variance training target).
"""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion import data
from diffusion import losses
from diffusion import precond
from diffusion import schedules
from diffusion import sde as sde_lib

SIGMAS = np.array([0.002, 0.05, 0.3, 1.0, 4.0, 80.0])
SDES = [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()]
SDE_IDS = ["vp", "subvp", "ve"]


def _np(a):
    return np.asarray(a, np.float64)


# ============================================================================ preconditioning
def test_edm_coefficients_vs_rewritten_formulas():
    sd = 0.5
    c = precond.edm_precond(jnp.asarray(SIGMAS, jnp.float32), sigma_data=sd)
    r = SIGMAS / sd  # written with the ratio sigma / sigma_data
    np.testing.assert_allclose(c.c_skip, 1.0 / (1.0 + r ** 2), rtol=1e-6)
    np.testing.assert_allclose(c.c_out, SIGMAS / np.sqrt(1.0 + r ** 2), rtol=1e-6)
    np.testing.assert_allclose(c.c_in, (1.0 / sd) / np.sqrt(1.0 + r ** 2), rtol=1e-6)
    np.testing.assert_allclose(c.c_noise, np.log(SIGMAS ** 0.25), rtol=1e-6, atol=1e-7)
    # lambda = 1 / c_out^2 (EDM Sec. 5), and c_in^2 (sigma^2 + sd^2) = 1 (unit-variance input).
    w = precond.edm_weight(jnp.asarray(SIGMAS, jnp.float32), sigma_data=sd)
    np.testing.assert_allclose(w, 1.0 / _np(c.c_out) ** 2, rtol=1e-5)
    np.testing.assert_allclose(_np(c.c_in) ** 2 * (SIGMAS ** 2 + sd ** 2), 1.0, rtol=1e-5)


@pytest.mark.parametrize("sd", [0.5, 1.3])
def test_edm_target_has_unit_variance(sd):
    """Var[(x0 - c_skip (x0 + sigma n)) / c_out] = 1 for x0 ~ N(0, sd^2): closed form and MC."""
    c = precond.edm_precond(jnp.asarray(SIGMAS, jnp.float32), sigma_data=sd)
    c_skip, c_out = _np(c.c_skip), _np(c.c_out)
    exact = ((1.0 - c_skip) ** 2 * sd ** 2 + c_skip ** 2 * SIGMAS ** 2) / c_out ** 2
    np.testing.assert_allclose(exact, 1.0, rtol=1e-5)
    rng = np.random.default_rng(0)
    x0 = sd * rng.standard_normal((200_000, 1))
    n = rng.standard_normal((200_000, 1))
    target = (x0 - c_skip * (x0 + SIGMAS * n)) / c_out
    np.testing.assert_allclose(target.var(axis=0), 1.0, atol=0.015)


def test_vp_coefficients_vs_independent_root():
    """c_noise = (M-1) t, t the positive root of beta_d t^2 / 2 + beta_min t = ln(1 + sigma^2)."""
    beta_d, beta_min, m = 19.9, 0.1, 1000
    sig = np.array([0.01, 0.3, 1.0, 5.0, 80.0])
    c = precond.vp_precond(jnp.asarray(sig, jnp.float32))
    t_ref = np.array([max(np.roots([0.5 * beta_d, beta_min, -np.log(1.0 + s * s)]).real)
                      for s in sig])
    np.testing.assert_allclose(c.c_noise, (m - 1) * t_ref, rtol=2e-5)
    np.testing.assert_allclose(c.c_skip, 1.0)
    np.testing.assert_allclose(c.c_out, -sig, rtol=1e-6)
    np.testing.assert_allclose(c.c_in, (1.0 + sig ** 2) ** -0.5, rtol=1e-6)
    # c_in x is the DDPM-scaled x_t: c_in = s(t) of Table 1 at t = sigma^{-1}(sigma).
    np.testing.assert_allclose(c.c_in, sde_lib.edm_vp_scale(t_ref), rtol=1e-5)


def test_ve_coefficients():
    c = precond.ve_precond(jnp.asarray(SIGMAS, jnp.float32))
    np.testing.assert_allclose(c.c_skip, 1.0)
    np.testing.assert_allclose(c.c_in, 1.0)
    np.testing.assert_allclose(c.c_out, SIGMAS, rtol=1e-6)
    np.testing.assert_allclose(c.c_noise, np.log(SIGMAS) - np.log(2.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(precond.ve_weight(SIGMAS), SIGMAS ** -2.0)
    np.testing.assert_allclose(precond.vp_weight(SIGMAS), SIGMAS ** -2.0)


def test_training_sigma_distributions():
    key = jax.random.key(0)
    s = _np(precond.edm_sample_sigma(key, (50_000,), p_mean=-1.2, p_std=1.2))
    assert abs(np.log(s).mean() + 1.2) < 0.03 and abs(np.log(s).std() - 1.2) < 0.03
    s = _np(precond.ve_sample_sigma(key, (50_000,), sigma_min=0.02, sigma_max=100.0))
    assert s.min() >= 0.02 * (1 - 1e-6) and s.max() <= 100.0 * (1 + 1e-6)
    u = (np.log(s) - np.log(0.02)) / (np.log(100.0) - np.log(0.02))  # should be U(0, 1)
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    s = _np(precond.vp_sample_sigma(key, (50_000,), eps_t=1e-5))
    t = sde_lib.edm_vp_sigma_inv(s)  # back to t: should be U(1e-5, 1)
    assert t.min() >= 1e-5 * 0.99 and t.max() <= 1.0 + 1e-5
    assert abs(t.mean() - 0.5) < 0.01


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_make_denoiser_composes_coefficients(name):
    """D = c_skip x + c_out F(c_in x, c_noise) with a known raw F (and extra args passed)."""
    def raw(params, x_in, c_noise, label):
        chex.assert_shape(c_noise, x_in.shape[:1])
        return params["a"] * jnp.tanh(x_in) + c_noise[:, None, None] + label[:, None, None]

    params = {"a": jnp.float32(0.7)}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    sig = np.array([0.01, 0.5, 2.0, 30.0], np.float32)
    label = np.arange(4, dtype=np.float32)
    denoise = precond.make_denoiser(raw, params, name)
    d = denoise(jnp.asarray(x), jnp.asarray(sig), jnp.asarray(label))
    c = getattr(precond, f"{name}_precond")(sig)
    b = lambda v: _np(v)[:, None, None]
    f = 0.7 * np.tanh(b(c.c_in) * x) + b(c.c_noise) + label[:, None, None]
    np.testing.assert_allclose(d, b(c.c_skip) * x + b(c.c_out) * f, rtol=2e-5, atol=2e-5)
    # a scalar sigma is broadcast to [N]
    d1 = denoise(jnp.asarray(x), 0.5, jnp.asarray(label))
    d2 = denoise(jnp.asarray(x), jnp.full((4,), 0.5), jnp.asarray(label))
    np.testing.assert_allclose(d1, d2)


def test_discrete_vp_precond_takes_the_nearest_level_index():
    """A network trained on discrete levels sees the index of the level nearest in log sigma
    (numpy argmin as the reference): each level's own index on the levels, the ends beyond
    them; the denoiser is x - sigma eps(x / sqrt(1 + sigma^2), i) (DDPM in the sigma view)."""
    ab = schedules.ddpm_schedule(50).alphas_bar
    levels = np.sqrt((1.0 - ab) / ab)                       # increasing, [50]
    rng = np.random.default_rng(0)
    sig = np.concatenate([levels, np.exp(rng.uniform(np.log(1e-3), np.log(1e3), 500))])
    reference = np.argmin(np.abs(np.log(sig)[:, None] - np.log(levels)[None, :]), axis=1)
    index = precond.nearest_level_index(jnp.asarray(sig, jnp.float32), levels)
    assert index.dtype == jnp.int32
    np.testing.assert_array_equal(index, reference)
    np.testing.assert_array_equal(index[:50], np.arange(50))
    np.testing.assert_array_equal(precond.nearest_level_index(jnp.ones(3), [0.5]), [0, 0, 0])
    with pytest.raises(ValueError, match="strictly increasing"):
        precond.nearest_level_index(jnp.ones(3), levels[::-1])

    def eps_net(params, x_in, c_noise):
        return jnp.sin(x_in) + 0.01 * c_noise[:, None]

    x = rng.standard_normal((50, 3)).astype(np.float32)
    d = precond.make_denoiser(eps_net, None, precond.discrete_vp_precond(levels))(
        jnp.asarray(x), jnp.asarray(levels, jnp.float32))
    x_t = x / np.sqrt(1.0 + levels[:, None] ** 2)
    expected = x - levels[:, None] * (np.sin(x_t) + 0.01 * np.arange(50)[:, None])
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-5)


def test_get_precond_rejects_unknown():
    with pytest.raises(ValueError, match="valid choices"):
        precond.get_precond("iddpm")
    with pytest.raises(ValueError, match="sigma_data"):
        precond.get_precond("edm", sigma_dat=0.5)
    p = precond.get_precond("ve", sigma_min=0.01, sigma_max=50.0)
    s = p.sample_sigma(jax.random.key(0), (1000,))
    assert float(s.min()) >= 0.01 * (1 - 1e-6) and float(s.max()) <= 50.0 * (1 + 1e-6)


# ============================================================================ SDEs
def _moments_ode(sde, t_end, c0, num=40_000):
    """Integrate d mean/dt = f mean, d var/dt = 2 f var + g^2 (RK4, float64) from t = 0."""
    def rhs(t, y):
        f, g = sde.drift_coeff(t), sde.diffusion(t)
        return np.array([f * y[0], 2.0 * f * y[1] + g ** 2])

    y, h = np.array([c0, 0.0]), t_end / num
    for i in range(num):
        t = i * h
        k1 = rhs(t, y)
        k2 = rhs(t + h / 2, y + h / 2 * k1)
        k3 = rhs(t + h / 2, y + h / 2 * k2)
        k4 = rhs(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_marginals_solve_the_moment_equations(sde):
    """The closed-form kernel's mean and variance solve the linear SDE's moment ODEs."""
    for t_end in (0.1, 0.5, 1.0):
        mean, var = _moments_ode(sde, t_end, 1.7, num=4000)
        np.testing.assert_allclose(1.7 * sde.marginal_mean_coeff(t_end), mean, rtol=1e-7)
        np.testing.assert_allclose(sde.marginal_std(t_end) ** 2, var, rtol=1e-7)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_marginals_vs_euler_maruyama(sde):
    """Monte Carlo: simulate dx = f x dt + g dw from x(0) = 1.5 and compare mean/std at t = 0.6."""
    n, steps, t_end, x_init = 40_000, 600, 0.6, 1.5
    ts = np.linspace(0.0, t_end, steps + 1)
    fs = np.array([sde.drift_coeff(t) for t in ts[:-1]], np.float32)
    gs = np.array([sde.diffusion(t) for t in ts[:-1]], np.float32)
    h = np.float32(t_end / steps)

    @jax.jit
    def simulate(key):
        def body(x, inp):
            f, g, k = inp
            return x + f * x * h + g * jnp.sqrt(h) * jax.random.normal(k, x.shape), None
        keys = jax.random.split(key, steps)
        return jax.lax.scan(body, jnp.full((n,), x_init, jnp.float32), (fs, gs, keys))[0]

    x = _np(simulate(jax.random.key(3)))
    m, s = sde.marginal_mean_coeff(t_end) * x_init, sde.marginal_std(t_end)
    # MC error of the mean ~ s / 200; Euler's weak error O(h) ~ 1e-3 relative.
    np.testing.assert_allclose(x.mean(), m, atol=4 * s / math.sqrt(n) + 3e-3 * abs(m))
    np.testing.assert_allclose(x.std(), s, rtol=0.015)


def test_edm_view_vs_table_1():
    t = np.array([1e-4, 1e-3, 0.1, 0.5, 1.0])
    vp = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0)
    ib = 0.5 * 19.9 * t ** 2 + 0.1 * t
    np.testing.assert_allclose(vp.edm_sigma(t), np.sqrt(np.exp(ib) - 1.0), rtol=1e-9)
    np.testing.assert_allclose(vp.edm_scale(t), 1.0 / np.sqrt(np.exp(ib)), rtol=1e-12)
    np.testing.assert_allclose(vp.edm_scale(t), (1.0 + vp.edm_sigma(t) ** 2) ** -0.5, rtol=1e-12)
    np.testing.assert_allclose(sde_lib.edm_vp_sigma(t), vp.edm_sigma(t), rtol=1e-12)
    # EDM's VE: t is the variance.
    sig = np.array([0.02, 1.0, 100.0])
    np.testing.assert_allclose(sde_lib.edm_ve_sigma(sde_lib.edm_ve_sigma_inv(sig)), sig)
    np.testing.assert_allclose(sde_lib.edm_ve_sigma_inv(sig), sig ** 2)
    for sde in SDES:
        # x(t) = s(t) (x0 + sigma(t) n)  <=>  m = s, std = s sigma
        np.testing.assert_allclose(sde.edm_scale(t), sde.marginal_mean_coeff(t), rtol=1e-12)
        np.testing.assert_allclose(sde.edm_scale(t) * sde.edm_sigma(t), sde.marginal_std(t),
                                   rtol=1e-9)
        np.testing.assert_allclose(sde.t_of_sigma(sde.edm_sigma(t)), t, rtol=1e-7)
        assert sde.edm_sigma(t).dtype == np.float64  # host schedules stay float64
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0)
    np.testing.assert_allclose(ve.smld_sigma(t), 0.01 * 5000.0 ** t, rtol=1e-12)
    np.testing.assert_allclose(ve.marginal_std(t) ** 2, ve.smld_sigma(t) ** 2 - 1e-4, rtol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_ode_drift_transports_gaussian_marginals(sde):
    """For x0 ~ N(0, c^2): score = -x / v(t), v = m^2 c^2 + std^2; the PF-ODE drift k x must
    satisfy dv/dt = 2 k v, and the reverse-SDE drift is f x - g^2 score."""
    c, h = 3.0, 1e-6
    v = lambda t: sde.marginal_mean_coeff(t) ** 2 * c ** 2 + sde.marginal_std(t) ** 2
    x = jnp.asarray(np.linspace(-2.0, 2.0, 6, dtype=np.float32)[:, None])
    for t in (0.05, 0.4, 0.9):
        score = -x / v(t)
        k = _np(sde.ode_drift(x, jnp.float32(t), score)) / _np(x)
        dv = (v(t + h) - v(t - h)) / (2 * h)
        np.testing.assert_allclose(2.0 * k * v(t), dv, rtol=2e-4)
        rev = sde.reverse_drift(x, jnp.float32(t), score)
        ref = sde.drift_coeff(t) * _np(x) + sde.diffusion(t) ** 2 * _np(x) / v(t)
        np.testing.assert_allclose(rev, ref, rtol=2e-5)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_score_from_denoiser_matches_gaussian_score(sde):
    """x0 ~ N(0, c^2): D(y; sigma) = c^2 / (c^2 + sigma^2) y, and p_t = N(0, m^2 c^2 + std^2)."""
    c = 0.8
    denoise = lambda y, sigma: c ** 2 / (c ** 2 + sigma[:, None] ** 2) * y
    score_fn = sde.score_from_denoiser(denoise)
    x = jnp.asarray(np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None])
    # (D - y) / sigma^2 loses float32 digits as sigma -> 0; t >= 0.05 keeps sigma >~ 0.02.
    t = np.array([0.05, 0.2, 0.5, 0.8, 1.0])
    v = sde.marginal_mean_coeff(t) ** 2 * c ** 2 + sde.marginal_std(t) ** 2
    np.testing.assert_allclose(score_fn(x, jnp.asarray(t, jnp.float32)), -_np(x) / v[:, None],
                               rtol=1e-3)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_prior(sde):
    z = sde.prior_sample(jax.random.key(0), (20_000, 3))
    np.testing.assert_allclose(_np(z).std(), sde.prior_std, rtol=0.02)
    zz = np.random.default_rng(0).standard_normal((4, 3, 2)) * sde.prior_std
    ref = np.sum(-0.5 * np.log(2 * np.pi) - np.log(sde.prior_std)
                 - 0.5 * (zz / sde.prior_std) ** 2, axis=(1, 2))
    np.testing.assert_allclose(sde.prior_logp(jnp.asarray(zz, jnp.float32)), ref, rtol=1e-5)


def test_sde_is_jit_static_and_float_inputs_keep_dtype():
    sde = sde_lib.VPSDE()
    x = jnp.ones((3, 2), jnp.float32)
    out = jax.jit(lambda s, x: s.ode_drift(x, 0.3, x))(sde, x)
    assert out.dtype == jnp.float32 and jax.tree_util.tree_leaves(sde) == []
    with pytest.raises(ValueError, match="valid choices"):
        sde_lib.get_sde("vpsde")
    assert sde_lib.get_sde("ve", sigma_max=10.0).sigma_max == 10.0


# ============================================================================ losses
def _toy_denoiser(x, sigma):
    """A stand-in network with a closed form both in jax and numpy."""
    return jnp.tanh(x) * (sigma / (1.0 + sigma))[:, None]


X0 = np.random.default_rng(2).standard_normal((16, 3)).astype(np.float32)


@pytest.mark.parametrize("jit", [False, True])
def test_edm_loss_vs_numpy(jit):
    key = jax.random.key(7)
    fn = functools.partial(losses.edm_loss, _toy_denoiser, p_mean=-1.0, p_std=0.8, sigma_data=0.6)
    out = (jax.jit(fn) if jit else fn)(jnp.asarray(X0), key)
    k_sigma, k_noise = jax.random.split(key)
    z, n = _np(jax.random.normal(k_sigma, (16,))), _np(jax.random.normal(k_noise, X0.shape))
    sigma = np.exp(-1.0 + 0.8 * z)
    y = X0 + sigma[:, None] * n
    d = np.tanh(y) * (sigma / (1.0 + sigma))[:, None]
    lam = 1.0 / (sigma ** 2 * 0.6 ** 2 / (sigma ** 2 + 0.6 ** 2))  # 1 / c_out^2
    ref = lam * np.einsum("ij,ij->i", d - X0, d - X0)
    assert out.shape == (16,)
    np.testing.assert_allclose(out, ref, rtol=2e-4)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_dsm_loss_vs_numpy(sde):
    key = jax.random.key(8)
    score_fn = lambda x, t: -x * (1.0 + t[:, None])
    out = jax.jit(lambda x0, k: losses.dsm_loss(score_fn, x0, k, sde))(jnp.asarray(X0), key)
    k_t, k_z = jax.random.split(key)
    t = _np(jax.random.uniform(k_t, (16,), minval=sde.eps, maxval=1.0))
    z = _np(jax.random.normal(k_z, X0.shape))
    m, std = sde.marginal_mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
    xt = m * X0 + std * z
    s = -xt * (1.0 + t[:, None])
    grad_log_kernel = -(xt - m * X0) / std ** 2
    ref = np.sum(std ** 2 * (s - grad_log_kernel) ** 2, axis=1)
    np.testing.assert_allclose(out, ref, rtol=2e-3)


def test_ddpm_schedule_and_eps_loss_vs_numpy():
    sched = schedules.ddpm_schedule(1000, 1e-4, 0.02)
    assert sched.alphas_bar.dtype == np.float64
    ab, prod = [], 1.0
    for i in range(1000):
        beta = 1e-4 + (0.02 - 1e-4) * i / 999
        prod *= 1.0 - beta
        ab.append(prod)
    np.testing.assert_allclose(sched.alphas_bar, ab, rtol=1e-12)
    np.testing.assert_allclose(sched.betas[[0, -1]], [1e-4, 0.02])

    key = jax.random.key(9)
    eps_fn = lambda x, t: 0.5 * x + 1e-3 * t[:, None].astype(x.dtype)
    out = losses.ddpm_eps_loss(eps_fn, jnp.asarray(X0), key, sched.alphas_bar)
    k_t, k_eps = jax.random.split(key)
    t = np.asarray(jax.random.randint(k_t, (16,), 0, 1000))
    eps = _np(jax.random.normal(k_eps, X0.shape))
    a = np.array(ab)[t][:, None]
    xt = np.sqrt(a) * X0 + np.sqrt(1.0 - a) * eps
    ref = np.sum((eps - (0.5 * xt + 1e-3 * t[:, None])) ** 2, axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-4)


def test_flow_matching_loss_vs_numpy():
    key = jax.random.key(10)
    v_fn = lambda x, t: jnp.sin(x) - t[:, None]
    out = losses.flow_matching_loss(v_fn, jnp.asarray(X0), key)
    k_t, k_eps = jax.random.split(key)
    t = _np(jax.random.uniform(k_t, (16,)))[:, None]
    eps = _np(jax.random.normal(k_eps, X0.shape))
    xt = X0 + t * (eps - X0)
    ref = np.sum((np.sin(xt) - t - eps + X0) ** 2, axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


def test_exact_models_minimise_the_losses():
    """The exact GMM denoiser / velocity beats a perturbed one (each loss's minimiser)."""
    mix = data.make_gmm([[1.0, 0.0], [-1.0, 0.5]], [0.3, 0.2], [0.3, 0.7])
    x0 = mix.sample(jax.random.key(0), 4096)
    key = jax.random.key(1)
    v = losses.flow_velocity_from_denoiser(mix.denoise)

    @jax.jit
    def mean_losses(scale):
        edm = losses.edm_loss(lambda x, s: scale * mix.denoise(x, s), x0, key).mean()
        fm = losses.flow_matching_loss(lambda x, t: scale * v(x, t), x0, key).mean()
        return edm, fm

    exact, worse = mean_losses(1.0), mean_losses(1.05)
    assert exact[0] < worse[0] and exact[1] < worse[1]
    # The FM velocity is d x_t / dt along the conditional mean path: check at a point via Tweedie.
    x = jnp.array([[0.3, -0.2]])
    t = 0.4
    y, sigma = x / (1 - t), t / (1 - t)
    d = mix.denoise(y, jnp.array([sigma]))
    np.testing.assert_allclose(v(x, t), (_np(x) - _np(d)) / t, rtol=1e-5)


def test_losses_check_shapes():
    with pytest.raises(ValueError):
        losses.edm_loss(_toy_denoiser, jnp.zeros((5,)), jax.random.key(0))
    with pytest.raises(AssertionError):
        losses.edm_loss(lambda x, s: x[:, :1], jnp.zeros((5, 2)), jax.random.key(0))


# ============================================================================ data
MIX = data.make_gmm(means=[[1.0, 0.0], [-1.0, 1.0], [0.0, -1.5]],
                    stds=[[0.3, 0.1], [0.2, 0.2], [0.5, 0.25]], weights=[0.2, 0.5, 0.3])


def test_gmm_denoiser_is_tweedie():
    """D(x; sigma) = x + sigma^2 grad log p_sigma(x), with grad from jax.grad of the log density."""
    x = jax.random.normal(jax.random.key(0), (32, 2)) * 1.5

    @jax.jit
    def evaluate(x, sigma):
        grad = jax.grad(lambda x: MIX.log_density(x, sigma).sum())(x)
        return MIX.denoise(x, sigma), MIX.score(x, sigma), grad

    for s in (0.05, 0.5, 2.0):
        d, score, grad = evaluate(x, jnp.full((32,), s))
        np.testing.assert_allclose(d, x + s ** 2 * grad, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(score, grad, rtol=1e-4, atol=1e-4)
    d = data.gmm_denoiser(MIX.means, MIX.stds, MIX.weights)(x, 0.5)
    np.testing.assert_allclose(d, MIX.denoise(x, jnp.full((32,), 0.5)), rtol=1e-6)


def test_gmm_denoiser_vs_monte_carlo():
    """E[x0 | x] by self-normalised importance sampling from the prior."""
    x0 = _np(MIX.sample(jax.random.key(1), 200_000))
    xs = np.array([[0.5, 0.5], [-1.0, 0.0], [0.2, -1.0]])
    sigma = 0.7
    for x in xs:
        logw = -0.5 * np.sum((x - x0) ** 2, axis=1) / sigma ** 2
        w = np.exp(logw - logw.max())
        mc = (w[:, None] * x0).sum(0) / w.sum()
        d = MIX.denoise(jnp.asarray(x[None], jnp.float32), jnp.array([sigma]))[0]
        np.testing.assert_allclose(d, mc, atol=0.01)


def test_gmm_log_density_vs_quadrature():
    """1-D mixture: p_sigma(x) = int p0(y) N(x; y, sigma^2) dy on a fine grid."""
    mix = data.make_gmm([[0.0], [2.0]], [0.4, 0.3], [0.6, 0.4])
    y = np.linspace(-8.0, 10.0, 200_001)
    p0 = sum(w / np.sqrt(2 * np.pi * s ** 2) * np.exp(-0.5 * (y - mu) ** 2 / s ** 2)
             for w, mu, s in [(0.6, 0.0, 0.4), (0.4, 2.0, 0.3)])
    xs = np.array([-1.0, 0.5, 1.3, 3.0])
    sigma = 0.8
    ref = [np.trapezoid(p0 * np.exp(-0.5 * (x - y) ** 2 / sigma ** 2), y)
           / np.sqrt(2 * np.pi * sigma ** 2) for x in xs]
    out = mix.log_density(jnp.asarray(xs[:, None], jnp.float32), sigma)
    np.testing.assert_allclose(out, np.log(ref), rtol=1e-5, atol=1e-5)
    # sigma = 0 gives the clean density
    np.testing.assert_allclose(mix.log_density(jnp.zeros((1, 1)), 0.0),
                               np.log(0.6 / np.sqrt(2 * np.pi * 0.16)
                                      + 0.4 / np.sqrt(2 * np.pi * 0.09) * np.exp(-0.5 * 4 / 0.09)),
                               rtol=1e-5)


def test_gmm_sample_moments():
    x = _np(MIX.sample(jax.random.key(2), 200_000))
    mu, s, w = (_np(a) for a in MIX)
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None] * (mu ** 2 + s ** 2)).sum(0)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.01)
    np.testing.assert_allclose((x ** 2).mean(0), second, atol=0.02)


def test_gmm_on_image_shaped_data():
    mix = data.make_gmm(np.zeros((3, 4)), 1.0)  # 3 identical N(0, I) in 4-D
    x = jnp.ones((2, 2, 2, 1))
    d = mix.denoise(x, jnp.array([1.0, 3.0]))
    assert d.shape == x.shape
    np.testing.assert_allclose(d[:, 0, 0, 0], [0.5, 0.1], rtol=1e-6)


@pytest.mark.parametrize("name", data.TOY_DATASETS)
def test_toys(name):
    x = data.make_dataset(name, jax.random.key(0), 5000)
    assert x.shape == (5000, 2) and x.dtype == jnp.float32
    assert np.isfinite(_np(x)).all()
    np.testing.assert_array_equal(x, data.make_dataset(name, jax.random.key(0), 5000))
    std = _np(x).std(0)
    assert (std > 0.4).all() and (std < 1.0).all(), std
    assert np.abs(_np(x).mean(0)).max() < 0.35


def test_eight_gaussians_is_its_gmm():
    mix = data.eight_gaussians_gmm()
    x = data.make_dataset("8gaussians", jax.random.key(0), 2000)
    np.testing.assert_allclose(np.linalg.norm(_np(mix.means), axis=1), 1.0, rtol=1e-6)
    r = np.linalg.norm(_np(x), axis=1)
    assert abs(np.median(r) - 1.0) < 0.02
    with pytest.raises(ValueError, match="valid choices"):
        data.make_dataset("circles", jax.random.key(0), 10)


def test_digits():
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install scikit-learn"):
            data.load_digits()
        return
    x, y = data.load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32 and y.shape == (1797,)
    assert x.min() == -1.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    assert data.load_digits(flatten=True)[0].shape == (1797, 64)


def test_sliced_wasserstein():
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (500, 3))
    assert float(data.sliced_wasserstein(x, x, key)) < 1e-6
    shift = jnp.array([0.3, -0.4, 0.0])
    theta = _np(jax.random.normal(key, (256, 3)))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    exact = np.sqrt(np.mean((theta @ _np(shift)) ** 2))
    np.testing.assert_allclose(data.sliced_wasserstein(x, x + shift, key), exact, rtol=1e-4)
    d = [float(data.sliced_wasserstein(x, x + c * shift, key)) for c in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(d, d[1:]))
    # unequal sizes: two samples of one distribution are close; a shifted one is far
    y = jax.random.normal(jax.random.key(2), (300, 3))
    near = float(data.sliced_wasserstein(x, y, key))
    far = float(data.sliced_wasserstein(x, y + 4 * shift, key))
    assert near < 0.15 < far
