"""The shared online-RL pieces: env wrappers, the ring replay buffer, GAE and discounted returns,
and the protocol every online algorithm module implements."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import envs
from algorithms.core import buffer, returns
from algorithms.online import a2c, ddpg, dqn, ppo, reinforce, sac, td3, trpo
from envs import wrappers
from launch import registry

ONLINE = (dqn, ddpg, td3, sac, ppo, a2c, reinforce, trpo)


# ---------------------------------------------------------------------------- protocol
@pytest.mark.parametrize("algo", ONLINE, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_online_modules_implement_the_protocol(algo):
    registry.check_protocol(algo)
    assert algo.TASK_FLAG == "env" and algo.PRIMARY_METRIC == "eval/return"
    assert not hasattr(algo, "DEFAULT_ENV") and not hasattr(algo, "make_act_fn")
    config = algo.default_config()
    task = algo.make_task(algo.DEFAULT_TASK, config)
    assert isinstance(task, envs.Task)
    assert list(inspect.signature(algo.act).parameters) == ["state", "obs", "config", "task",
                                                            "key"]
    assert inspect.signature(algo.act).parameters["key"].default is None
    assert "hidden_sizes" in config and "hidden" not in config
    assert set(algo.SWEEPABLE) <= set(config)


# ---------------------------------------------------------------------------- wrappers
def test_episode_stats_match_a_hand_loop():
    """Returns/lengths reported at episode ends equal a plain accumulation of rewards."""
    env, params = envs.make("CartPole-v1")
    env = wrappers.EpisodeStats(env)
    T = 400

    @jax.jit
    def run(key):
        k_reset, k_run = jax.random.split(key)
        obs, state = env.reset(k_reset, params)

        def step(state, k):
            k_act, k_env = jax.random.split(k)
            action = jax.random.randint(k_act, (), 0, 2)
            _, state, reward, terminated, truncated, info = env.step(k_env, state, action, params)
            return state, (reward, terminated | truncated, info["episode_done"],
                           info["last_episode_return"], info["last_episode_length"])

        return jax.lax.scan(step, state, jax.random.split(k_run, T))[1]

    reward, done, ep_done, last_ret, last_len = map(np.asarray, run(jax.random.key(3)))
    assert done.sum() >= 5  # random CartPole episodes last ~22 steps
    np.testing.assert_array_equal(ep_done, done)
    running, length, want_ret, want_len = 0.0, 0, 0.0, 0
    for t in range(T):
        running += float(reward[t])
        length += 1
        if done[t]:
            want_ret, want_len, running, length = running, length, 0.0, 0
        assert last_ret[t] == want_ret and last_len[t] == want_len, t


class _EchoEnv:
    """Observation = the action it was stepped with (to see what the wrapper passes on)."""

    def action_space(self, params):
        return spaces.Box(low=jnp.array([-1.0, -2.0]), high=jnp.array([1.0, 2.0]), shape=(2,))

    def reset(self, key, params):
        return jnp.zeros(2), jnp.zeros(())

    def step(self, key, state, action, params):
        return action, state, jnp.float32(0), jnp.bool_(False), jnp.bool_(False), {}


def test_clip_action_clips_to_the_box():
    env = wrappers.ClipAction(_EchoEnv())
    obs, *_ = env.step(jax.random.key(0), jnp.zeros(()), jnp.array([3.0, -5.0]), None)
    np.testing.assert_array_equal(obs, [1.0, -2.0])
    obs, *_ = env.step(jax.random.key(0), jnp.zeros(()), jnp.array([0.5, 1.5]), None)
    np.testing.assert_array_equal(obs, [0.5, 1.5])


def test_running_mean_std_equals_numpy_over_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)).astype(np.float32) * [1, 10, 0.1]
               for n in (1, 7, 64, 5)]
    rms = wrappers.RunningMeanStd.create((3,))
    for b in batches:
        rms = rms.update(jnp.asarray(b))
    allx = np.concatenate(batches).astype(np.float64)
    # create() starts from a prior (mean 0, var 1) of weight 1e-4: negligible at 77 samples.
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-4)
    np.testing.assert_allclose(rms.count, len(allx), rtol=1e-5)


def test_normalize_observation_uses_the_running_statistics():
    env, params = envs.make("Pendulum-v1")
    raw = wrappers.make_vec_env(env, 3)
    norm = wrappers.make_vec_env(env, 3, normalize_obs=True)
    key = jax.random.key(1)
    obs_raw, s_raw = raw.reset(key, params)
    obs_n, s_n = norm.reset(key, params)
    seen = [np.asarray(obs_raw)]
    for t in range(4):
        k = jax.random.fold_in(key, t)
        action = jnp.full((3, 1), 0.5)
        obs_raw, s_raw, *_ = raw.step(k, s_raw, action, params)
        obs_n, s_n, _, _, _, info = norm.step(k, s_n, action, params)
        seen.append(np.asarray(obs_raw))
        allx = np.concatenate(seen)
        np.testing.assert_allclose(s_n.obs_rms.mean, allx.mean(0), rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(s_n.obs_rms.var, allx.var(0), rtol=1e-3, atol=1e-5)
        want = (np.asarray(obs_raw) - allx.mean(0)) / np.sqrt(allx.var(0) + 1e-8)
        np.testing.assert_allclose(obs_n, want, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------- replay buffer
def test_buffer_ring_overwrites_the_oldest_entries():
    buf = buffer.buffer_init({"x": jnp.float32(0), "v": jnp.zeros(2, jnp.int32)}, capacity=5)
    add = jax.jit(buffer.buffer_add)

    def batch(lo, hi):
        x = jnp.arange(lo, hi, dtype=jnp.float32)
        return {"x": x, "v": jnp.stack([x, -x], -1).astype(jnp.int32)}

    buf = add(buf, batch(0, 3))
    assert int(buf.position) == 3 and int(buf.size) == 3
    np.testing.assert_array_equal(buf.data["x"], [0, 1, 2, 0, 0])
    buf = add(buf, batch(3, 7))  # wraps: 3, 4 fill the end, 5, 6 overwrite 0, 1
    assert int(buf.position) == 2 and int(buf.size) == 5
    np.testing.assert_array_equal(buf.data["x"], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buf.data["v"][:, 1], [-5, -6, -2, -3, -4])
    buf = add(buf, batch(7, 12))  # a full-capacity batch replaces everything
    assert int(buf.position) == 2 and int(buf.size) == 5
    np.testing.assert_array_equal(np.sort(buf.data["x"]), [7, 8, 9, 10, 11])


def test_buffer_samples_only_the_filled_part():
    buf = buffer.buffer_init(jnp.float32(0), capacity=100)
    buf = buffer.buffer_add(buf, jnp.array([10.0, 20.0, 30.0]))
    s = np.asarray(jax.jit(buffer.buffer_sample, static_argnums=2)(buf, jax.random.key(0), 3000))
    assert set(np.unique(s)) == {10.0, 20.0, 30.0}  # never an empty slot (0), all three seen
    counts = np.array([(s == v).sum() for v in (10.0, 20.0, 30.0)])
    assert np.all(np.abs(counts - 1000) < 150)  # uniform (binomial sd ~26)


# ---------------------------------------------------------------------------- returns
def test_gae_hand_computed_with_truncation_and_termination():
    """4 steps: the episode is truncated after step 1 and terminates after step 2.

    t=0: r=1, V=0.5, next V(s1)=0.6           delta0 = 1 + .9*.6 - .5 = 1.04
    t=1: r=2, V=0.6, truncated, V(final)=2.0  delta1 = 2 + .9*2 - .6 = 3.2   (bootstraps)
    t=2: r=3, V=0.7, terminated               delta2 = 3 + 0 - .7   = 2.3
    t=3: r=4, V=0.8, next V=1.0               delta3 = 4 + .9*1 - .8 = 4.1
    A3 = 4.1; A2 = 2.3 (episode ends: no A3); A1 = 3.2 (ends); A0 = 1.04 + .9*.5*3.2 = 2.48
    """
    gamma, lam = 0.9, 0.5
    r = jnp.array([1.0, 2.0, 3.0, 4.0])
    v = jnp.array([0.5, 0.6, 0.7, 0.8])
    nv = jnp.array([0.6, 2.0, 9.9, 1.0])  # 9.9 must be ignored (terminal)
    term = jnp.array([False, False, True, False])
    done = jnp.array([False, True, True, False])
    want = np.array([2.48, 3.2, 2.3, 4.1])
    for fn in (returns.gae, jax.jit(returns.gae, static_argnums=(5, 6))):
        adv, target = fn(r, v, nv, term, done, gamma, lam)
        np.testing.assert_allclose(adv, want, rtol=1e-6)
        np.testing.assert_allclose(target, want + np.asarray(v), rtol=1e-6)


def _gae_loop(r, v, nv, term, done, gamma, lam):
    T, N = r.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if done[t, n]:
                running = 0.0
            bootstrap = 0.0 if term[t, n] else nv[t, n]
            running = r[t, n] + gamma * bootstrap - v[t, n] + gamma * lam * running
            adv[t, n] = running
    return adv


def test_gae_matches_a_python_loop_on_random_inputs():
    rng = np.random.default_rng(0)
    T, N = 30, 4
    r, v, nv = (rng.normal(size=(T, N)).astype(np.float32) for _ in range(3))
    done = rng.random((T, N)) < 0.2
    term = done & (rng.random((T, N)) < 0.5)
    adv, target = returns.gae(*map(jnp.asarray, (r, v, nv, term, done)), 0.97, 0.9)
    want = _gae_loop(r, v, nv, term, done, 0.97, 0.9)
    np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(target, want + v, rtol=1e-4, atol=1e-5)


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    rng = np.random.default_rng(1)
    T = 12
    r, v = rng.normal(size=(2, T)).astype(np.float32)
    done = np.zeros(T, bool)
    done[5] = True
    nv = np.concatenate([v[1:], [0.0]]).astype(np.float32)
    adv, _ = returns.gae(*map(jnp.asarray, (r, v, nv, done, done)), 0.9, 1.0)
    g = returns.discounted_returns(jnp.asarray(r), jnp.asarray(done), 0.9)
    np.testing.assert_allclose(adv, np.asarray(g) - v, rtol=1e-5, atol=1e-5)


def test_discounted_returns_hand_computed():
    r = jnp.array([1.0, 2.0, 3.0, 4.0])
    done = jnp.array([0.0, 1.0, 0.0, 0.0])
    # G3 = 4 + .5*10 = 9; G2 = 3 + .5*9 = 7.5; G1 = 2 (episode ends); G0 = 1 + .5*2 = 2
    g = returns.discounted_returns(r, done, 0.5, bootstrap=10.0)
    np.testing.assert_allclose(g, [2.0, 2.0, 7.5, 9.0])
    np.testing.assert_allclose(jax.jit(returns.discounted_returns, static_argnums=2)(r, done, 0.5),
                               [2.0, 2.0, 3.0 + 2.0, 4.0])


def test_discounted_returns_match_a_python_loop_on_random_inputs():
    rng = np.random.default_rng(2)
    T, N = 25, 3
    r = rng.normal(size=(T, N)).astype(np.float32)
    done = (rng.random((T, N)) < 0.15).astype(np.float32)
    boot = rng.normal(size=N).astype(np.float32)
    want = np.zeros((T, N))
    for n in range(N):
        g = boot[n]
        for t in reversed(range(T)):
            g = r[t, n] + (0.0 if done[t, n] else 0.95 * g)
            want[t, n] = g
    got = returns.discounted_returns(jnp.asarray(r), jnp.asarray(done), 0.95, jnp.asarray(boot))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- normalisation
def test_normalize_advantages_centres_a_constant_batch_exactly():
    seven = jnp.full(7, 0.1, jnp.float32)
    assert float(seven.mean()) != np.float32(0.1)  # the float32 mean is off by an ulp
    normalize = jax.jit(returns.normalize_advantages)
    np.testing.assert_array_equal(normalize(seven), np.zeros(7, np.float32))
    mask = jnp.array([1, 1, 1, 1, 1, 1, 1, 0, 0], jnp.float32)
    padded = jnp.concatenate([seven, jnp.array([5.0, -3.0])])
    np.testing.assert_array_equal(jax.jit(returns.normalize_advantages)(padded, mask),
                                  np.zeros(9, np.float32))


def test_normalize_advantages_is_the_plain_formula_otherwise():
    rng = np.random.default_rng(5)
    adv = jnp.asarray(rng.normal(2.0, 3.0, size=(4, 64)).astype(np.float32))
    got = jax.jit(returns.normalize_advantages)(adv)
    want = jax.jit(lambda a: (a - a.mean()) / (a.std() + 1e-8))(adv)
    np.testing.assert_array_equal(got, want)
    assert abs(float(got.mean())) < 1e-6 and abs(float(got.std()) - 1) < 1e-5
    mask = jnp.asarray(rng.random((4, 64)) < 0.6, jnp.float32)
    got = np.asarray(returns.normalize_advantages(adv, mask))
    a, m = np.asarray(adv, np.float64), np.asarray(mask, bool)
    want = (a - a[m].mean()) / (a[m].std() + 1e-8)
    np.testing.assert_allclose(got[m], want[m], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- on-policy rollouts
def _rollout_drawn_in_the_loop(key, env, task, env_state, obs, policy, policy_params, steps):
    """The reference rollout: every step splits its own key and samples with the distribution's
    `sample_and_log_prob`, through the plain `wrappers.make_vec_env` stack (a Python loop)."""
    from algorithms.online import _onpolicy as op
    rows = []
    for step_key in jax.random.split(key, steps):
        k_act, k_env = jax.random.split(step_key)
        action, log_prob = policy.apply(policy_params, obs).sample_and_log_prob(seed=k_act)
        obs, env_state, reward, *_ = env.step(k_env, env_state, op.env_action(action, task),
                                              task.params)
        rows.append((action, log_prob, reward))
    return [jnp.stack(x) for x in zip(*rows)], obs


@pytest.mark.parametrize("env_name,normalize", [("CartPole-v1", False), ("Pendulum-v1", True)])
def test_rollout_with_noise_drawn_ahead_equals_drawing_in_the_loop(env_name, normalize):
    """`collect` draws every step's keys, the envs' keys and the categorical Gumbel noise
    before its scan; its actions and log-probabilities are the same bits as a loop that draws
    them step by step, and so are the envs' trajectories (up to float rounding: the unrolled
    loop and the scan body are compiled apart, and XLA may fuse Pendulum's dynamics
    differently in each)."""
    from algorithms.online import _onpolicy as op
    task = envs.Task(*envs.make(env_name))
    config = ppo.default_config()
    config.update(num_envs=3, normalize_obs=normalize, hidden_sizes=(8,))
    policy, _ = op.build_networks(config, task)
    reference_env = wrappers.make_vec_env(task.env, 3, normalize)
    obs, env_state = reference_env.reset(jax.random.key(0), task.params)
    policy_params = policy.init(jax.random.key(1), obs)
    key = jax.random.key(2)
    (actions, log_probs, rewards), last_obs = jax.jit(
        lambda k, s, o: _rollout_drawn_in_the_loop(k, reference_env, task, s, o, policy,
                                                   policy_params, 6))(key, env_state, obs)
    _, got_obs, rollout, _ = jax.jit(lambda k, s, o: op.collect(
        k, op.make_env(config, task), task.params, s, o, op.sample_fn(policy, policy_params),
        6, task))(key, env_state, obs)
    np.testing.assert_array_equal(np.asarray(rollout.actions), np.asarray(actions))
    np.testing.assert_array_equal(np.asarray(rollout.log_probs), np.asarray(log_probs))
    np.testing.assert_allclose(np.asarray(rollout.rewards), np.asarray(rewards), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_obs), np.asarray(last_obs), rtol=1e-5, atol=1e-6)
