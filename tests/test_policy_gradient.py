"""REINFORCE, A2C and TRPO: losses against numpy, CG and Fisher-vector products against dense
linear algebra, returns on hand-computed cases, vmap == loop, determinism, sweepable leaves,
and short CartPole runs that beat the random policy (~22)."""
import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.core import networks, spaces
from algorithms.core.evaluation import evaluate_episodes
from algorithms.core.returns import gae
from algorithms.online import _onpolicy as op
from algorithms.online import a2c, reinforce, trpo
from conftest import run_updates

ALGOS = {"reinforce": reinforce, "a2c": a2c, "trpo": trpo}


@pytest.fixture(scope="module")
def cartpole():
    return envs.Task(*envs.make("CartPole-v1"))


@pytest.fixture(scope="module")
def pendulum():
    return envs.Task(*envs.make("Pendulum-v1"))


def _tiny(algo, **over):
    c = algo.default_config()
    c.num_envs, c.num_steps, c.eval_episodes = 2, 8, 2
    c.hidden_sizes = (8,)
    if algo is trpo:
        c.vf_epochs, c.vf_minibatches = 1, 2
    if algo is reinforce:
        c.vf_steps = 2
    for k, v in over.items():
        c[k] = v
    return c


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(tree)]


# ------------------------------------------------------------------ losses vs numpy
def test_reinforce_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logp, g, b = (rng.normal(size=13).astype(np.float32) for _ in range(3))
    expected = np.array([-(gi - bi) * li for li, gi, bi in zip(logp, g, b)])
    for fn in (reinforce.reinforce_loss, jax.jit(reinforce.reinforce_loss)):
        np.testing.assert_allclose(fn(logp, g, b), expected, rtol=1e-6, atol=1e-6)
    # returns and baselines are constants: d loss / d log pi = -(G - b), nothing else flows.
    dl, dg, db = jax.grad(lambda *a: reinforce.reinforce_loss(*a).sum(), argnums=(0, 1, 2))(
        logp, g, b)
    np.testing.assert_allclose(dl, b - g, rtol=1e-6)
    assert not np.any(dg) and not np.any(db)


