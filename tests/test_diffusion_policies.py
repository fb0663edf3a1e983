"""Diffusion-QL, diffusion BC and IDQL: the schedule, losses and reverse chain against independent
numpy formulas (Diffusion-QL Eqs. 1-2, the notes' x0 reconstruction + posterior mean), clipping
to the box at every step, gradients through every step of the chain (a hand-derived linear case),
the candidate selection rules, config rules, jit / vmap over seeds, and the two-mode bandit
(`envs.two_mode_bandit`): diffusion BC keeps both behaviour modes, deterministic and Gaussian BC
average them, Diffusion-QL and IDQL concentrate on the better one."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.core import config_rules
from algorithms.offline import _diffusion_policy as dp
from algorithms.offline import bc, common, diffusion_bc, diffusion_ql, idql, iql
from diffusion import samplers
from envs import two_mode_bandit
from tests.offline_data import tiny_pendulum_dataset

RNG = np.random.default_rng(0)
MODULES = (diffusion_ql, diffusion_bc, idql)


def small(config, **overrides):
    """A CPU-sized copy of a default config (the algorithm's own rules still hold)."""
    config = config.copy_and_resolve_references()
    config.hidden_sizes = (32, 32)
    if "critic_hidden_sizes" in config:
        config.critic_hidden_sizes = (32, 32)
    if "num_candidates" in config:
        config.num_candidates = 8
    config.batch_size, config.steps_per_update, config.eval_episodes = 32, 5, 2
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def task():
    return common.make_task(tiny_pendulum_dataset(), diffusion_ql.default_config())


# ---------------------------------------------------------------------------- schedule
def _dql_vp_alphas_bar(n, b_min=0.1, b_max=10.0):
    """Diffusion-QL's `vp_beta_schedule` (agents/helpers.py), then cumprod(1 - beta)."""
    t = np.arange(1, n + 1, dtype=np.float64)
    alpha = np.exp(-b_min / n - 0.5 * (b_max - b_min) * (2 * t - 1) / n ** 2)
    return np.cumprod(alpha)


@pytest.mark.parametrize("n", [1, 5, 20])
def test_schedules_match_the_papers_formulas(n):
    config = diffusion_ql.default_config()
    config.num_diffusion_steps = n
    np.testing.assert_allclose(dp.ddpm_alphas_bar(config), _dql_vp_alphas_bar(n), rtol=1e-12)
    config.beta_schedule = "linear"
    want = np.cumprod(1.0 - np.linspace(1e-4, 2e-2, n))
    np.testing.assert_allclose(dp.ddpm_alphas_bar(config), want, rtol=1e-12)
    sigmas = dp.ddpm_sigmas(config)
    assert sigmas[-1] == 0.0 and np.all(np.diff(sigmas) < 0)


# ---------------------------------------------------------------------------- losses vs numpy
def _net_and_params(config, task, key=0, scale=1.0):
    net = dp.noise_net(config, task)
    params = dp.init_noise_net(jax.random.key(key), config, task)
    return net, jax.tree.map(lambda p: p * scale, params)


def test_ddpm_denoising_loss_matches_numpy(task):
    config = small(diffusion_ql.default_config())
    net, params = _net_and_params(config, task)
    obs = np.asarray(task.data["observations"][:40])
    actions = RNG.uniform(-1, 1, size=(40, 1)).astype(np.float32)
    key = jax.random.key(3)
    got = jax.jit(lambda o, a, k: dp.denoising_loss(net, params, o, a, k, config))(obs, actions,
                                                                                   key)
    # Eq. 2 with the documented draws: k_i, k_eps = split(key), i ~ U{0..N-1}, eps ~ N(0, I).
    k_i, k_eps = jax.random.split(key)
    i = np.asarray(jax.random.randint(k_i, (40,), 0, 5, jnp.int32))
    eps = np.asarray(jax.random.normal(k_eps, (40, 1), jnp.float32), np.float64)
    ab = _dql_vp_alphas_bar(5)[i][:, None]
    a_i = np.sqrt(ab) * actions + np.sqrt(1 - ab) * eps
    pred = np.asarray(jax.jit(net.apply)(params, jnp.asarray(a_i, jnp.float32), i, obs))
    np.testing.assert_allclose(got, ((eps - pred) ** 2).mean(-1), rtol=2e-4, atol=1e-6)


def test_edm_denoising_loss_matches_numpy(task):
    config = small(diffusion_ql.default_config(), parameterization="edm")
    net, params = _net_and_params(config, task)
    obs = np.asarray(task.data["observations"][:30])
    actions = RNG.uniform(-1, 1, size=(30, 1)).astype(np.float32)
    key = jax.random.key(4)
    got = dp.denoising_loss(net, params, obs, actions, key, config)
    k_sigma, k_noise = jax.random.split(key)
    sigma = np.exp(-1.2 + 1.2 * np.asarray(jax.random.normal(k_sigma, (30,)), np.float64))
    n = np.asarray(jax.random.normal(k_noise, (30, 1)), np.float64)
    sd = 0.5  # EDM Table 1: c_skip, c_out, c_in, c_noise and lambda = 1 / c_out^2
    c_skip, c_out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / np.sqrt(sigma ** 2 + sd ** 2)
    c_in, c_noise = 1 / np.sqrt(sigma ** 2 + sd ** 2), np.log(sigma) / 4
    x = actions + sigma[:, None] * n
    f = np.asarray(jax.jit(net.apply)(params, jnp.asarray(c_in[:, None] * x, jnp.float32),
                             jnp.asarray(c_noise, jnp.float32), obs), np.float64)
    d = c_skip[:, None] * x + c_out[:, None] * f
    want = ((d - actions) ** 2).sum(-1) / c_out ** 2
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)


