"""BC, TD3+BC, AWAC and IQL: every public loss against an independent numpy formula, the
stop-gradients the papers prescribe, IQL's reward scaling against envs.datasets, TD3+BC's delayed
actor, determinism, an IQL expectile sweep, and short runs on the tiny Pendulum dataset that must
beat the random policy by a wide margin."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.core.networks import DiagGaussian
from algorithms.offline import awac, bc, common, iql, td3_bc
from envs import datasets as datasets_lib
from launch import runner
from tests.conftest import run_updates
from tests.offline_data import tiny_pendulum_dataset

RNG = np.random.default_rng(0)


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def task():
    """The tiny Pendulum dataset as an OfflineTask (observations normalized, as by default)."""
    return common.make_task(tiny_pendulum_dataset(), bc.default_config())


# ---------------------------------------------------------------------------- losses vs numpy
@pytest.mark.parametrize("jit", [False, True])
def test_expectile_loss_matches_numpy(jit):
    diff = RNG.normal(size=50).astype(np.float32)
    diff[:3] = 0.0
    for tau in (0.5, 0.7, 0.9):
        fn = jax.jit(iql.expectile_loss) if jit else iql.expectile_loss
        got = fn(jnp.asarray(diff), tau)
        want = np.array([(tau if u >= 0 else 1.0 - tau) * u * u for u in diff])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    # tau = 0.5 is half the squared error; the minimiser over a constant is the tau-expectile.
    np.testing.assert_allclose(iql.expectile_loss(jnp.asarray(diff), 0.5), 0.5 * diff ** 2,
                               rtol=1e-6)


def test_iql_value_loss_matches_numpy_and_stops_gradient_into_q():
    q = RNG.normal(size=(2, 40)).astype(np.float32)
    v = RNG.normal(size=40).astype(np.float32)
    got = iql.iql_value_loss(jnp.asarray(q), jnp.asarray(v), 0.8)
    want = np.empty(40)
    for i in range(40):
        u = min(q[0, i], q[1, i]) - v[i]
        want[i] = (0.8 if u > 0 else 0.2) * u ** 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    g_q = jax.grad(lambda q: iql.iql_value_loss(q, jnp.asarray(v), 0.8).sum())(jnp.asarray(q))
    np.testing.assert_array_equal(g_q, 0.0)
    g_v = jax.grad(lambda v: iql.iql_value_loss(jnp.asarray(q), v, 0.8).sum())(jnp.asarray(v))
    u = q.min(0) - v
    np.testing.assert_allclose(g_v, -2.0 * np.where(u > 0, 0.8, 0.2) * u, rtol=1e-5, atol=1e-6)


def test_iql_critic_loss_matches_numpy():
    q = RNG.normal(size=(2, 30)).astype(np.float32)
    next_v, r = RNG.normal(size=30).astype(np.float32), RNG.normal(size=30).astype(np.float32)
    disc = np.where(RNG.uniform(size=30) < 0.2, 0.0, 0.99).astype(np.float32)
    got = iql.iql_critic_loss(*map(jnp.asarray, (q, next_v, r, disc)))
    want = [sum((r[i] + disc[i] * next_v[i] - q[j, i]) ** 2 for j in range(2)) for i in range(30)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    g = jax.grad(lambda nv: iql.iql_critic_loss(jnp.asarray(q), nv, jnp.asarray(r),
                                                jnp.asarray(disc)).sum())(jnp.asarray(next_v))
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("beta,max_weight", [(3.0, 100.0), (0.5, 5.0), (0.0, 100.0)])
def test_awr_weights_and_policy_loss_match_numpy(beta, max_weight):
    adv = (3.0 * RNG.normal(size=64)).astype(np.float32)
    adv[0] = 1e4  # exp overflows in float32: the clip must still give max_weight, not inf
    got = iql.awr_weights(jnp.asarray(adv), beta, max_weight)
    with np.errstate(over="ignore"):  # exp(3e4) = inf in numpy too; min() clips it
        want = np.array([min(np.exp(np.float64(beta) * a), max_weight) for a in adv])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isfinite(np.asarray(got)).all()
    logp = RNG.normal(size=64).astype(np.float32)
    np.testing.assert_allclose(iql.awr_policy_loss(jnp.asarray(logp), got),
                               -want * logp, rtol=1e-5)
    g = jax.grad(lambda a: iql.awr_weights(a, beta, max_weight).sum())(jnp.asarray(adv))
    np.testing.assert_array_equal(g, 0.0)


def test_clipped_weights_are_exactly_the_clip():
    """min(exp(x), max) is max itself wherever exp(x) >= max: XLA's float32 exp(log(100)) is
    100.0000076, the clip must not be. Below the clip the weight is exp(x) unchanged."""
    log100 = np.float32(np.log(100.0))
    assert float(jnp.exp(jnp.minimum(jnp.float32(1e4), jnp.log(100.0)))) == 100.00000762939453
    x = np.array([log100, log100 + 1e-3, 5.0, 1e4, np.inf, 4.6, -2.0, -1e4], np.float32)
    for fn in (common.clipped_exp, jax.jit(common.clipped_exp)):
        got = np.asarray(fn(jnp.asarray(x), 100.0))
        np.testing.assert_array_equal(got[:5], np.float32(100.0))
        np.testing.assert_array_equal(got[5:], np.asarray(jnp.exp(jnp.asarray(x[5:]))))
    np.testing.assert_array_equal(common.clipped_exp(jnp.asarray(x), 20.0)[:5], np.float32(20.0))
    g = jax.grad(lambda x: common.clipped_exp(x, 100.0).sum())(jnp.asarray(x[:4]))
    np.testing.assert_array_equal(g, 0.0)  # finite: no inf * 0 at huge exponents
    # IQL (beta A) and AWAC (A / lambda) clip the same way, at their max_weight.
    adv = jnp.asarray([10.0, 1.0, -1.0])
    np.testing.assert_array_equal(iql.awr_weights(adv, 3.0, 100.0)[0], np.float32(100.0))
    np.testing.assert_array_equal(awac.awac_weights(adv, 1.0 / 3.0, 100.0)[0],
                                  np.float32(100.0))
    np.testing.assert_array_equal(iql.awr_weights(adv, 3.0, 100.0)[1:],
                                  jnp.exp(3.0 * adv[1:]))


def test_gaussian_log_prob_matches_numpy_density():
    mean = RNG.uniform(-1, 1, size=(20, 3)).astype(np.float32)
    log_std = RNG.uniform(-2, 0.5, size=3).astype(np.float32)
    a = RNG.uniform(-1, 1, size=(20, 3)).astype(np.float32)
    std = np.exp(log_std.astype(np.float64))
    density = np.prod(np.exp(-(a - mean) ** 2 / (2 * std ** 2)) / (np.sqrt(2 * np.pi) * std),
                      axis=1)
    policy = DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std))  # IQL's and AWAC's pi(.|s)
    np.testing.assert_allclose(policy.log_prob(jnp.asarray(a)), np.log(density), rtol=1e-5,
                               atol=1e-5)


def test_td3_bc_actor_loss_matches_numpy_and_lambda_has_no_gradient():
    q = RNG.normal(loc=-5.0, size=32).astype(np.float32)
    pi, a = RNG.uniform(-1, 1, size=(2, 32, 4)).astype(np.float32)
    alpha = 2.5
    got = td3_bc.td3_bc_actor_loss(jnp.asarray(q), jnp.asarray(pi), jnp.asarray(a), alpha)
    lam = alpha / (sum(abs(x) for x in q) / len(q))
    want = [-lam * q[i] + sum((pi[i, j] - a[i, j]) ** 2 for j in range(4)) / 4 for i in range(32)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # lambda is a constant (stop-gradient): d mean(loss) / d q_i = -lambda / B exactly.
    g = jax.grad(lambda q: td3_bc.td3_bc_actor_loss(q, jnp.asarray(pi), jnp.asarray(a),
                                                    alpha).mean())(jnp.asarray(q))
    np.testing.assert_allclose(g, np.full(32, -lam / 32), rtol=1e-5)


@pytest.mark.parametrize("lam", [1.0 / 3.0, 1.0, 10.0])
def test_awac_weights_and_actor_loss_match_numpy(lam):
    adv = (2.0 * RNG.normal(size=48)).astype(np.float32)
    adv[-1] = 1e3
    got = awac.awac_weights(jnp.asarray(adv), lam, 100.0)
    with np.errstate(over="ignore"):
        want = np.minimum(np.exp(np.float64(adv) / lam), 100.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    logp = RNG.normal(size=48).astype(np.float32)
    np.testing.assert_allclose(awac.awac_actor_loss(jnp.asarray(logp), got),
                               [-w * lp for w, lp in zip(want, logp)], rtol=1e-5)
    g = jax.grad(lambda w: awac.awac_actor_loss(jnp.asarray(logp), w).sum())(got)
    np.testing.assert_array_equal(g, 0.0)


def test_bc_loss_matches_numpy():
    pred, a = RNG.uniform(-1, 1, size=(2, 25, 3)).astype(np.float32)
    want = [sum((pred[i, j] - a[i, j]) ** 2 for j in range(3)) for i in range(25)]
    np.testing.assert_allclose(bc.bc_loss(jnp.asarray(pred), jnp.asarray(a)), want, rtol=1e-5)


# ---------------------------------------------------------------------------- pieces
def test_iql_reward_scale_from_episodes(task):
    ds = tiny_pendulum_dataset()
    returns = datasets_lib.episode_returns(ds)  # split by terminals | timeouts, not by obs
    spread, longest = iql.episode_stats(task.data)
    np.testing.assert_allclose(spread, returns.max() - returns.min(), rtol=1e-4)
    assert float(longest) == 200.0
    np.testing.assert_allclose(iql.reward_scale(task.data), 200.0 / np.ptp(returns), rtol=1e-4)
    np.testing.assert_allclose(iql.reward_scale(task.data, 1000.0), 1000.0 / np.ptp(returns),
                               rtol=1e-4)


def test_iql_cosine_actor_schedule():
    c = iql.default_config()
    c.num_updates, c.steps_per_update = 4, 50  # 200 actor steps in all
    lrs = [float(iql._actor_lr(c, 1e-3, jnp.int32(t))) for t in (0, 100, 200, 300)]
    np.testing.assert_allclose(lrs, [1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    c.actor_schedule = "constant"
    assert float(iql._actor_lr(c, 1e-3, jnp.int32(150))) == pytest.approx(1e-3)


def test_bad_settings_raise_clear_errors(task):
    c = td3_bc.default_config()
    c.steps_per_update = 3
    with pytest.raises(ValueError, match="multiple of policy_delay"):
        td3_bc.init(jax.random.key(0), c, task)
    c = iql.default_config()
    c.actor_schedule = "linear"
    with pytest.raises(ValueError, match="cosine, constant"):
        iql.init(jax.random.key(0), c, task)


def test_td3_bc_delayed_actor_and_determinism(task):
    """One update of 8 critic steps runs 4 actor steps (a static critic, critic + actor block);
    the same key gives bit-identical parameters, another key different ones."""
    c = td3_bc.default_config()
    c.hidden_sizes, c.batch_size, c.steps_per_update = (16, 16), 32, 8
    s1, m1 = run_updates(td3_bc, c, task, jax.random.key(3), 2)
    s2, _ = run_updates(td3_bc, c, task, jax.random.key(3), 2)
    s3, _ = run_updates(td3_bc, c, task, jax.random.key(4), 2)
    assert int(s1.critic_opt.count) == 16 and int(s1.actor_opt.count) == 8
    for x, y in zip(_leaves(s1), _leaves(s2)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(_leaves(s1.actor_params),
                                                        _leaves(s3.actor_params)))
    assert np.isfinite(np.asarray(m1["critic_loss"])).all()


# ---------------------------------------------------------------------------- learning
def _short_config(algo, gradient_steps):
    c = algo.default_config()
    c.hidden_sizes = (64, 64)
    c.num_updates, c.steps_per_update = 2, gradient_steps // 2
    c.log_every = c.eval_every = 2
    c.eval_episodes = 50  # 5 episodes scatter by +-25 points on Pendulum's random starts
    return c


# Mean normalized score of 2 seeds (random policy 0, scripted controller 100; BC of the data
# reaches ~70 when trained long). Calibrated on seed pairs 0-4: the lowest means were BC 39,
# TD3+BC 36, AWAC 35, IQL 34 (runner seed 0, used here: 62, 61, 56, 54). AWAC and IQL peak early
# on this data (their critics are far from converged after a few thousand steps: IQL dips, then
# reaches ~100 after 20-30k steps; AWAC's critic later extrapolates to unseen actions).
LEARNING = [(bc, 2000), (td3_bc, 3000), (awac, 2000)]
MIN_SCORE = 25.0


@pytest.mark.parametrize("algo,steps", LEARNING, ids=lambda x: getattr(x, "__name__", x))
def test_short_run_beats_random(algo, steps, task):
    result = runner.train(algo, _short_config(algo, steps), task, num_seeds=2, progress=False)
    score = np.asarray(result.final["eval/normalized_score"])
    assert score.shape == (2,)
    assert score.mean() >= MIN_SCORE, score


def test_iql_learns_and_expectile_sweep(task):
    """One program: expectile 0.5 / 0.7 (default) / 0.9, 2 seeds each. The default members must
    learn; the members differ, and a higher expectile gives a higher V (Eq. 5)."""
    result = runner.train(iql, _short_config(iql, 2000), task, num_seeds=2, progress=False,
                          sweep={"expectile": [0.5, 0.7, 0.9]})
    np.testing.assert_allclose(result.state.hparams["expectile"], [0.5, 0.5, 0.7, 0.7, 0.9, 0.9])
    score = np.asarray(result.final["eval/normalized_score"])
    assert score[2:4].mean() >= MIN_SCORE, score
    v_mean = np.asarray(result.final["v_mean"]).reshape(3, 2)
    assert (v_mean[0] < v_mean[1]).all() and (v_mean[1] < v_mean[2]).all(), v_mean
    value = _leaves(result.state.value_params)
    assert all(not np.array_equal(leaf[0], leaf[4]) for leaf in value)  # same seed, other tau