def test_a2c_loss_matches_numpy():
    rng = np.random.default_rng(1)
    logp, adv, v, ret, ent = (rng.normal(size=11).astype(np.float32) for _ in range(5))
    vf, ec = 0.5, 0.01
    total, parts = jax.jit(lambda *a: a2c.a2c_loss(*a, vf_coef=vf, ent_coef=ec))(
        logp, adv, v, ret, ent)
    pol = -adv * logp
    val = (ret - v) * (ret - v)
    np.testing.assert_allclose(parts["policy"], pol, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(parts["value"], val, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(parts["entropy"], ent)
    np.testing.assert_allclose(total, pol + vf * val - ec * ent, rtol=1e-5, atol=1e-6)
    # Gradients: policy term only through log pi, value term only through V.
    grads = jax.grad(lambda *a: a2c.a2c_loss(*a, vf_coef=vf, ent_coef=ec)[0].sum(),
                     argnums=(0, 1, 2, 3))(logp, adv, v, ret, ent)
    np.testing.assert_allclose(grads[0], -adv, rtol=1e-6)
    assert not np.any(grads[1]) and not np.any(grads[3])
    np.testing.assert_allclose(grads[2], -2 * vf * (ret - v), rtol=1e-5, atol=1e-6)


def test_trpo_surrogate_matches_numpy():
    rng = np.random.default_rng(2)
    logp, old, adv = (rng.normal(size=9).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(trpo.surrogate_objective(logp, old, adv),
                               np.exp(logp) / np.exp(old) * adv, rtol=1e-5)


# ------------------------------------------------------------------ CG and Fisher products
def test_conjugate_gradient_solves_random_spd_system():
    rng = np.random.default_rng(3)
    n = 12
    m = rng.normal(size=(n, n))
    a = (m @ m.T / n + 0.5 * np.eye(n)).astype(np.float32)
    b = rng.normal(size=n).astype(np.float32)
    x = jax.jit(lambda b: trpo.conjugate_gradient(lambda v: a @ v, b, iters=3 * n, tol=1e-12))(b)
    np.testing.assert_allclose(x, np.linalg.solve(a.astype(np.float64), b), rtol=2e-3, atol=2e-4)
    # Few iterations: not yet converged, but the residual has decreased.
    x2 = trpo.conjugate_gradient(lambda v: a @ v, jnp.asarray(b), iters=2, tol=0.0)
    assert np.linalg.norm(a @ np.asarray(x2) - b) < np.linalg.norm(b)
    # A zero right-hand side returns zero (tolerance freeze; no 0/0).
    np.testing.assert_array_equal(trpo.conjugate_gradient(lambda v: a @ v, jnp.zeros(n), iters=5),
                                  np.zeros(n))


@pytest.mark.parametrize("discrete", [True, False])
def test_fisher_vector_product_equals_dense_kl_hessian(discrete):
    obs = jax.random.normal(jax.random.key(0), (5, 3))
    net = (networks.CategoricalPolicy((4,), 3) if discrete else networks.GaussianPolicy((4,), 2))
    params = net.init(jax.random.key(1), obs)
    # Move away from the (near-uniform) initialisation so the Fisher is not degenerate.
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    flat = flat + 0.5 * jax.random.normal(jax.random.key(2), flat.shape)
    params = unravel(flat)
    old = net.apply(params, obs)

    def kl_flat(f):
        return old.kl_divergence(net.apply(unravel(f), obs)).mean()

    v = jax.random.normal(jax.random.key(3), flat.shape)
    dense = jax.jit(jax.hessian(kl_flat))(flat) @ v
    fvp = jax.jit(lambda p, v: jax.flatten_util.ravel_pytree(trpo.fisher_vector_product(
        lambda q: kl_flat(jax.flatten_util.ravel_pytree(q)[0]), p, unravel(v),
        damping=0.1))[0])(params, v)
    np.testing.assert_allclose(fvp, dense + 0.1 * v, rtol=1e-4, atol=1e-5)
    if discrete:  # and it is the Fisher: mean_s sum_a pi(a|s) g_a g_a^T, g_a = grad log pi(a|s)
        probs = np.asarray(old.probs)
        jac = jax.jit(jax.jacobian(
            lambda f: jax.nn.log_softmax(net.apply(unravel(f), obs).logits)))(flat)
        fisher = np.einsum("sa,sai,saj->ij", probs, np.asarray(jac), np.asarray(jac)) / 5
        np.testing.assert_allclose(fvp, fisher @ np.asarray(v) + 0.1 * np.asarray(v),
                                   rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ returns
def test_reward_to_go_bootstraps_truncation_and_rollout_end():
    # One env, T = 4: episode ends by termination at t=1, truncated at t=3.
    f = lambda x: jnp.asarray(x, jnp.float32)[:, None]  # noqa: E731
    batch = op.Rollout(obs=None, actions=None, log_probs=None, rewards=f([1, 2, 3, 4]),
                       terminated=f([0, 1, 0, 0]) > 0, truncated=f([0, 0, 0, 1]) > 0,
                       dones=f([0, 1, 0, 1]) > 0, next_obs=None)
    nv = f([10, 20, 30, 40])  # v(next obs); 40 = v(final obs of the truncated episode)
    g = 0.9
    ret, mask = reinforce.reward_to_go(batch, nv, g, True)
    np.testing.assert_allclose(ret[:, 0], [1 + g * 2, 2, 3 + g * (4 + g * 40), 4 + g * 40],
                               rtol=1e-6)
    np.testing.assert_array_equal(mask[:, 0], 1)
    # An unfinished last episode: bootstrap from v(s_T), or mask it out.
    batch = batch.replace(truncated=f([0, 0, 0, 0]) > 0, dones=f([0, 1, 0, 0]) > 0)
    ret, mask = reinforce.reward_to_go(batch, nv, g, True)
    np.testing.assert_allclose(ret[2:, 0], [3 + g * (4 + g * 40), 4 + g * 40], rtol=1e-6)
    ret, mask = reinforce.reward_to_go(batch, nv, g, False)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0])
    np.testing.assert_allclose(ret[:2, 0], [1 + g * 2, 2], rtol=1e-6)


def test_reward_to_go_keeps_float64_under_x64():
    """gamma and the masks take the rewards' dtype: float64 returns to float64 accuracy."""
    rng = np.random.default_rng(6)
    t, n, g = 50, 3, 0.99
    r, nv = rng.normal(size=(t, n)), rng.normal(size=(t, n))
    dones = rng.random((t, n)) < 0.1
    trunc = dones & (rng.random((t, n)) < 0.5)
    want, acc = np.zeros((t, n)), nv[-1]
    for i in reversed(range(t)):
        acc = r[i] + g * trunc[i] * nv[i] + g * (1 - dones[i]) * acc
        want[i] = acc
    with jax.enable_x64(True):
        batch = op.Rollout(obs=None, actions=None, log_probs=None, rewards=jnp.asarray(r),
                           terminated=jnp.asarray(dones & ~trunc), truncated=jnp.asarray(trunc),
                           dones=jnp.asarray(dones), next_obs=None)
        for partial in (True, False):
            ret, mask = jax.jit(reinforce.reward_to_go, static_argnums=(2, 3))(
                batch, jnp.asarray(nv), g, partial)
            assert ret.dtype == mask.dtype == jnp.float64
        ret, _ = reinforce.reward_to_go(batch, jnp.asarray(nv), g, True)
        np.testing.assert_allclose(np.asarray(ret), want, rtol=1e-13, atol=1e-13)


def test_gae_lambda_one_is_a3c_n_step_return():
    """A2C's default: R_t = sum_k gamma^k r_{t+k} + gamma^{T-t} V(s_T), cut at episode ends."""
    rng = np.random.default_rng(4)
    t_max, gamma = 5, 0.9
    r = rng.normal(size=t_max).astype(np.float32)
    v = rng.normal(size=t_max).astype(np.float32)
    v_last = np.float32(1.7)
    done = np.array([0, 0, 1, 0, 0], bool)
    next_v = np.append(v[1:], v_last)
    _, ret = gae(r, v, next_v, done, done, gamma, 1.0)
    expected, acc = [], v_last  # Mnih et al. 2016, Algorithm S3: R <- r_i + gamma R backwards
    for i in reversed(range(t_max)):
        acc = r[i] + gamma * (0.0 if done[i] else acc)
        expected.append(acc)
    np.testing.assert_allclose(ret, expected[::-1], rtol=1e-5)


# ------------------------------------------------------------------ protocol
@pytest.mark.parametrize("name", list(ALGOS))
def test_num_updates_follows_total_timesteps(name):
    c = ALGOS[name].default_config()
    c.total_timesteps = 10 * c.num_envs * c.num_steps
    assert c.num_updates == 10


# The fast tests cover continuous actions through A2C on Pendulum (with observation
# normalization); every algorithm's continuous path runs in test_continuous_actions_run (slow).
FAST_ENV = {"reinforce": "CartPole-v1", "a2c": "Pendulum-v1", "trpo": "CartPole-v1"}


@functools.lru_cache(maxsize=None)
def _programs(name):
    """(single, vmapped) jitted runs of 2 tiny updates: run(key, hp_scale) -> (state, metrics).

    hp_scale multiplies each SWEEPABLE leaf of state.hparams (a traced input: no recompiles).
    """
    algo = ALGOS[name]
    env_name = FAST_ENV[name]
    c = _tiny(algo, normalize_obs=env_name == "Pendulum-v1")
    task = envs.Task(*envs.make(env_name))

    def run(key, hp_scale):
        state = algo.init(key, c, task)
        state = state.replace(hparams={k: v * hp_scale[k] for k, v in state.hparams.items()})
        return jax.lax.scan(lambda s, _: algo.update(s, c, task), state, None, length=2)

    return jax.jit(run), jax.jit(jax.vmap(run))


def _ones(algo, *lead):
    return {k: jnp.ones(lead, jnp.float32) for k in algo.SWEEPABLE}


@pytest.mark.parametrize("name", list(ALGOS))
def test_vmap_over_seeds_equals_loop_and_is_deterministic(name):
    algo = ALGOS[name]
    single, vmapped = _programs(name)
    keys = jax.random.split(jax.random.key(7), 2)
    vstate, vmetrics = vmapped(keys, _ones(algo, 2))
    for i in range(2):
        state, metrics = single(keys[i], _ones(algo))
        for a, b in zip(_leaves(state), _leaves(vstate)):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)
        for k in metrics:
            np.testing.assert_allclose(metrics[k], vmetrics[k][i], rtol=1e-5, atol=1e-5)
    assert not np.array_equal(*np.asarray(vstate.obs))  # seeds differ
    again, _ = single(keys[1], _ones(algo))  # same seed -> identical, bit for bit
    for a, b in zip(_leaves(again), _leaves(state)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(ALGOS))
def test_act_gives_the_mode_without_a_key_and_samples_with_one(name):
    algo = ALGOS[name]
    single, _ = _programs(name)
    state, _ = single(jax.random.key(0), _ones(algo))
    c = _tiny(algo, normalize_obs=FAST_ENV[name] == "Pendulum-v1")
    task = envs.Task(*envs.make(FAST_ENV[name]))
    obs = jnp.repeat(task.env.reset(jax.random.key(1), task.params)[0][None], 512, axis=0)
    mode = np.asarray(jax.jit(lambda s, o: algo.act(s, o, c, task))(state, obs))
    sample = np.asarray(jax.jit(lambda s, o, k: algo.act(s, o, c, task, k))(
        state, obs, jax.random.key(2)))
    assert np.all(mode == mode[0])
    if spaces.is_discrete(task.env, task.params):
        assert mode.shape == sample.shape == (512,) and set(np.unique(sample)) == {0, 1}
    else:  # the Gaussian's mean and samples around it (std exp(log_std) ~ 1 after 2 updates)
        assert mode.shape == sample.shape == (512, 1)
        assert abs(float(sample.mean() - mode[0, 0])) < 0.2 and 0.5 < float(sample.std()) < 2


@pytest.mark.parametrize("name", list(ALGOS))
def test_sweepable_leaves_change_the_update(name):
    algo = ALGOS[name]
    single, _ = _programs(name)
    key = jax.random.key(0)
    base = _leaves(single(key, _ones(algo))[0])
    for hp in algo.SWEEPABLE:
        out = _leaves(single(key, {**_ones(algo), hp: jnp.float32(3.0)})[0])
        assert any(not np.array_equal(a, b) for a, b in zip(base, out)
                   if a.dtype.kind == "f"), hp


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ALGOS))
def test_continuous_actions_run(name, pendulum):
    algo = ALGOS[name]
    c = _tiny(algo, normalize_obs=True)
    state, metrics = run_updates(algo, c, pendulum, jax.random.key(0), 2)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    ev = jax.jit(lambda s, k: algo.evaluate(s, k, c, pendulum))(state, jax.random.key(1))
    assert np.isfinite(float(ev["return"])) and float(ev["length"]) == 200


# ------------------------------------------------------------------ learning
def test_random_policy_on_cartpole_is_about_22(cartpole):
    ev = evaluate_episodes(jax.random.key(0), cartpole.env, cartpole.params,
                           lambda o, k: jax.random.randint(k, o.shape[:1], 0, 2), 64)
    assert 15 < float(ev["return"]) < 30


# Budgets chosen so each run takes a few seconds; margins are > 4x the random policy.
LEARN = {"reinforce": dict(total_timesteps=40_000, num_envs=4, num_steps=128),
         "a2c": dict(total_timesteps=40_000),
         "trpo": dict(total_timesteps=40_000, num_envs=4, num_steps=256)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ALGOS))
def test_short_run_beats_random_on_cartpole(name, cartpole):
    algo = ALGOS[name]
    c = algo.default_config()
    for k, v in LEARN[name].items():
        c[k] = v
    c.eval_episodes = 16
    state, metrics = run_updates(algo, c, cartpole, jax.random.key(0), int(c.num_updates))
    ev = jax.jit(lambda s, k: algo.evaluate(s, k, c, cartpole))(state, jax.random.key(1))
    assert float(ev["return"]) > 100.0, (name, float(ev["return"]))