def test_q_loss_and_backup_match_numpy():
    q = RNG.normal(size=(2, 64)).astype(np.float32)
    for first in (True, False):
        j, k = (0, 1) if first else (1, 0)
        got = diffusion_ql.q_loss(jnp.asarray(q), jnp.asarray(first))
        np.testing.assert_allclose(got, -q[j].mean() / np.abs(q[k]).mean(), rtol=1e-5)
        grad = jax.grad(diffusion_ql.q_loss)(jnp.asarray(q), jnp.asarray(first))
        np.testing.assert_array_equal(grad[k], 0.0)  # the magnitude is a constant
        np.testing.assert_allclose(grad[j], -1.0 / (64 * np.abs(q[k]).mean()), rtol=1e-5)
    target = RNG.normal(size=(2, 16, 10)).astype(np.float32)
    np.testing.assert_allclose(diffusion_ql.backup_values(jnp.asarray(target), True),
                               np.minimum(target[0].max(1), target[1].max(1)))
    np.testing.assert_allclose(diffusion_ql.backup_values(jnp.asarray(target[:, :, :1]), False),
                               np.minimum(target[0, :, 0], target[1, :, 0]))


# ---------------------------------------------------------------------------- the reverse chain
def test_notes_posterior_mean_is_eq1():
    """x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab), then mu = c1 x0 + c2 x_t (the notes) equals
    Eq. 1's mean x_t / sqrt(alpha) - beta / sqrt(alpha (1 - ab)) eps at every level."""
    ab = _dql_vp_alphas_bar(5)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    alpha = ab / ab_prev
    beta = 1 - alpha
    x_t, eps = RNG.normal(size=(2, 5, 7))
    x0 = (x_t - np.sqrt(1 - ab)[:, None] * eps) / np.sqrt(ab)[:, None]
    c1 = (np.sqrt(ab_prev) * beta / (1 - ab))[:, None]
    c2 = (np.sqrt(alpha) * (1 - ab_prev) / (1 - ab))[:, None]
    eq1 = x_t / np.sqrt(alpha)[:, None] - (beta / np.sqrt(alpha * (1 - ab)))[:, None] * eps
    np.testing.assert_allclose(c1 * x0 + c2 * x_t, eq1, rtol=1e-12, atol=1e-12)


