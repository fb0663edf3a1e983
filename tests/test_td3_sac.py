"""TD3 and SAC: losses and targets against numpy and hand examples, the tanh-Gaussian log-density
against a numerical change of variables, truncation bootstrapping, vmap == loop, determinism,
sweepable leaves, and short Pendulum runs that beat the random policy."""
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.core.evaluation import evaluate_episodes
from algorithms.core.networks import TanhNormal
from algorithms.online import sac, td3
from launch import runner

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def pendulum():
    env, params = envs.make("Pendulum-v1")
    return envs.Task(env, params)


def tiny_config(algo, **overrides):
    c = algo.default_config()
    c.hidden_sizes = (32, 32)
    c.batch_size = 32
    c.learning_starts = 64
    c.num_steps = 4
    c.buffer_size = 512
    c.eval_episodes = 2
    c.total_timesteps = 64 + 2 * 4  # -> num_updates = 2
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(tree)]


# ---------------------------------------------------------------------------- targets
def test_clipped_double_q_target_hand_example():
    q1 = jnp.array([1.0, 5.0, -2.0])
    q2 = jnp.array([2.0, 3.0, -4.0])
    rewards = jnp.array([0.5, -1.0, 0.0])
    discounts = jnp.array([0.99, 0.0, 0.5])  # the middle one ended in a terminal state
    y = td3.clipped_double_q_target(q1, q2, rewards, discounts)
    np.testing.assert_allclose(y, [0.5 + 0.99 * 1.0, -1.0, 0.5 * -4.0], rtol=1e-6)


def test_soft_q_target_hand_example():
    next_q = jnp.array([[1.0, 4.0], [3.0, 2.0]])  # [critics, B]: minima 1 and 2
    log_probs = jnp.array([-1.0, 0.5])
    y = sac.soft_q_target(next_q, log_probs, jnp.array([1.0, 0.0]), jnp.array([0.9, 0.9]),
                          alpha=0.2)
    # 1 + 0.9 (1 - 0.2 * -1) = 2.08 ;  0 + 0.9 (2 - 0.2 * 0.5) = 1.71
    np.testing.assert_allclose(y, [2.08, 1.71], rtol=1e-6)


def test_soft_q_target_random_vs_numpy():
    b = 17
    q = RNG.normal(size=(2, b)).astype(np.float32)
    lp, r = RNG.normal(size=b).astype(np.float32), RNG.normal(size=b).astype(np.float32)
    d = (0.99 * (RNG.random(b) > 0.3)).astype(np.float32)
    alpha = 0.37
    expected = np.array([r[i] + d[i] * (min(q[0, i], q[1, i]) - alpha * lp[i]) for i in range(b)])
    got = jax.jit(lambda *a: sac.soft_q_target(*a, alpha=alpha))(q, lp, r, d)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_smoothed_target_actions_are_clipped():
    a = jnp.array(RNG.uniform(-1, 1, size=(4096, 2)), jnp.float32)
    out = td3.smoothed_target_actions(jax.random.key(0), a, policy_noise=0.2, noise_clip=0.5)
    assert float(jnp.max(jnp.abs(out))) <= 1.0
    assert float(jnp.max(jnp.abs(out - a))) <= 0.5 + 1e-6
    inner = np.abs(np.asarray(a)) < 0.4  # noise there is only clipped at +-0.5, std 0.2
    assert 0.185 < float(np.std(np.asarray(out - a)[inner])) < 0.21  # 0.2 * 0.989 (clipped)
    same = td3.smoothed_target_actions(jax.random.key(0), a, policy_noise=0.0, noise_clip=0.5)
    np.testing.assert_array_equal(same, a)


# ---------------------------------------------------------------------------- losses
def test_critic_losses_vs_numpy():
    q = RNG.normal(size=(2, 9)).astype(np.float32)
    y = RNG.normal(size=9).astype(np.float32)
    sq = np.array([[(q[i, j] - y[j]) ** 2 for j in range(9)] for i in range(2)])
    np.testing.assert_allclose(sac.sac_critic_loss(q, y), 0.5 * (sq[0] + sq[1]), rtol=1e-5)
    np.testing.assert_allclose(td3.td3_critic_loss(q, y), sq[0] + sq[1], rtol=1e-5)
    # No gradient flows into the targets.
    g = jax.grad(lambda t: sac.sac_critic_loss(jnp.asarray(q), t).sum())(jnp.asarray(y))
    np.testing.assert_array_equal(g, 0.0)


