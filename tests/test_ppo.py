"""PPO: losses against numpy, the adaptive-KL rule, learning on CartPole, vmap == loop, sweeps.

Compiles are the cost on a loaded 2-core machine (~15 s per PPO update program), so the fast
tests compile at XLA optimization level 0 (`_fast_jit`) and share a few compiled programs:
CartPole (categorical, clipped surrogate, default config) vmapped; Pendulum (Gaussian, KL
penalty, normalized observations, tiny config) vmapped and not.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.core.evaluation import evaluate_episodes
from algorithms.online import ppo
from launch import runner

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------- losses vs numpy
def _np_clipped(ratio, adv, eps):
    # Case analysis of Eq. 7: for A >= 0 the objective is min(r, 1 + eps) A; for A < 0 it is
    # max(r, 1 - eps) A.
    obj = np.where(adv >= 0, np.minimum(ratio, 1 + eps) * adv, np.maximum(ratio, 1 - eps) * adv)
    return -obj


@pytest.mark.parametrize("jit", [False, True])
def test_clipped_surrogate_loss_matches_numpy(jit):
    ratio = np.exp(RNG.normal(scale=0.3, size=257)).astype(np.float32)
    adv = RNG.normal(size=257).astype(np.float32)
    fn = jax.jit(ppo.clipped_surrogate_loss) if jit else ppo.clipped_surrogate_loss
    for eps in (0.1, 0.2):
        got = fn(jnp.asarray(ratio), jnp.asarray(adv), eps=eps)
        np.testing.assert_allclose(got, _np_clipped(ratio, adv, eps), rtol=1e-6, atol=1e-7)


def test_clipped_surrogate_gradient_vanishes_outside_the_trust_region():
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    ratio = jnp.array([1.5, 0.5, 0.5, 1.5])  # 1.5 with A>0 and 0.5 with A<0 are clipped
    g = jax.grad(lambda r: ppo.clipped_surrogate_loss(r, adv, eps=0.2).sum())(ratio)
    np.testing.assert_allclose(g, [0.0, -1.0, 0.0, 1.0])


@pytest.mark.parametrize("jit", [False, True])
def test_kl_penalty_loss_matches_numpy(jit):
    ratio = np.exp(RNG.normal(scale=0.3, size=100)).astype(np.float32)
    adv = RNG.normal(size=100).astype(np.float32)
    kl = RNG.exponential(0.01, size=100).astype(np.float32)
    fn = jax.jit(ppo.kl_penalty_loss) if jit else ppo.kl_penalty_loss
    got = fn(jnp.asarray(ratio), jnp.asarray(adv), jnp.asarray(kl), beta=3.0)
    np.testing.assert_allclose(got, 3.0 * kl - adv * ratio, rtol=1e-5, atol=1e-6)


def test_adaptive_kl_beta_rule():
    """Sec. 4: d < d_targ/1.5 halves beta, d > 1.5 d_targ doubles it, in between keeps it."""
    c = ppo.default_config()
    assert np.isclose(c.kl_max, 0.015) and np.isclose(c.kl_min, 0.01 / 1.5)
    c.kl_target = 0.02  # the bounds follow d_targ
    assert np.isclose(c.kl_max, 0.03) and np.isclose(c.kl_min, 0.02 / 1.5)
    step = jax.jit(lambda b, d: ppo.adapt_kl_beta(b, d, kl_min=0.01 / 1.5, kl_max=0.015))
    for kl, want in [(0.001, 0.5), (0.0066, 0.5), (0.007, 1.0), (0.01, 1.0), (0.015, 1.0),
                     (0.0151, 2.0), (0.5, 2.0)]:
        assert float(step(jnp.float32(1.0), jnp.float32(kl))) == want, kl


def test_value_loss_matches_numpy():
    v, v_old, tgt = (RNG.normal(size=64).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(ppo.value_loss(*map(jnp.asarray, (v, v_old, tgt))),
                               0.5 * (v - tgt) ** 2, rtol=1e-6)
    eps = 0.2
    v_clip = np.clip(v, v_old - eps, v_old + eps)
    want = 0.5 * np.maximum((v - tgt) ** 2, (v_clip - tgt) ** 2)
    got = ppo.value_loss(*map(jnp.asarray, (v, v_old, tgt)), clip_eps=eps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_value_loss_without_half_is_eq9_squared_error():
    v, v_old, tgt = (jnp.asarray(RNG.normal(size=64).astype(np.float32)) for _ in range(3))
    np.testing.assert_array_equal(ppo.value_loss(v, v_old, tgt, half=False),
                                  jnp.square(v - tgt))
    for eps in (None, 0.2):
        np.testing.assert_array_equal(ppo.value_loss(v, v_old, tgt, clip_eps=eps, half=False),
                                      2 * ppo.value_loss(v, v_old, tgt, clip_eps=eps))


def test_value_loss_choices_in_the_update():
    """vf_loss_half=False with vf_coef 0.25 is the default's 0.5 * 1/2 bit for bit (scaling by
    powers of 2 is exact); a vf_clip_eps set apart from clip_eps changes the critic's training."""
    env, params = envs.make("CartPole-v1")
    task = envs.Task(env, params)

    def run(**over):
        config = ppo.default_config()
        config.update(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1,
                      hidden_sizes=(8,), total_timesteps=10 * 2 * 16, **over)
        state = _fast_jit(lambda k: ppo.init(k, config, task))(jax.random.key(0))
        return _fast_jit(lambda s: jax.lax.scan(lambda c, _: ppo.update(c, config, task), s,
                                                None, length=2))(state)

    base, base_metrics = run()
    halved, halved_metrics = run(vf_loss_half=False, vf_coef=0.25)
    for a, b in zip(_key_free(base), _key_free(halved)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(halved_metrics["value_loss"], 2 * base_metrics["value_loss"])
    apart, _ = run(vf_clip_eps=1e-4)
    critic = lambda s: np.asarray(s.params["critic"]["params"]["MLP_0"]["Dense_0"]["kernel"])
    assert not np.array_equal(critic(apart), critic(base))


# ---------------------------------------------------------------------------- training
def _fast_jit(fn):
    """jit compiled at XLA CPU backend optimization level 0: the same function, about half the
    compile time of a PPO update on this CPU (runs ~5x slower, which tiny tests do not feel)."""
    compiled = {}

    def call(*args):
        if "fn" not in compiled:
            compiled["fn"] = jax.jit(fn).lower(*args).compile(
                compiler_options={"xla_backend_optimization_level": 0})
        return compiled["fn"](*args)

    return call


def _key_free(state):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def cartpole():
    env, params = envs.make("CartPole-v1")
    task = envs.Task(env, params)
    config = ppo.default_config()
    config.total_timesteps = 40 * 4 * 128  # 40 updates (the LR anneals over them)
    vinit = _fast_jit(jax.vmap(lambda k: ppo.init(k, config, task)))
    vupdate = jax.vmap(lambda s: ppo.update(s, config, task))
    vchunk = _fast_jit(lambda s: jax.lax.scan(lambda c, _: vupdate(c), s, None, length=2))
    return dict(task=task, config=config, vinit=vinit, vchunk=vchunk)


def test_cartpole_short_run_beats_random_policy(cartpole):
    """2e4 env steps, 2 seeds: greedy return >= 3x random (~22) on every seed, >= 150 mean."""
    task, config = cartpole["task"], cartpole["config"]
    state = cartpole["vinit"](jax.random.split(jax.random.key(0), 2))
    for _ in range(config.num_updates // 2):
        state, metrics = cartpole["vchunk"](state)
    eval_key = jax.random.key(7)
    ret = _fast_jit(jax.vmap(lambda s: ppo.evaluate(s, eval_key, config, task)))(state)
    ret = ret["return"]
    rand = float(_fast_jit(lambda k: evaluate_episodes(
        k, task.env, task.params, lambda obs, key: jax.random.randint(key, obs.shape[:1], 0, 2),
        num_episodes=32))(eval_key)["return"])
    assert 15 < rand < 30
    ret = np.asarray(ret)
    assert np.all(ret >= 3 * rand) and ret.mean() >= 150, (ret, rand)
    assert int(state.step[0]) == config.num_updates
    assert np.all(np.isfinite(np.asarray(metrics["value_loss"])))


@pytest.mark.parametrize("name,value", [("lr", 1e-3), ("clip_eps", 0.02), ("ent_coef", 0.5)])
def test_sweepable_hparams_change_training(cartpole, name, value):
    """Same key, one traced hyperparameter changed in the second member: different params."""
    key = jax.random.key(4)
    state = cartpole["vinit"](jnp.stack([key, key]))
    hp = dict(state.hparams)
    assert name in ppo.SWEEPABLE
    hp[name] = hp[name].at[1].set(value)
    out, metrics = cartpole["vchunk"](state.replace(hparams=hp))
    w = jax.tree.leaves(out.params)
    diff = max(float(jnp.max(jnp.abs(x[0] - x[1]))) for x in w)
    assert diff > 1e-5, name
    if name == "lr":  # the traced lr is what Adam used (annealed by 1 - step / num_updates)
        np.testing.assert_allclose(metrics["lr"][0], [2.5e-4, 1e-3], rtol=1e-6)


@pytest.fixture(scope="module")
def pendulum():
    """Box actions (Gaussian policy), observation normalization and the KL-penalty variant."""
    env, params = envs.make("Pendulum-v1")
    task = envs.Task(env, params)
    config = ppo.default_config()
    config.update(num_envs=4, num_steps=32, update_epochs=2, num_minibatches=2,
                  total_timesteps=10 * 4 * 32, normalize_obs=True, variant="kl_penalty",
                  kl_target=1.0, eval_episodes=4)
    update = lambda s: ppo.update(s, config, task)  # noqa: E731
    return dict(
        task=task, config=config,
        init=_fast_jit(lambda k: ppo.init(k, config, task)),
        vinit=_fast_jit(jax.vmap(lambda k: ppo.init(k, config, task))),
        chunk=_fast_jit(lambda s: jax.lax.scan(lambda c, _: update(c), s, None, length=2)),
        vchunk=_fast_jit(lambda s: jax.lax.scan(lambda c, _: jax.vmap(update)(c), s, None,
                                              length=2)))


def test_vmap_over_seeds_equals_loop_over_seeds(pendulum):
    keys = jax.random.split(jax.random.key(1), 2)
    vstate, vmetrics = pendulum["vchunk"](pendulum["vinit"](keys))
    for i in range(2):
        state, metrics = pendulum["chunk"](pendulum["init"](keys[i]))
        one = jax.tree.map(lambda x, i=i: x[i], vstate)
        for a, b in zip(_key_free(one), _key_free(state)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for k in metrics:
            np.testing.assert_allclose(vmetrics[k][:, i], metrics[k], rtol=1e-5, atol=1e-6)
    # Gaussian policy over the 1-d torque; running obs statistics over every observation seen.
    assert vstate.params["actor"]["params"]["log_std"].shape == (2, 1)
    np.testing.assert_allclose(vstate.env_state.obs_rms.count, [4 + 2 * 4 * 32] * 2, rtol=1e-5)
    # KL << kl_min = 1 / 1.5 after each update: beta halved twice (Sec. 4 rule).
    np.testing.assert_array_equal(vmetrics["kl_beta"], [[0.5, 0.5], [0.25, 0.25]])
    assert np.all(vmetrics["kl"] > 0) and np.all(vmetrics["kl"] < 0.1)


def test_same_seed_same_result(pendulum):
    key = jax.random.key(2)
    a, ma = pendulum["chunk"](pendulum["init"](key))
    b, mb = pendulum["chunk"](pendulum["init"](key))
    for x, y in zip(_key_free(a) + _key_free(ma), _key_free(b) + _key_free(mb)):
        np.testing.assert_array_equal(x, y)
    c, _ = pendulum["chunk"](pendulum["init"](jax.random.key(3)))
    assert not np.allclose(a.params["critic"]["params"]["MLP_0"]["Dense_0"]["kernel"],
                           c.params["critic"]["params"]["MLP_0"]["Dense_0"]["kernel"])
    # Deterministic evaluation (mean torque on normalized observations) is finite and negative.
    ev = _fast_jit(lambda s, k: ppo.evaluate(s, k, pendulum["config"], pendulum["task"]))(
        a, jax.random.key(0))
    assert np.isfinite(float(ev["return"])) and float(ev["return"]) < 0
    assert float(ev["length"]) == 200
    # act: raw observations in, the mean torque without a key, Gaussian samples with one.
    config, task = pendulum["config"], pendulum["task"]
    obs = jnp.tile(jnp.array([[1.0, 0.0, 0.5]]), (512, 1))
    mode = np.asarray(_fast_jit(lambda s, o: ppo.act(s, o, config, task))(a, obs))
    sample = np.asarray(_fast_jit(lambda s, o, k: ppo.act(s, o, config, task, k))(
        a, obs, jax.random.key(1)))
    assert mode.shape == sample.shape == (512, 1) and np.all(mode == mode[0])
    assert abs(float(sample.mean() - mode[0, 0])) < 0.2 and 0.5 < float(sample.std()) < 2


@pytest.mark.slow
def test_pendulum_learns_with_normalized_observations():
    """2.6e5 steps, 2 seeds (~2 min): greedy return well above random (about -1200)."""
    env, params = envs.make("Pendulum-v1")
    task = envs.Task(env, params)
    config = ppo.default_config()
    config.update(total_timesteps=262_144, normalize_obs=True, num_envs=16, lr=3e-4,
                  update_epochs=10, num_minibatches=32, ent_coef=0.0, reward_scale=0.1,
                  gamma=0.95, eval_every=128)
    result = runner.train(ppo, config, task, num_seeds=2, progress=False)
    key = jax.random.key(5)
    rand = float(evaluate_episodes(key, env, params,
                                   lambda obs, k: jax.random.uniform(k, (obs.shape[0], 1),
                                                                     minval=-2, maxval=2),
                                   num_episodes=32)["return"])
    assert rand < -900
    assert np.all(result.final["eval/return"] > rand + 600), (result.final["eval/return"], rand)