def _numpy_chain(net, params, obs, key, n=5, clip_every_step=True):
    """Diffusion-QL's p_sample_loop in numpy (float64): a_N ~ N(0, I); per level i = N..1 the
    clipped x0 reconstruction, the posterior mean and sqrt(beta_tilde) z (no noise at i = 1),
    with the draws `dp.sample_actions` documents. Also returns the per-step x0 estimates."""
    ab = _dql_vp_alphas_bar(n)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    beta = 1 - ab / ab_prev
    k_init, k_chain = jax.random.split(key)
    _, k_steps = jax.random.split(k_chain)
    shape = (obs.shape[0], 1)
    x = np.asarray(jax.random.normal(k_init, shape, jnp.float32), np.float64)
    x0s, apply = [], jax.jit(net.apply)
    for j, i in enumerate(range(n - 1, -1, -1)):
        eps = np.asarray(apply(params, jnp.asarray(x, jnp.float32),
                                   jnp.full((shape[0],), i, jnp.float32), obs), np.float64)
        x0 = (x - np.sqrt(1 - ab[i]) * eps) / np.sqrt(ab[i])
        if clip_every_step:
            x0 = np.clip(x0, -1, 1)
        x0s.append(x0)
        mean = (np.sqrt(ab_prev[i]) * beta[i] * x0
                + np.sqrt(1 - beta[i]) * (1 - ab_prev[i]) * x) / (1 - ab[i])
        var = beta[i] * (1 - ab_prev[i]) / (1 - ab[i])
        z = np.asarray(samplers.step_noise(k_steps, j, jnp.zeros(shape)), np.float64)
        x = mean + np.sqrt(var) * z
    return np.clip(x, -1, 1), np.stack(x0s)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_chain_matches_numpy_and_clips_every_step(task, scale):
    """The chain equals the paper's reverse process with the code's clipping. Scaled-up
    weights push the x0 estimates far outside [-1, 1]: every step must clip (clipping only
    the final action gives another result)."""
    config = small(diffusion_ql.default_config())
    net, params = _net_and_params(config, task, key=1, scale=scale)
    obs = np.asarray(task.data["observations"][:64])
    key = jax.random.key(7)
    got = np.asarray(jax.jit(lambda o, k: dp.sample_actions(net, params, o, k, config))(obs, key))
    want, x0s = _numpy_chain(net, params, obs, key)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    assert np.all(np.abs(got) <= 1.0)
    if scale > 1:
        unclipped, raw_x0s = _numpy_chain(net, params, obs, key, clip_every_step=False)
        assert np.abs(raw_x0s).max() > 5.0  # the estimates leave the box ...
        assert np.all(np.abs(x0s) <= 1.0)  # ... and each step clips them back
        assert np.abs(np.clip(unclipped, -1, 1) - want).max() > 0.1


def test_edm_heun_chain_stays_in_the_box(task):
    config = small(diffusion_ql.default_config(), parameterization="edm")
    net, params = _net_and_params(config, task, key=2, scale=30.0)
    obs = task.data["observations"][:64]
    out = dp.sample_actions(net, params, obs, jax.random.key(0), config)
    assert np.all(np.abs(np.asarray(out)) <= 1.0)
    raw = dp.denoiser(net, params, obs, config, clip=False)(jnp.zeros((64, 1)),
                                                            jnp.full((64,), 1.0))
    assert np.abs(np.asarray(raw)).max() > 1.0  # clipping is what keeps the chain in the box


class LinearEps(nn.Module):
    """eps_theta(a, s, i) = w a: the chain is then linear in a with coefficients affine in w."""
    action_dim: int = 1

    @nn.compact
    def __call__(self, x, c_noise, obs):
        return self.param("w", nn.initializers.ones, ()) * x