def test_actor_losses_vs_numpy():
    lp, q = RNG.normal(size=11).astype(np.float32), RNG.normal(size=11).astype(np.float32)
    np.testing.assert_allclose(sac.sac_actor_loss(lp, q, 0.1), [0.1 * a - b for a, b in zip(lp, q)],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(td3.td3_actor_loss(q), -q)
    # alpha is a constant in the actor loss.
    assert float(jax.grad(lambda a: sac.sac_actor_loss(jnp.asarray(lp), jnp.asarray(q), a)
                          .sum())(0.3)) == 0.0


def test_alpha_loss_value_and_gradient_sign():
    lp = RNG.normal(size=13).astype(np.float32)
    target = -1.0
    log_alpha = jnp.float32(np.log(0.5))
    loss = sac.sac_alpha_loss(log_alpha, lp, target_entropy=target)
    np.testing.assert_allclose(loss, [-np.log(0.5) * (x + target) for x in lp], rtol=1e-5)
    grad = jax.grad(lambda la: sac.sac_alpha_loss(la, jnp.asarray(lp),
                                                  target_entropy=target).mean())(log_alpha)
    np.testing.assert_allclose(grad, -(lp.mean() + target), rtol=1e-5)
    # Entropy -log pi = 0.2 below the target 1.0 -> descent raises alpha; above -> lowers it.
    low_entropy = jnp.full(5, -0.2)
    high_entropy = jnp.full(5, -3.0)
    d = lambda lp_: jax.grad(lambda la: sac.sac_alpha_loss(la, lp_, target_entropy=1.0).mean())(
        jnp.float32(0.0))
    assert float(d(low_entropy)) < 0 < float(d(high_entropy))


@pytest.mark.parametrize("max_action", [1.0, 2.0])
def test_tanh_gaussian_log_prob_change_of_variables(max_action):
    """log pi(a) = log N(u) - sum log |d a_i / d u_i|, the Jacobian taken by finite differences."""
    mean = jnp.array(RNG.normal(size=(64, 2)), jnp.float32)
    log_std = jnp.array(RNG.uniform(-1.5, 0.5, size=(64, 2)), jnp.float32)
    action, log_prob = TanhNormal(mean, log_std, max_action).sample_and_log_prob(
        seed=jax.random.key(3))
    a = np.asarray(action, np.float64) / max_action
    keep = np.all(np.abs(a) < 0.999, axis=1)  # arctanh is ill-conditioned at saturation
    u = np.arctanh(a)
    mu, sd = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    log_normal = np.sum(-0.5 * ((u - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), 1)
    h = 1e-6
    jac = (max_action * np.tanh(u + h) - max_action * np.tanh(u - h)) / (2 * h)
    expected = log_normal - np.sum(np.log(jac), 1)
    np.testing.assert_allclose(np.asarray(log_prob)[keep], expected[keep], rtol=1e-3, atol=1e-3)
    assert keep.mean() > 0.8
    if max_action == 1.0:  # and distrax's own tanh-transformed distribution agrees
        dist = distrax.Independent(distrax.Transformed(
            distrax.Normal(mean, jnp.exp(log_std)), distrax.Tanh()), 1)
        np.testing.assert_allclose(np.asarray(log_prob)[keep],
                                   np.asarray(dist.log_prob(action))[keep], rtol=1e-3, atol=1e-3)


def test_losses_reject_wrong_shapes():
    with pytest.raises(AssertionError):
        sac.sac_critic_loss(jnp.zeros((2, 5)), jnp.zeros(4))
    with pytest.raises(AssertionError):
        td3.clipped_double_q_target(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(2))


# ---------------------------------------------------------------------------- the algorithms
BASE_HPARAMS = {"lr": 3e-4, "tau": 0.005}
SWEPT = [None, None, ("lr", 1e-2), ("tau", 0.5)]  # members 2 and 3: seed 0 with one leaf changed


@pytest.fixture(scope="module", params=[sac, td3], ids=["sac", "td3"])
def runs(request, pendulum):
    """Each algorithm compiled three times only (the machine is slow): a vmapped init and a
    vmapped run of 2 updates over members [seed 0, seed 1, seed 0 with lr changed, seed 0 with
    tau changed], and one un-vmapped init + 2 updates for the loop over seeds."""
    algo = request.param
    config = tiny_config(algo, learning_starts=400)  # 2 Pendulum episodes in the buffer
    k0, k1 = jax.random.split(jax.random.key(42))
    keys = jnp.stack([k0, k1, k0, k0])
    init_states = jax.jit(jax.vmap(lambda k: algo.init(k, config, pendulum)))(keys)
    hparams = {name: np.full(4, value, np.float32) for name, value in BASE_HPARAMS.items()}
    for i, swept in enumerate(SWEPT):
        if swept:
            hparams[swept[0]][i] = swept[1]
    init_states = init_states.replace(hparams={k: jnp.asarray(v) for k, v in hparams.items()})

    def two_updates(state):
        return jax.lax.scan(lambda s, _: algo.update(s, config, pendulum), state, None, length=2)

    batched_run = jax.jit(jax.vmap(two_updates))
    batched, metrics = batched_run(init_states)
    again, _ = batched_run(init_states)
    single_run = jax.jit(lambda k: two_updates(algo.init(k, config, pendulum)))
    singles = [single_run(k)[0] for k in (k0, k1)]
    return dict(algo=algo, config=config, init=init_states, batched=batched, metrics=metrics,
                again=again, singles=singles)


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def test_buffer_bootstraps_through_truncation(runs):
    """Pendulum is truncated (never terminated) at 200 steps: the stored s' of the last step is
    the final observation, not the reset one, and no transition is marked terminal."""
    buffer = _member(runs["init"].buffer, 0)
    data = jax.tree.map(np.asarray, buffer.data)
    assert int(buffer.size) == 400
    np.testing.assert_array_equal(data["terminated"][:400], 0.0)
    same = np.all(np.isclose(data["next_obs"][:399], data["obs"][1:400]), axis=1)
    assert not same[199] and same[:199].all() and same[200:].all()  # only the episode boundary
    # The stored s' at the boundary is a real pendulum observation (cos, sin, velocity).
    np.testing.assert_allclose(np.hypot(data["next_obs"][199, 0], data["next_obs"][199, 1]), 1.0,
                               rtol=1e-5)
    assert np.all(np.abs(data["action"][:400]) <= 1.0)


def test_vmap_equals_loop(runs):
    for i, single in enumerate(runs["singles"]):
        for a, b in zip(_leaves(single), _leaves(_member(runs["batched"], i))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(_leaves(runs["batched"].actor_params)[0][0],
                           _leaves(runs["batched"].actor_params)[0][1])  # seeds differ


def test_same_seed_same_result(runs):
    for a, b in zip(_leaves(runs["batched"]), _leaves(runs["again"])):
        np.testing.assert_array_equal(a, b)
    metrics = runs["metrics"]
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    np.testing.assert_array_equal(metrics["env_steps"][:, -1], 400 + 2 * 4)


def test_sweepable_leaves_change_behaviour(runs):
    assert runs["algo"].SWEEPABLE == tuple(BASE_HPARAMS)
    base = _member(runs["batched"], 0)
    for i, (name, _) in enumerate(SWEPT[2:], start=2):
        other = _member(runs["batched"], i)
        field = "critic_params" if name == "lr" else "target_critic_params"
        diff = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(_leaves(getattr(base, field)), _leaves(getattr(other, field))))
        assert diff > 1e-4, name


def test_act_is_deterministic_without_a_key_and_explores_with_one(runs, pendulum):
    """act: env actions in Pendulum's torque box [-2, 2]; key=None is what evaluate uses."""
    algo, config = runs["algo"], runs["config"]
    state = runs["singles"][0]
    obs = jnp.repeat(state.obs[:1], 256, axis=0)
    greedy = np.asarray(jax.jit(lambda s, o: algo.act(s, o, config, pendulum))(state, obs))
    explore = np.asarray(jax.jit(lambda s, o, k: algo.act(s, o, config, pendulum, k))(
        state, obs, jax.random.key(0)))
    assert greedy.shape == explore.shape == (256, 1)
    assert np.all(greedy == greedy[0]) and np.all(np.abs(explore) <= 2.0)
    assert float(np.std(explore)) > 0.05  # TD3: 2 x N(0, 0.1^2); SAC: the policy's own spread


def test_random_policy_on_pendulum(pendulum):
    """The reference the learning tests beat: uniform random torques score about -1200."""
    low, high = -2.0, 2.0
    out = jax.jit(lambda k: evaluate_episodes(
        k, pendulum.env, pendulum.params,
        lambda obs, kk: jax.random.uniform(kk, (obs.shape[0], 1), minval=low, maxval=high), 32))(
        jax.random.key(0))
    assert -1500 < float(out["return"]) < -1000


# Random policy ~ -1200 (test above). With 64-64 nets, 1e4 env steps (1e3 random, then 9e3
# gradient steps) and 2 seeds, both reach about -170 (measured: SAC -169, -169; TD3 -172, -180);
# the test asks for > -800, a margin of ~400 over random that random actions never reach.
LEARN = dict(hidden_sizes=(64, 64), batch_size=256, learning_starts=1000, num_steps=250,
             buffer_size=10_000,
             total_timesteps=10_000, log_every=12, eval_every=36, eval_episodes=10)


@pytest.mark.slow
@pytest.mark.parametrize("algo", [sac, td3], ids=["sac", "td3"])
def test_short_run_beats_random(algo, pendulum):
    config = tiny_config(algo, **LEARN)
    result = runner.train(algo, config, pendulum, num_seeds=2, progress=False)
    returns = result.final["eval/return"]
    assert np.all(np.isfinite(returns))
    assert returns.mean() > -800, returns
