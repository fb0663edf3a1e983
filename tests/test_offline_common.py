"""The offline task (and generating a missing dataset), batches, acting, evaluation and the
runner's shared-dataset argument."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from algorithms.offline import awac, bc, common, cql, edac, iql, sac_n, td3_bc
from envs import datasets as datasets_lib
from envs.datasets import Dataset
from launch import registry, runner
from offline_data import CONTROLLER_RETURN, RANDOM_RETURN, swing_up_controller, \
    tiny_pendulum_dataset


def _config(**overrides):
    c = bc.default_config()
    c.hidden_sizes = (32, 32)
    c.update(overrides)
    return c


def test_make_task_rescales_actions_and_normalizes_observations():
    ds = tiny_pendulum_dataset()
    task = common.make_task(ds, _config())
    # Pendulum's Box is [-2, 2]: a = u / 2 in [-1, 1].
    np.testing.assert_allclose(np.asarray(task.data["actions"]), ds.arrays["actions"] / 2.0,
                               rtol=0, atol=1e-7)
    assert task.action_center == (0.0,) and task.action_scale == (2.0,)
    obs = ds.arrays["observations"]
    np.testing.assert_allclose(np.asarray(task.data["obs_mean"]), obs.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(task.data["obs_std"]), obs.std(0) + 1e-3, atol=1e-5)
    assert task.ref_min_score == RANDOM_RETURN and task.ref_max_score == CONTROLLER_RETURN
    plain = common.make_task(ds, _config(normalize_observations=False))
    np.testing.assert_array_equal(np.asarray(plain.data["obs_mean"]), 0.0)
    np.testing.assert_array_equal(np.asarray(plain.data["obs_std"]), 1.0)


def test_make_task_errors_name_the_problem():
    ds = tiny_pendulum_dataset()
    wrong = Dataset({**ds.arrays, "actions": np.zeros((ds.size, 2), np.float32)}, ds.metadata)
    with pytest.raises(ValueError, match=r"actions have shape \(2,\).*Pendulum-v1.*\(1,\)"):
        common.make_task(wrong, _config())
    no_ref = Dataset(ds.arrays, {k: v for k, v in ds.metadata.items() if k != "ref_max_score"})
    with pytest.raises(ValueError, match="no ref_max_score"):
        common.make_task(no_ref, _config())
    no_env = Dataset(ds.arrays, {**ds.metadata, "env": None})
    with pytest.raises(ValueError, match="names no environment"):
        common.make_task(no_env, _config())


def test_sample_batch_normalizes_and_matches_rows():
    task = common.make_task(tiny_pendulum_dataset(), _config())
    batch = common.sample_batch(task, jax.random.key(3), 64)
    assert {k: v.shape for k, v in batch.items()} == {
        "obs": (64, 3), "action": (64, 1), "reward": (64,), "next_obs": (64, 3),
        "terminal": (64,)}
    # Each sampled row is one dataset transition: find it by its reward, check its obs.
    d = jax.tree.map(np.asarray, task.data)
    for i in range(8):
        row = int(np.argmin(np.abs(d["rewards"] - float(batch["reward"][i]))))
        expected = (d["observations"][row] - d["obs_mean"]) / d["obs_std"]
        np.testing.assert_allclose(np.asarray(batch["obs"][i]), expected, atol=1e-5)


def test_normalized_score_of_the_behaviour_controller_is_about_100():
    """evaluate_policy runs an act function in environment units and scores like D4RL: the
    scripted controller whose mean return is the reference max (1000 episodes) scores ~100
    on 10."""
    task = common.make_task(tiny_pendulum_dataset(), _config(normalize_observations=False))
    config = ml_collections.ConfigDict({"eval_episodes": 10})

    def controller(state, obs, config, task, key=None):
        return swing_up_controller(obs)

    out = jax.jit(lambda k: common.evaluate_policy(controller, None, k, config, task))(
        jax.random.key(0))
    expected = 100 * (float(out["return"]) - RANDOM_RETURN) / (CONTROLLER_RETURN - RANDOM_RETURN)
    assert float(out["normalized_score"]) == pytest.approx(expected, rel=1e-5)
    assert 85.0 < float(out["normalized_score"]) < 110.0
    random = jax.jit(lambda k: common.evaluate_policy(
        lambda s, obs, c, t: jnp.zeros((obs.shape[0], 1)), None, k, config, task))(
        jax.random.key(0))
    assert float(random["normalized_score"]) < 30.0  # zero torque never swings up


OFFLINE = (bc, td3_bc, awac, cql, iql, sac_n, edac)


@pytest.mark.parametrize("algo", OFFLINE, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_protocol_members_and_act_in_environment_units(algo):
    """Every offline module declares the dataset protocol, and act(state, obs, config, task,
    key=None) takes RAW observations and returns actions in the environment's box: without a
    key the deterministic policy (repeatable), with a key a sample (the deterministic actors
    of BC and TD3+BC ignore it)."""
    registry.check_protocol(algo)
    assert (algo.TASK_FLAG, algo.DEFAULT_TASK, algo.PRIMARY_METRIC) == (
        "dataset", "pendulum-medium-v0", "eval/normalized_score")
    assert not any(hasattr(algo, old) for old in ("DEFAULT_ENV", "DEFAULT_DATASET", "REQUIRES"))
    config = algo.default_config()
    config.hidden_sizes = (8, 8)
    task = common.make_task(tiny_pendulum_dataset(), config)
    state = algo.init(jax.random.key(0), config, task)
    obs = task.data["observations"][:64]  # raw: act z-scores them itself
    greedy = jax.jit(lambda s, o: algo.act(s, o, config, task))(state, obs)
    assert greedy.shape == (64, 1) and bool(jnp.all(jnp.abs(greedy) <= 2.0))  # Box [-2, 2]
    np.testing.assert_array_equal(greedy, algo.act(state, obs, config, task))
    sampled = algo.act(state, obs, config, task, key=jax.random.key(1))
    assert sampled.shape == (64, 1) and bool(jnp.all(jnp.abs(sampled) <= 2.0))
    stochastic = algo not in (bc, td3_bc)
    assert stochastic != np.array_equal(sampled, greedy)


def test_act_normalizes_observations_and_scales_actions():
    """BC's act = 2 * pi((obs - mean) / std), pi the network on normalized inputs."""
    config = _config()
    task = common.make_task(tiny_pendulum_dataset(), config)
    state = bc.init(jax.random.key(2), config, task)
    obs = task.data["observations"][:16]
    net = bc._actor(config, task).apply(
        state.actor_params, (obs - task.data["obs_mean"]) / task.data["obs_std"])
    np.testing.assert_allclose(bc.act(state, obs, config, task), 2.0 * np.asarray(net),
                               rtol=1e-6, atol=1e-6)


