"""DQN / Double DQN and DDPG: losses and targets vs numpy, the replay loop, learning, vmap, seeds.

Random-policy baselines (evaluate_episodes, 50 episodes): CartPole-v1 about 22, Pendulum-v1
about -1250 (measured in `test_ddpg_pendulum_beats_random`).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algorithms.core import optim
from algorithms.core.evaluation import evaluate_episodes
from algorithms.online import ddpg, dqn
from launch import registry


def _task(name, **options):
    env, params = envs.make(name, **options)
    return envs.Task(env, params)


def _run(algo, config, task, key, num_updates):
    state = algo.init(key, config, task)
    step = jax.jit(lambda s: jax.lax.scan(lambda c, _: algo.update(c, config, task), s, None,
                                          length=num_updates))
    return step(state)


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(tree)]


def _tiny_dqn(**overrides):
    c = dqn.default_config()
    c.update(dict(total_timesteps=2_000, num_envs=2, num_steps=8, train_frequency=4,
                  learning_starts=16, batch_size=16, buffer_size=256, target_update_period=16,
                  exploration_fraction=0.01, hidden_sizes=(16,), eval_episodes=2))
    c.update(overrides)
    return c


def _tiny_ddpg(**overrides):
    c = ddpg.default_config()
    c.update(dict(total_timesteps=2_000, num_envs=2, num_steps=4, learning_starts=8,
                  batch_size=8, buffer_size=128, hidden_sizes=(16, 16), eval_episodes=2))
    c.update(overrides)
    return c


# ---------------------------------------------------------------------------- targets and losses
def test_q_learning_target_matches_numpy():
    rng = np.random.default_rng(0)
    q_next = rng.normal(size=(7, 3)).astype(np.float32)
    r = rng.normal(size=7).astype(np.float32)
    d = (0.99 * (rng.random(7) > 0.3)).astype(np.float32)
    expected = np.array([r[i] + d[i] * max(q_next[i]) for i in range(7)])
    for fn in (dqn.q_learning_target, jax.jit(dqn.q_learning_target)):
        np.testing.assert_allclose(fn(q_next, r, d), expected, rtol=1e-6)


def test_double_q_target_hand_example_differs_from_max():
    # The online net prefers action 0, the target net's max is at action 2 (value 5).
    q_online = jnp.array([[3.0, 1.0, 2.0], [0.0, 4.0, 1.0]])
    q_target = jnp.array([[1.0, 0.0, 5.0], [2.0, -1.0, 7.0]])
    r, d = jnp.array([1.0, 0.5]), jnp.array([0.9, 0.0])
    # row 0: 1 + 0.9 * q_target[0, 0] = 1.9 (plain max would give 1 + 0.9 * 5 = 5.5)
    # row 1: terminal, so the target is the reward whatever the networks say
    np.testing.assert_allclose(dqn.double_q_target(q_online, q_target, r, d), [1.9, 0.5],
                               rtol=1e-6)
    np.testing.assert_allclose(dqn.q_learning_target(q_target, r, d), [5.5, 0.5], rtol=1e-6)
    # with the online net equal to the target net, Double DQN is plain DQN
    np.testing.assert_allclose(dqn.double_q_target(q_target, q_target, r, d),
                               dqn.q_learning_target(q_target, r, d), rtol=1e-6)


@pytest.mark.parametrize("delta", [None, 0.5, 1.0])
def test_dqn_loss_matches_numpy(delta):
    rng = np.random.default_rng(1)
    q = rng.normal(scale=2.0, size=64).astype(np.float32)
    y = rng.normal(scale=2.0, size=64).astype(np.float32)
    err = np.abs(y - q)
    if delta is None:
        expected = err ** 2 / 2
    else:  # piecewise, written out the other way round
        expected = np.where(err > delta, delta * err - delta ** 2 / 2, err * err / 2)
    for fn in (dqn.dqn_loss, jax.jit(dqn.dqn_loss, static_argnames="huber_delta")):
        np.testing.assert_allclose(fn(q, y, huber_delta=delta), expected, rtol=1e-5, atol=1e-6)
    # the Huber gradient w.r.t. q is the TD error clipped to [-delta, delta]
    if delta is not None:
        grad = jax.grad(lambda q_: dqn.dqn_loss(q_, jnp.asarray(y), huber_delta=delta).sum())(
            jnp.asarray(q))
        np.testing.assert_allclose(grad, -np.clip(y - q, -delta, delta), rtol=1e-5, atol=1e-6)


def test_ddpg_losses_match_numpy():
    rng = np.random.default_rng(2)
    q = rng.normal(size=32).astype(np.float32)
    y = rng.normal(size=32).astype(np.float32)
    np.testing.assert_allclose(ddpg.ddpg_critic_loss(q, y), np.square(q - y), rtol=1e-6)
    np.testing.assert_allclose(ddpg.ddpg_actor_loss(q), np.negative(q), rtol=1e-6)
    # the actor loss descends towards higher Q: its gradient is -1 per sample
    np.testing.assert_allclose(jax.grad(lambda x: ddpg.ddpg_actor_loss(x).sum())(q), -np.ones(32))
    q_next, r = rng.normal(size=32), rng.normal(size=32)
    done = rng.random(32) < 0.2
    np.testing.assert_allclose(ddpg.ddpg_targets(q_next, r, 0.99 * ~done),
                               np.where(done, r, r + 0.99 * q_next), rtol=1e-6)


def test_schedules_and_target_sync():
    eps = dqn.linear_epsilon(jnp.array([0, 50, 100, 500]), start=1.0, end=0.1, duration=100.0)
    np.testing.assert_allclose(eps, [1.0, 0.55, 0.1, 0.1], rtol=1e-6)
    # 10 env steps per gradient step, period 500: gradient steps 49, 99, ... cross a multiple
    g = jnp.arange(200)
    np.testing.assert_array_equal(np.nonzero(dqn.crosses_period(g, 10, 500))[0], [49, 99, 149, 199])
    online, target = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
    np.testing.assert_allclose(optim.polyak(online, target, 0.25)["w"], 0.25)
    np.testing.assert_allclose(optim.polyak(online, target, 1.0)["w"], 1.0)


# ---------------------------------------------------------------------------- the replay loop
class Setup:
    """One tiny config per algorithm and its jitted update / vmapped update, compiled once for
    all the tests below (compiling dominates their time on a loaded CPU)."""

    def __init__(self, algo, task, config):
        self.algo, self.task, self.config = algo, task, config
        self.init = jax.jit(lambda k: algo.init(k, config, self.task))
        self.step = jax.jit(lambda s: algo.update(s, config, self.task))
        self.vstep = jax.jit(jax.vmap(lambda s: algo.update(s, config, self.task)))

    def steps(self, state, n, fn=None):
        metrics = []
        for _ in range(n):
            state, m = (fn or self.step)(state)
            metrics.append(m)
        return state, jax.tree.map(lambda *x: jnp.stack(x), *metrics)


@pytest.fixture(scope="module")
def dqn_setup():
    # init: 16 random env steps (8 vector steps of 2 envs); then 16 env steps per update = 4
    # gradient steps of 4 env steps; target copy every 32 env steps of learning, i.e. after
    # gradient steps 7, 15, ...; episodes truncate after 5 steps (test_buffer_...)
    return Setup(dqn, _task("CartPole-v1", max_steps_in_episode=5),
                 _tiny_dqn(learning_starts=16, target_update_period=32))


@pytest.fixture(scope="module")
def ddpg_setup():
    # init: 16 random env steps; then 8 env steps per update, one gradient step each
    return Setup(ddpg, _task("Pendulum-v1"), _tiny_ddpg(learning_starts=16))


@pytest.fixture(params=["dqn", "ddpg"])
def setup(request, dqn_setup, ddpg_setup):
    return {"dqn": dqn_setup, "ddpg": ddpg_setup}[request.param]


def test_buffer_holds_transitions_and_bootstraps_through_truncation(dqn_setup):
    # dqn_setup's CartPole truncates every episode after 5 steps (the pole does not fall that
    # fast); 2 envs x 8 warm-up steps, then 2 envs x 8 steps per update
    state, _ = dqn_setup.steps(dqn_setup.init(jax.random.key(3)), 2)
    buf = state.buffer
    assert int(buf.size) == 16 + 2 * 2 * 8 and int(buf.position) == 48
    data = {k: np.asarray(v[:48]) for k, v in buf.data.items()}
    # stored row order: [vector step, env] flattened, warm-up first
    obs, next_obs = data["obs"].reshape(24, 2, 4), data["next_obs"].reshape(24, 2, 4)
    assert data["terminated"].sum() == 0
    for e in range(2):
        for t in range(23):
            if t % 5 != 4:  # mid-episode: s_{t+1} is the next row's s
                np.testing.assert_array_equal(next_obs[t, e], obs[t + 1, e])
            else:  # truncated, not terminated: next_obs is the final observation, whereas the
                # next row starts a fresh episode (CartPole resets within +-0.05)
                assert np.abs(obs[t + 1, e]).max() <= 0.05
                assert np.abs(next_obs[t, e] - obs[t, e]).max() < 0.5  # one step on
                assert not np.array_equal(next_obs[t, e], obs[t + 1, e])
    assert set(np.unique(data["reward"])) == {1.0}
    assert np.asarray(buf.data["obs"][48:]).sum() == 0  # untouched capacity


def test_warmup_fills_the_buffer_with_uniform_random_actions(setup):
    """The one off-policy warm-up (`_offpolicy.random_warmup`): learning_starts env steps of
    uniform random actions in `init`, nothing learned yet."""
    state = setup.init(jax.random.key(11))
    n = setup.config.learning_starts
    assert int(state.buffer.size) == n and int(state.step) == 0
    actions = np.asarray(state.buffer.data["action"][:n])
    if setup.algo is dqn:
        assert set(np.unique(actions)) == {0, 1}
    else:
        assert np.all(np.abs(actions) <= 1.0) and actions.std() > 0.3  # U(-1, 1): std 0.58


def test_hard_target_update_every_period(dqn_setup):
    state = dqn_setup.init(jax.random.key(4))
    s1, _ = dqn_setup.step(state)  # gradient steps 0-3 (env steps 4..16): no crossing of 32
    for a, b in zip(_leaves(s1.target_params), _leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(s1.params), _leaves(state.params)))
    s2, _ = dqn_setup.step(s1)  # gradient step 7 crosses env step 32: target = online params
    for a, b in zip(_leaves(s2.target_params), _leaves(s2.params)):
        np.testing.assert_array_equal(a, b)


def test_ddpg_learns_from_the_first_update_with_slow_targets(ddpg_setup):
    state = ddpg_setup.init(jax.random.key(5))
    s1, m1 = ddpg_setup.step(state)  # 8 env steps, 8 gradient steps
    assert float(m1["env_steps"]) == 16 + 8
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(s1.actor_params),
                                                        _leaves(state.actor_params)))
    s2, _ = ddpg_setup.step(s1)
    # 8 Polyak steps with tau = 0.005: the target critic moved about 4% of the way
    moved = sum(np.abs(a - t).sum() for a, t in zip(_leaves(s2.target_critic_params),
                                                    _leaves(s1.target_critic_params)))
    online = sum(np.abs(b - t).sum() for b, t in zip(_leaves(s2.critic_params),
                                                     _leaves(s1.target_critic_params)))
    assert 0.0 < moved < 0.1 * online


def test_update_keeps_avals_so_chunks_compile_once(setup):
    state = setup.init(jax.random.key(0))
    new, _ = setup.step(state)
    assert jax.tree.map(jax.typeof, state) == jax.tree.map(jax.typeof, new)


# ---------------------------------------------------------------------------- vmap, seeds, sweeps
def test_vmap_over_seeds_equals_loop_and_is_deterministic(setup):
    keys = jax.random.split(jax.random.key(6), 2)
    inits = [setup.init(k) for k in keys]
    states = jax.tree.map(lambda *x: jnp.stack(x), *inits)  # (reuses the compiled init)
    v_state, v_metrics = setup.steps(states, 3, setup.vstep)
    for i in range(2):
        l_state, l_metrics = setup.steps(inits[i], 3)
        for a, b in zip(_leaves(v_state), _leaves(l_state)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)
        for k in l_metrics:
            np.testing.assert_allclose(v_metrics[k][:, i], l_metrics[k], rtol=1e-5, atol=1e-6)
    again, _ = setup.steps(states, 3, setup.vstep)  # same seeds: identical
    for a, b in zip(_leaves(v_state), _leaves(again)):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(np.concatenate([np.ravel(v) for v in v_metrics.values()])).all()


def test_sweepable_hparams_change_behaviour(setup):
    state = setup.init(jax.random.key(7))
    assert set(state.hparams) == set(setup.algo.SWEEPABLE)
    base, _ = setup.steps(state, 3)
    for name in setup.algo.SWEEPABLE:
        value = 1.0 if name == "end_e" else state.hparams[name] * 0.5  # end_e 1: all random
        changed, _ = setup.steps(
            state.replace(hparams={**state.hparams, name: jnp.float32(value)}), 3)
        assert not all(np.allclose(a, b) for a, b in zip(_leaves(base), _leaves(changed))), name


def test_registered_and_minatar_runs():
    assert registry.get("dqn") is dqn and registry.get("ddpg") is ddpg
    with pytest.raises(ValueError, match="discrete actions"):
        dqn.make_task("Pendulum-v1", dqn.default_config())
    task = _task("Breakout-MinAtar")  # [10, 10, 4] image observations, flattened for the MLP
    config = _tiny_dqn(double=True, loss="huber")
    state, metrics = _run(dqn, config, task, jax.random.key(8), 3)
    assert state.buffer.data["obs"].shape[1:] == (10, 10, 4)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    actions = dqn.act(state, state.obs, config, task)  # greedy, as in evaluate
    assert actions.shape == (2,) and set(np.asarray(actions)) <= {0, 1, 2}


def test_act_is_greedy_without_a_key_and_explores_with_one(setup):
    state, _ = setup.steps(setup.init(jax.random.key(12)), 1)
    obs = jnp.repeat(state.obs[:1], 256, axis=0)
    act = jax.jit(lambda s, o, k: setup.algo.act(s, o, setup.config, setup.task, k))
    greedy = np.asarray(jax.jit(lambda s, o: setup.algo.act(s, o, setup.config, setup.task))(
        state, obs))
    explore = np.asarray(act(state, obs, jax.random.key(0)))
    assert greedy.shape == explore.shape == ((256,) if setup.algo is dqn else (256, 1))
    assert np.all(greedy == greedy[0])  # deterministic
    np.testing.assert_array_equal(explore, act(state, obs, jax.random.key(0)))
    if setup.algo is dqn:  # epsilon-greedy: a random action with probability epsilon
        assert set(np.unique(explore)) == {0, 1}
    else:  # mu(s) + N(0, 0.1^2) in [-1, 1], x 2 for Pendulum's torque box [-2, 2]
        assert np.all(np.abs(explore) <= 2.0)
        assert 0.1 < float(np.std(explore)) < 0.3


# ---------------------------------------------------------------------------- learning
def test_dqn_cartpole_beats_random():
    """12k env steps, one seed: greedy return >= 100 (random policy ~22; 4 seeds gave 210-390)."""
    task = _task("CartPole-v1")
    config = dqn.default_config()
    config.update(dict(total_timesteps=12_000, num_envs=4, num_steps=8, train_frequency=4,
                       lr=1e-3, learning_starts=500, batch_size=64, target_update_period=100,
                       exploration_fraction=0.25, hidden_sizes=(64, 64)))
    state, _ = _run(dqn, config, task, jax.random.key(0), int(config.num_updates))
    ev = jax.jit(lambda s: dqn.evaluate(s, jax.random.key(1), config, task))(state)
    assert float(ev["return"]) >= 100.0


def test_ddpg_pendulum_beats_random():
    """5k env steps, one seed: >= 300 better than the random policy (~ -1250; 4 seeds gave
    -540 to -170)."""
    task = _task("Pendulum-v1")
    low, high = task.env.action_space(task.params).low, task.env.action_space(task.params).high
    random = evaluate_episodes(jax.random.key(1), task.env, task.params,
                               lambda o, k: jax.random.uniform(k, (o.shape[0], 1), minval=low,
                                                               maxval=high), 50)
    assert -1500 < float(random["return"]) < -1000
    config = ddpg.default_config()
    config.update(dict(total_timesteps=5_000, num_steps=10, batch_size=64,
                       hidden_sizes=(64, 64)))
    state, _ = _run(ddpg, config, task, jax.random.key(0), int(config.num_updates))
    ev = jax.jit(lambda s: ddpg.evaluate(s, jax.random.key(1), config, task))(state)
    assert float(ev["return"]) >= float(random["return"]) + 300.0