def test_gradients_flow_through_every_step_hand_derived():
    """N = 2, eps = w a (no clipping active): a_{i-1} = (p_i + q_i w) a_i + r_i z_i with
    p_i = c1_i / sqrt(ab_i) + c2_i, q_i = -c1_i sqrt(1 - ab_i) / sqrt(ab_i), r_i =
    sqrt(beta_tilde_i) (r_1 = 0). So d a_0 / dw = q_1 a_1 + (p_1 + q_1 w) q_2 a_2 and
    d a_0 / d a_2 = (p_1 + q_1 w)(p_2 + q_2 w): both need the gradient of each step."""
    config = diffusion_ql.default_config()
    config.num_diffusion_steps = 2
    ab = _dql_vp_alphas_bar(2)
    ab_prev = np.array([1.0, ab[0]])
    beta = 1 - ab / ab_prev
    c1, c2 = np.sqrt(ab_prev) * beta / (1 - ab), np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
    p, q = c1 / np.sqrt(ab) + c2, -c1 * np.sqrt(1 - ab) / np.sqrt(ab)
    r = np.sqrt(beta * (1 - ab_prev) / (1 - ab))
    net, obs, key, w = LinearEps(), jnp.zeros((6, 3)), jax.random.key(5), 0.9

    def chain(w, a_top):  # the library chain started from a given a_2 (VP scale)
        sigma_top = np.sqrt((1 - ab[1]) / ab[1])
        denoise = dp.denoiser(net, {"params": {"w": w}}, obs, config)
        out, _ = samplers.sample_ancestral(key, denoise, (6, 1), dp.ddpm_sigmas(config),
                                           x_init=a_top * np.sqrt(1 + sigma_top ** 2))
        return out

    a2 = 0.3 * np.asarray(jax.random.normal(jax.random.key(9), (6, 1)), np.float64)
    z2 = np.asarray(samplers.step_noise(jax.random.split(key)[1], 0, jnp.zeros((6, 1))))
    a1 = (p[1] + q[1] * w) * a2 + r[1] * z2
    a0 = (p[0] + q[0] * w) * a1
    for a, i in ((a2, 1), (a1, 0)):  # the x0 estimates stay inside the box: no clipping
        assert np.abs(a * (1 - np.sqrt(1 - ab[i]) * w) / np.sqrt(ab[i])).max() < 1.0
    np.testing.assert_allclose(chain(jnp.float32(w), jnp.asarray(a2, jnp.float32)), a0,
                               rtol=1e-4, atol=1e-6)
    g_w = jax.grad(lambda w: chain(w, jnp.asarray(a2, jnp.float32)).sum())(jnp.float32(w))
    np.testing.assert_allclose(g_w, (q[0] * a1 + (p[0] + q[0] * w) * q[1] * a2).sum(),
                               rtol=1e-4)
    g_a = jax.grad(lambda a: chain(jnp.float32(w), a).sum())(jnp.asarray(a2, jnp.float32))
    np.testing.assert_allclose(g_a, (p[0] + q[0] * w) * (p[1] + q[1] * w), rtol=1e-4)


def test_dql_actor_gradient_through_chain_is_finite_and_reaches_every_layer(task):
    """L_q alone (eta, no L_d) differentiates through the N = 5 sampling steps into every
    parameter of the noise network."""
    config = small(diffusion_ql.default_config())
    net, params = _net_and_params(config, task)
    critic = diffusion_ql._critic(config)
    obs = task.data["observations"][:32]
    critic_params = critic.init(jax.random.key(1), obs[0], jnp.zeros(1))

    def loss(p):
        actions = dp.sample_actions(net, p, obs, jax.random.key(2), config)
        return diffusion_ql.q_loss(critic.apply(critic_params, obs, actions), True)

    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), path
        assert np.abs(g).max() > 0, path


# ---------------------------------------------------------------------------- selection
def test_choose_argmax_and_softmax_frequencies():
    actions = jnp.asarray(RNG.normal(size=(3, 4, 2)).astype(np.float32))
    logits = jnp.asarray(np.log([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1],
                                 [0.25, 0.25, 0.25, 0.25]]).astype(np.float32))
    np.testing.assert_array_equal(dp.choose(None, actions, logits),
                                  actions[np.arange(3), np.argmax(np.asarray(logits), -1)])
    draws = jax.vmap(lambda k: dp.choose(k, actions, logits))(
        jax.random.split(jax.random.key(0), 20000))  # [20000, 3, 2]
    for b in range(3):
        index = np.argmax(np.all(np.asarray(draws[:, b, None]) == np.asarray(actions[b]), -1),
                          -1)
        freq = np.bincount(index, minlength=4) / 20000
        np.testing.assert_allclose(freq, np.exp(np.asarray(logits[b])), atol=0.015)


def test_idql_weights_match_numpy():
    q = RNG.normal(size=(5, 16)).astype(np.float32)
    v = RNG.normal(size=5).astype(np.float32)
    adv = q - v[:, None]
    tau_w = np.where(adv < 0, 0.3, 0.7)
    got = idql.selection_log_weights(jnp.asarray(q), jnp.asarray(v), 0.7, "expectile")
    want = tau_w / np.maximum(np.abs(adv), 1e-6)  # IDQL Sec. 4.2
    np.testing.assert_allclose(jax.nn.softmax(got), want / want.sum(-1, keepdims=True),
                               rtol=1e-4)
    got = idql.selection_log_weights(jnp.asarray(q), jnp.asarray(v), 0.7, "expectile_sign")
    np.testing.assert_allclose(jax.nn.softmax(got), tau_w / tau_w.sum(-1, keepdims=True),
                               rtol=1e-5)
    np.testing.assert_array_equal(
        idql.selection_log_weights(jnp.asarray(q), jnp.asarray(v), 0.7, "argmax"), q)