def test_make_task_generates_a_missing_registered_dataset(tmp_path, monkeypatch, capsys):
    """A registered name whose cache file is missing is generated first (one line says so);
    once cached, it is loaded without generating."""
    from envs import generation
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    calls = []

    def fake_ensure(name, *, progress=True):
        calls.append(name)
        ds = tiny_pendulum_dataset()
        datasets_lib.save_set("pendulum", {n: Dataset(ds.arrays, {**ds.metadata, "name": n})
                                           for n in datasets_lib.set_names("pendulum")})
        return datasets_lib.dataset_path(name)

    monkeypatch.setattr(generation, "ensure", fake_ensure)
    task = common.make_task("pendulum-medium-v0", _config())
    assert calls == ["pendulum-medium-v0"] and task.name == "pendulum-medium-v0"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "generating it" in out
    common.make_task("pendulum-medium-v0", _config())
    assert calls == ["pendulum-medium-v0"] and capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="unknown dataset"):
        common.make_task("pendulum-mediocre-v0", _config())


def test_runner_keeps_one_dataset_copy_outside_the_seed_state():
    """The dataset is a jit argument shared by all seeds: no State leaf has its rows, and the
    compiled chunk does not embed it as a constant."""
    task = common.make_task(tiny_pendulum_dataset(), _config())
    config = _config(num_updates=2, steps_per_update=10, log_every=1, eval_every=2,
                     eval_episodes=2)
    result = runner.train(bc, config, task, num_seeds=3, progress=False)
    n = task.data["rewards"].shape[0]
    assert all(n not in np.shape(x) for x in jax.tree.leaves(result.state))
    arrays, rebuild = runner.split_task(task)
    assert sorted(map(id, arrays)) == sorted(map(id, task.data.values()))  # only the dataset
    assert rebuild(arrays) == task
    vupdate = jax.vmap(lambda s, d: bc.update(s, config, rebuild(d)), in_axes=(0, None))
    hlo = jax.jit(vupdate).lower(result.state, arrays).as_text()
    assert len(hlo) < 200_000  # 8000 x 3 observations as text constants would be far larger
    assert result.chunk_compilations == 1


def test_summarize_pivot_is_a_dataset_by_algorithm_matrix(tmp_path, capsys):
    import json
    from launch import summarize
    for algo, env, mean in [("iql", "a-v0", 50.0), ("bc", "a-v0", 20.0), ("iql", "b-v0", 70.0)]:
        run = tmp_path / f"{algo}-{env}"
        run.mkdir()
        agg = {"eval/normalized_score": {"mean": mean, "ci_low": mean - 1, "ci_high": mean + 1}}
        (run / "summary.json").write_text(json.dumps(
            {"config": {"algo": algo, "env": env}, "aggregate": agg}))
    runs = sorted(str(p) for p in tmp_path.iterdir())
    assert summarize.main(runs + ["--pivot=eval/normalized_score"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| eval/normalized_score | bc | iql |"
    assert lines[2] == "| a-v0 | 20.0 [19.0, 21.0] | 50.0 [49.0, 51.0] |"
    assert lines[3] == "| b-v0 | - | 70.0 [69.0, 71.0] |"