@pytest.mark.parametrize("algo", [diffusion_ql, idql])
def test_select_action_picks_the_argmax_q_candidate(task, algo):
    """Without a key: the candidate with the largest min_k Q'_k among those drawn with the
    fixed key; with a key and the argmax rule, that of the key's candidates. Without a key, act
    is that choice in Pendulum's torque box [-2, 2]."""
    config = small(algo.default_config())
    obs = task.data["observations"][:6]
    critic = algo._critic(config) if algo is diffusion_ql else algo._nets(config, task)[1]
    net = dp.noise_net(config, task)

    @jax.jit
    def chosen_and_argmax(init_key, key):
        state = algo.init(init_key, config, task)
        params = state.actor_params if algo is diffusion_ql else state.ema_params
        out = []
        for k in (None, key):
            states, k_sample = dp.states_and_key(obs, task, k)
            cands, rep = dp.candidates(net, params, states, jax.random.split(k_sample)[0],
                                       config, 8)
            q = critic.apply(state.target_critic_params, rep, cands.reshape(-1, 1)).min(0)
            want = cands[jnp.arange(6), jnp.argmax(q.reshape(6, 8), axis=1)]
            got = algo.select_action(state, obs, config, task, k, selection="argmax")
            out.append((got, want))
        return out, algo.act(state, obs, config, task)

    (none, keyed), env_action = chosen_and_argmax(jax.random.key(0), jax.random.key(3))
    for got, want in (none, keyed):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(env_action, 2.0 * none[0], rtol=1e-6)


# ---------------------------------------------------------------------------- protocol
@pytest.mark.parametrize("algo", MODULES)
def test_config_rules_cover_every_field(algo):
    config = algo.default_config()
    assert config_rules.uncovered(config, algo) == []
    config_rules.check(config, algo)
    for field, bad in (("parameterization", "ddim"), ("num_diffusion_steps", 0),
                       ("time_dim", 7), ("vp_beta_min", 20.0)):
        broken = config.copy_and_resolve_references()
        broken[field] = bad
        with pytest.raises(ValueError, match=field.split(".")[0]):
            config_rules.check(broken, algo)


def test_vmap_over_seeds_equals_loop(task):
    """Diffusion BC on the EDM switch (edm_loss, Heun chain): vmapped over two seeds, each seed
    equals the same seed run alone."""
    config = small(diffusion_bc.default_config(), parameterization="edm")
    keys = jax.random.split(jax.random.key(1), 2)

    def run(key):
        state, metrics = diffusion_bc.update(diffusion_bc.init(key, config, task), config, task)
        return state.actor_params, metrics, diffusion_bc.act(
            state, task.data["observations"][:4], config, task, key)

    batched = jax.jit(jax.vmap(run))(keys)
    single = jax.jit(run)
    for i in range(2):
        for a, b in zip(jax.tree.leaves(single(keys[i])), jax.tree.leaves(batched)):
            np.testing.assert_allclose(a, np.asarray(b)[i], rtol=2e-4, atol=2e-6)


def test_diffusion_ql_update_is_deterministic_and_finite(task):
    """Diffusion-QL's full update (max-Q backup on): the same seed gives the same bits, and
    every parameter and metric is finite."""
    config = small(diffusion_ql.default_config(), max_q_backup=True, num_backup_actions=3)
    run = jax.jit(lambda k: diffusion_ql.update(diffusion_ql.init(k, config, task), config,
                                                task))
    first, again = run(jax.random.key(1)), run(jax.random.key(1))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
        assert np.all(np.isfinite(np.asarray(a, np.float64)))
    assert int(first[0].grad_step) == config.steps_per_update


def _two_mode_task(config, good_fraction=0.5):
    """The two-mode bandit's offline data (`envs.two_mode_bandit`): states ~ N(0, I_2) that
    carry no information; behaviour actions +0.8 (reward 1) with probability `good_fraction`,
    else -0.8 (reward 0.5), std 0.05; every transition terminal, so Q(s, a) = r(a)."""
    return common.make_task(two_mode_bandit.behaviour_dataset(size=2048,
                                                              good_fraction=good_fraction),
                            config)


def _trained(algo, config, task, key=0):
    return jax.jit(lambda k: algo.update(algo.init(k, config, task), config, task)[0])(
        jax.random.key(key))


def _states(n=2000):
    return jnp.asarray(np.random.default_rng(5).standard_normal((n, 2)), jnp.float32)


def test_two_mode_bandit_rewards_and_references():
    """r(a) at the modes and between, the dataset's rewards and its reference returns against
    the closed form E_U[-1,1][r] (Gaussian bump masses) checked by numerical integration."""
    params = two_mode_bandit.EnvParams()
    np.testing.assert_allclose(two_mode_bandit.reward(jnp.float32([[0.8], [-0.8], [0.0]]),
                                                      params),
                               [1.0 + 0.5 * np.exp(-32.0), 0.5 + np.exp(-32.0),
                                1.5 * np.exp(-8.0)], rtol=1e-5)
    grid = np.linspace(-1.0, 1.0, 200001)
    r = 1.0 * np.exp(-(grid - 0.8) ** 2 / 0.08) + 0.5 * np.exp(-(grid + 0.8) ** 2 / 0.08)
    assert abs(two_mode_bandit.expected_random_reward(params) - r.mean()) < 1e-6
    data = two_mode_bandit.behaviour_dataset(size=4000, good_fraction=0.25)
    a = data.arrays["actions"][:, 0]
    np.testing.assert_allclose(data.arrays["rewards"],
                               np.exp(-(a - 0.8) ** 2 / 0.08) + 0.5 * np.exp(-(a + 0.8) ** 2
                                                                            / 0.08), rtol=1e-5)
    good, bad, between = two_mode_bandit.mode_fractions(a)
    assert abs(good - 0.25) < 0.03 and abs(good - data.metadata["good_fraction"]) < 1e-3
    assert abs(good + bad - 1.0) < 1e-3 and between == 0.0
    env, env_params = envs.make("two-mode-bandit")  # one step, then the episode terminates
    obs, state = env.reset(jax.random.key(0), env_params)
    _, _, reward, terminated, _, _ = env.step(jax.random.key(1), state, jnp.float32([0.8]),
                                              env_params)
    assert obs.shape == (2,) and bool(terminated) and abs(float(reward) - 1.0) < 1e-6


def test_diffusion_bc_keeps_both_modes_where_bc_averages_them():
    """Two equally likely behaviour modes at +-0.8: diffusion BC (N = 5) puts 50% +- 20% of its
    samples within 0.25 of each mode and under 20% between them (|a| < 0.3); deterministic BC
    (MSE) answers their mean, near 0; Gaussian BC (IQL with beta = 0: the Gaussian likelihood
    unweighted) centres its Gaussian there too, its mean within 0.3 of 0 and over 20% of its
    samples at |a| < 0.3, where the data has none.

    Even an exact denoiser leaves some mass between the modes with N = 5: the last step maps
    a_1 (alpha_bar_1 = 0.80, sigma_1 = 0.5 in the sigma view) to E[a | a_1], which is between
    the modes for a_1 near 0 (about 5% of samples here; 18% for modes at +-0.6)."""
    config = small(diffusion_bc.default_config(), steps_per_update=4000, batch_size=128,
                   lr=1e-3, hidden_sizes=(64, 64))
    task = _two_mode_task(config)
    state = _trained(diffusion_bc, config, task)
    obs = _states()
    actions = np.asarray(diffusion_bc.act(state, obs, config, task, jax.random.key(1)))[:, 0]
    upper, lower, _ = two_mode_bandit.mode_fractions(actions)
    assert abs(upper - 0.5) < 0.2 and abs(lower - 0.5) < 0.2, (upper, lower)
    assert np.mean(np.abs(actions) < 0.3) < 0.2

    bc_config = small(bc.default_config(), steps_per_update=500, batch_size=128)
    bc_actions = np.asarray(bc.act(_trained(bc, bc_config, task), obs[:200], bc_config, task))
    assert np.abs(bc_actions).max() < 0.3, np.abs(bc_actions).max()

    gauss_config = small(iql.default_config(), steps_per_update=500, batch_size=128, lr=1e-3,
                         beta=0.0, actor_schedule="constant")
    gauss = _trained(iql, gauss_config, task)
    mean_actions = np.asarray(iql.act(gauss, obs[:200], gauss_config, task))
    samples = np.asarray(iql.act(gauss, obs, gauss_config, task, jax.random.key(1)))
    assert np.abs(mean_actions).max() < 0.3, np.abs(mean_actions).max()
    assert np.mean(np.abs(samples) < 0.3) > 0.2


@pytest.mark.slow  # trains Diffusion-QL and IDQL for 2000 steps each
def test_diffusion_ql_and_idql_concentrate_on_the_better_mode():
    """Equal odds of the modes, the one at +0.8 twice as rewarding. Diffusion-QL's L_q moves
    the policy itself: over 70% of its chain samples (one per state) and over 80% of its
    evaluation actions (softmax over Q of its candidates) near +0.8, under 10% near -0.8.
    IDQL's behaviour model keeps both modes (each over 15% of its samples); the choice among
    16 candidates does the concentrating: argmax Q puts over 90% near +0.8; the paper's
    expectile weights w = |tau - 1(Q < V)| / |Q - V| favour it by a factor of at least 3 over
    the bad mode (with the critics exact and every candidate on a mode, the factor is
    (tau / (1 - tau))^2 = 5.4 at tau = 0.7: V is the 0.7-expectile of {r_bad, r_good})."""
    obs = _states()
    dql_config = small(diffusion_ql.default_config(), steps_per_update=2000, batch_size=128,
                       lr=1e-3, num_candidates=16)
    task = _two_mode_task(dql_config)
    dql = _trained(diffusion_ql, dql_config, task)
    chain = dp.sample_actions(dp.noise_net(dql_config, task), dql.actor_params,
                              common.normalize_obs(obs, task), jax.random.key(3), dql_config)
    good, bad, _ = two_mode_bandit.mode_fractions(chain)
    assert good > 0.7 and bad < 0.1, (good, bad)
    good, bad, _ = two_mode_bandit.mode_fractions(
        diffusion_ql.act(dql, obs, dql_config, task, jax.random.key(1)))
    assert good > 0.8 and bad < 0.1, (good, bad)

    idql_config = small(idql.default_config(), steps_per_update=2000, batch_size=128, lr=1e-3,
                        num_candidates=16)
    state = _trained(idql, idql_config, task)
    behaviour = dp.sample_actions(dp.noise_net(idql_config, task), state.ema_params,
                                  common.normalize_obs(obs, task), jax.random.key(3),
                                  idql_config)
    good, bad, _ = two_mode_bandit.mode_fractions(behaviour)
    assert good > 0.15 and bad > 0.15, (good, bad)
    greedy = idql.select_action(state, obs, idql_config, task, jax.random.key(1),
                                selection="argmax")
    assert two_mode_bandit.mode_fractions(greedy)[0] > 0.9
    good, bad, _ = two_mode_bandit.mode_fractions(
        idql.act(state, obs, idql_config, task, jax.random.key(1)))
    assert good > 3 * bad, (good, bad)


# ---------------------------------------------------------------------------- short runs
# Mean normalized score of runner seed 0's 2 seeds after 2,000 gradient steps (64-64 networks,
# 50 evaluation episodes) on the tiny Pendulum dataset (random policy 0, scripted controller
# 100). Measured for runner seeds 0 / 1 / 2: diffusion BC 11.9 / 7.9 / 16.8, IDQL 17.1 / 12.2 /
# 18.8.
BEATS_RANDOM_BY = 5.0


@pytest.mark.parametrize("algo", [diffusion_bc, pytest.param(idql, marks=pytest.mark.slow)],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_short_run_beats_random(algo, task):
    from launch import runner
    c = algo.default_config()
    c.hidden_sizes = (64, 64)
    if "critic_hidden_sizes" in c:
        c.critic_hidden_sizes = (64, 64)
    c.num_updates, c.steps_per_update = 2, 1000
    c.log_every = c.eval_every = 2
    c.eval_episodes = 50
    result = runner.train(algo, c, task, num_seeds=2, progress=False)
    score = np.asarray(result.final["eval/normalized_score"])
    assert score.shape == (2,) and score.mean() >= BEATS_RANDOM_BY, score
