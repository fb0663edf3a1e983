"""envs.generation and its command line launch.datasets: the D4RL-style generation pipeline on
a tiny budget.

Pendulum-v1 with 50-step episodes, 8-8 SAC nets and 600 environment steps: SAC does not learn
in that budget, so these tests check the pipeline (kinds, shapes, metadata, episode structure,
environment-unit actions, true next observations, determinism, the cache), not the policies.
The generation's jitted programs are built once per process for these settings, so the second
and later generations compile nothing.
"""
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.core import episodes
from algorithms.online import sac
from envs import datasets as dl
from algorithms.offline import bc, common
from envs import generation as gen
from launch import datasets as cli

EPISODE = 50
TINY = {"env_options": {"max_steps_in_episode": EPISODE},
        "sac": {"hidden_sizes": (8, 8), "batch_size": 32, "learning_starts": 200},
        "total_timesteps": 600, "snapshot_every": 100,
        "episodes": {"random": 3, "medium": 4, "expert": 4}, "eval_episodes": 3}
SEED = 3
NAMES = [f"pendulum-{kind}-v0" for kind in dl.KINDS]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(cache dir, {name: Dataset}) of one tiny generation; the cache dir stays set."""
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("cache")
        mp.setenv("JAXRL_DATASETS_DIR", str(cache))
        paths = gen.generate("pendulum", seed=SEED, progress=False, overrides=TINY)
        yield cache, {name: dl.load_hdf5(path) for name, path in paths.items()}


def _generate_into(monkeypatch, directory, seed):
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(directory))
    return {n: dl.load_hdf5(p) for n, p in
            gen.generate("pendulum", seed=seed, progress=False, overrides=TINY).items()}


def test_writes_the_five_kinds_with_d4rl_arrays_and_metadata(generated):
    cache, data = generated
    assert sorted(data) == sorted(NAMES)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.hdf5" for n in NAMES)
    sizes = {"random": 3 * EPISODE, "medium": 4 * EPISODE, "expert": 4 * EPISODE,
             "medium-expert": 8 * EPISODE}
    random_return = float(dl.episode_returns(data["pendulum-random-v0"]).mean())
    expert_return = float(dl.episode_returns(data["pendulum-expert-v0"]).mean())
    for kind in dl.KINDS:
        ds = data[f"pendulum-{kind}-v0"]
        a, n = ds.arrays, ds.size
        assert sorted(a) == sorted(dl.KEYS)
        if kind in sizes:
            assert n == sizes[kind]
        assert a["observations"].shape == a["next_observations"].shape == (n, 3)
        assert a["actions"].shape == (n, 1) and a["rewards"].shape == (n,)
        assert a["observations"].dtype == a["actions"].dtype == np.float32
        assert a["terminals"].dtype == a["timeouts"].dtype == np.bool_
        m = ds.metadata
        assert m["name"] == f"pendulum-{kind}-v0" and m["kind"] == kind
        assert m["env"] == "Pendulum-v1" and m["env_options"] == {"max_steps_in_episode": EPISODE}
        assert m["seed"] == SEED and m["num_episodes"] == n // EPISODE
        assert m["ref_min_score"] == pytest.approx(random_return, rel=1e-9)
        assert m["ref_max_score"] == pytest.approx(expert_return, rel=1e-9)
        assert m["behaviour_return"] == pytest.approx(dl.episode_returns(ds).mean(), rel=1e-9)
        assert m["code_version"].startswith(gen.code_version().split("+")[0])
        assert isinstance(m["policy"], str) and m["policy"]
        g = m["generator"]
        assert g["settings"]["total_timesteps"] == 600
        assert g["sac_config"]["hidden_sizes"] == [8, 8]
    # Every kind shares the references: random data scores 0, expert data 100.
    assert dl.normalized_score(random_return, data["pendulum-medium-v0"]) == pytest.approx(0.0)
    assert dl.normalized_score(expert_return, data["pendulum-medium-v0"]) == \
        pytest.approx(100.0)


def test_same_seed_gives_bit_identical_arrays(generated, tmp_path, monkeypatch):
    _, data = generated
    again = _generate_into(monkeypatch, tmp_path / "again", SEED)
    for name in NAMES:
        for key in dl.KEYS:
            x, y = data[name].arrays[key], again[name].arrays[key]
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x, y), (name, key)
        assert again[name].metadata["generator"] == data[name].metadata["generator"]
    other = _generate_into(monkeypatch, tmp_path / "other", SEED + 1)
    for name in ("pendulum-random-v0", "pendulum-expert-v0"):
        assert not np.array_equal(other[name].arrays["actions"], data[name].arrays["actions"])


def test_medium_expert_is_medium_then_expert(generated):
    _, data = generated
    me, m, e = (data[f"pendulum-{k}-v0"].arrays for k in ("medium-expert", "medium", "expert"))
    for key in dl.KEYS:
        np.testing.assert_array_equal(me[key], np.concatenate([m[key], e[key]]))


def test_episodes_end_with_timeouts_and_chain_observations(generated):
    _, data = generated
    for name, ds in data.items():
        a = ds.arrays
        ends = np.flatnonzero(a["timeouts"])
        # Pendulum never terminates: every episode is truncated at EPISODE steps.
        assert not a["terminals"].any(), name
        np.testing.assert_array_equal(ends, np.arange(EPISODE - 1, ds.size, EPISODE))
        inside = np.setdiff1d(np.arange(ds.size - 1), ends)
        np.testing.assert_array_equal(a["next_observations"][inside],
                                      a["observations"][inside + 1])
        # After a timeout comes a fresh episode, not the final observation.
        assert np.all(np.any(a["next_observations"][ends[:-1]] != a["observations"][ends[:-1] + 1],
                             axis=1)), name


def test_transitions_follow_the_dynamics_with_environment_unit_actions(generated):
    """s' and r recomputed from (s, a) with the env's own step: checks that actions are stored
    in environment units and next_observations are the true next states, timeouts included."""
    from gymnax.environments.classic_control.pendulum import EnvState
    import envs
    env, params = envs.make("Pendulum-v1", max_steps_in_episode=EPISODE)

    def step(obs, action):
        state = EnvState(theta=jnp.arctan2(obs[1], obs[0]), theta_dot=obs[2], last_u=0.0, time=0)
        next_obs, _, reward, _, _ = env.step_env(jax.random.key(0), state, action, params)
        return next_obs, reward

    step = jax.jit(jax.vmap(step))
    _, data = generated
    for name, ds in data.items():
        a = ds.arrays
        next_obs, reward = step(a["observations"], a["actions"])
        np.testing.assert_allclose(next_obs, a["next_observations"], atol=2e-5, err_msg=name)
        np.testing.assert_allclose(reward, a["rewards"], rtol=1e-4, atol=1e-4, err_msg=name)
        assert a["actions"].min() >= -2.0 and a["actions"].max() <= 2.0, name
    # Uniform random actions span the box [-2, 2] (environment units, not SAC's [-1, 1]).
    for name in ("pendulum-random-v0", "pendulum-medium-replay-v0"):
        assert np.abs(data[name].arrays["actions"]).max() > 1.5, name


def test_medium_snapshot_follows_the_documented_rule(generated):
    _, data = generated
    meta = data["pendulum-medium-v0"].metadata
    g = meta["generator"]
    curve = g["curve"]
    assert curve["env_steps"] == list(range(200, 601, 100))
    scores = dl.normalized_score(np.array(curve["sampled_return"]), meta)
    k = gen.select_medium(scores[:-1], 100.0 / 3.0, 10.0)
    assert g["medium_snapshot"]["index"] == k
    assert g["medium_snapshot"]["env_steps"] == curve["env_steps"][k]
    assert g["medium_snapshot"]["normalized"] == pytest.approx(scores[k])
    # The snapshot was judged on the very episodes of the medium data.
    assert meta["behaviour_return"] == pytest.approx(curve["sampled_return"][k], rel=1e-5)
    assert g["expert_snapshot"]["env_steps"] == 600
    # medium-replay: the buffer up to the medium snapshot, whole episodes only.
    replay = data["pendulum-medium-replay-v0"]
    assert replay.size == g["replay_transitions"]
    assert replay.size == curve["env_steps"][k] // EPISODE * EPISODE


def test_select_medium():
    assert gen.select_medium([0.0, 25.0, 40.0, 35.0, 100.0], 100 / 3, 10.0) == 1
    assert gen.select_medium([0.0, 20.0, 40.0, 35.0, 100.0], 100 / 3, 10.0) == 2
    assert gen.select_medium([0.0, 50.0, 35.0], 100 / 3, 10.0) == 2
    assert gen.select_medium([0.0, 5.0, 80.0, 90.0], 100 / 3, 10.0) == 1  # none inside: closest
    assert gen.select_medium([20.0, 40.0], 30.0, 1.0) == 0  # tie: the earliest
    with pytest.raises(ValueError, match="non-empty"):
        gen.select_medium([], 30.0, 1.0)


def test_replay_episode_ends():
    obs = np.array([[0.0], [1.0], [2.0], [9.0], [10.0], [11.0]])
    # A reset after step 2; 1-ulp rounding differences (XLA fusions) are no boundary.
    next_obs = np.array([[1.0], [np.nextafter(2.0, 3.0)], [3.0], [10.0], [11.0], [12.0]])
    terminated = np.array([False, False, False, False, True, False])
    ends = episodes.episode_ends(terminated, observations=obs, next_observations=next_obs,
                                 rtol=gen._REPLAY_RTOL, atol=gen._REPLAY_ATOL, close_last=True)
    np.testing.assert_array_equal(ends, [False, False, True, False, True, True])


def test_deterministic_rollout_is_sac_act(generated):
    prog = gen._programs("Pendulum-v1", gen.generation_settings("pendulum", TINY))
    state = prog.init(jax.random.key(0))
    trs = prog.rollout(jax.random.key(1), state.actor_params, num_episodes=2, mode="mean")
    obs = trs["observations"].reshape(-1, 3)
    np.testing.assert_allclose(trs["actions"].reshape(-1, 1),
                               sac.act(state, obs, prog.config, prog.task), atol=1e-6)


def test_ensure_reuses_the_cache(generated, monkeypatch):
    cache, _ = generated
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    monkeypatch.setattr(gen, "generate", lambda *a, **k: pytest.fail("regenerated"))
    for name in NAMES:
        assert gen.ensure(name, progress=False) == cache / f"{name}.hdf5"
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_ensure_ignores_a_leftover_temp_file_and_generates(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    leftover = tmp_path / ".pendulum-medium-v0.hdf5.123.0a1b2c.tmp"
    leftover.write_bytes(b"\x89HDF\r\n partial write")
    calls = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda prefix, **kw: calls.append(prefix) or
                        real(prefix, seed=SEED, progress=False, overrides=TINY))
    path = gen.ensure("pendulum-medium-v0", progress=False)
    assert calls == ["pendulum"] and path == tmp_path / "pendulum-medium-v0.hdf5"
    assert dl.load("pendulum-medium-v0").size == 4 * EPISODE
    gen.ensure("pendulum-medium-v0", progress=False)
    assert calls == ["pendulum"]


def test_interrupted_generation_leaves_the_cached_set_untouched_and_ensure_recovers(
        generated, tmp_path, monkeypatch):
    """Interrupted while writing the fourth file: the files were staged, so the cache holds
    exactly the set it held before (here: none; then the generated one) and no temporary."""
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    real_save = dl.save_hdf5

    def failing_save(path, dataset):
        if dataset.metadata["kind"] == "medium-replay":
            raise KeyboardInterrupt
        return real_save(path, dataset)

    monkeypatch.setattr(dl, "save_hdf5", failing_save)
    with pytest.raises(KeyboardInterrupt):
        gen.generate("pendulum", seed=SEED, progress=False, overrides=TINY)
    assert list(tmp_path.iterdir()) == []
    cache, _ = generated
    for name in NAMES:
        shutil.copy(cache / f"{name}.hdf5", tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        gen.generate("pendulum", seed=SEED + 1, progress=False, overrides=TINY)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    dl.check_set("pendulum")
    monkeypatch.setattr(dl, "save_hdf5", real_save)
    (tmp_path / "pendulum-medium-replay-v0.hdf5").unlink()
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda prefix, **kw: real(
        prefix, seed=SEED, progress=False, overrides=TINY))
    assert os.path.isfile(gen.ensure("pendulum-medium-replay-v0", progress=False))
    dl.check_set("pendulum")


def test_bad_requests_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid: .*total_timesteps"):
        gen.generation_settings("pendulum", {"total_steps": 5})
    with pytest.raises(ValueError, match="generator-set .*lr"):
        gen.generation_settings("pendulum", {"sac": {"num_envs": 4}})
    with pytest.raises(ValueError, match="valid: .*medium"):
        gen.generation_settings("pendulum", {"episodes": {"replay": 3}})
    with pytest.raises(ValueError, match="must cover learning_starts"):
        gen.generation_settings("pendulum", {"total_timesteps": 100})
    with pytest.raises(ValueError, match="valid: .*pendulum"):
        gen.generation_settings("cartpole")
    with pytest.raises(dl.DatasetError, match="valid: .*pendulum"):
        gen.generate("cartpole", progress=False)
    with pytest.raises(dl.DatasetError, match="valid names"):
        gen.ensure("pendulum-mediocre-v0")


def test_command_line_table_and_list(generated, monkeypatch):
    monkeypatch.setattr(gen, "generate", lambda *a, **k: pytest.fail("regenerated"))
    out = []
    flags = types.SimpleNamespace(list=False, env="pendulum", seed=SEED, force=False,
                                  progress=False)
    assert cli.main(["datasets"], flags, out.append) == 0
    text = "\n".join(out)
    lines = text.splitlines()
    for name in NAMES:
        assert name in text
    row = next(line for line in lines if line.startswith("pendulum-random-v0"))
    assert row.split()[1:4] == ["150", "3", f"{cli.summary_rows('pendulum')[0]['mean_return']:.2f}"]
    assert row.split()[4] == "0.0"
    out.clear()
    assert cli.main(["datasets"], types.SimpleNamespace(list=True), out.append) == 0
    assert any("pendulum-expert-v0" in line and "MiB" in line for line in out)
    out.clear()
    bad = types.SimpleNamespace(list=False, env="nope", seed=0, force=False, progress=False)
    assert cli.main(["datasets"], bad, out.append) == 2 and "pendulum" in out[0]


def test_command_line_overrides_generate_a_tiny_set_and_bad_ones_are_refused(generated, tmp_path,
                                                                            monkeypatch):
    import json

    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    calls = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda *a, **k: calls.append(k) or real(*a, **k))
    for bad, message in (("{total_timesteps: 5}", "Expecting property name"),
                         ("[1, 2]", "a JSON object is needed, got list"),
                         ('{"total_steps": 5}', "unknown generation setting 'total_steps'"),
                         ('{"env_options": {"gravity": 5}}', "unknown option(s) ['gravity']")):
        out = []
        assert cli.main(["datasets"], _flags(overrides=bad), out.append) == 2
        assert len(out) == 1 and out[0].startswith(f"ERROR: --overrides={bad!r}: ")
        assert message in out[0]
    assert calls == [] and not list(tmp_path.iterdir())
    # The generation settings of the fixture, as JSON: generated into the empty cache (the
    # programs are the fixture's), the same arrays; a second call generates again.
    out = []
    assert cli.main(["datasets"], _flags(overrides=json.dumps(TINY)), out.append) == 0
    assert "generated the pendulum datasets" in out[0]
    assert calls[0]["overrides"] == json.loads(json.dumps(TINY))
    _, data = generated
    for name in NAMES:
        np.testing.assert_array_equal(dl.load_hdf5(tmp_path / f"{name}.hdf5").arrays["rewards"],
                                      data[name].arrays["rewards"])
    assert cli.main(["datasets"], _flags(overrides=json.dumps(TINY)), [].append) == 0
    assert len(calls) == 2


# ---------------------------------------------------------------------------- one set, repairs
def _copy_set(generated, directory):
    cache, _ = generated
    directory.mkdir(exist_ok=True)
    for name in NAMES:
        shutil.copy(cache / f"{name}.hdf5", directory)
    return directory


def _tiny_generate(monkeypatch):
    real = gen.generate
    calls = []

    def tiny(prefix, *, seed=0, progress=True, overrides=None):
        calls.append(seed)
        return real(prefix, seed=seed, progress=False, overrides=TINY)

    monkeypatch.setattr(gen, "generate", tiny)
    return calls


def _flags(**kw):
    return types.SimpleNamespace(**{"list": False, "env": "pendulum", "seed": SEED,
                                    "force": False, "progress": False, **kw})


def test_the_five_files_share_one_set_id(generated):
    _, data = generated
    ids = {data[name].metadata[dl.SET_ID] for name in NAMES}
    assert len(ids) == 1 and len(ids.pop()) == 16
    dl.check_set("pendulum")


def test_generation_interrupted_after_its_first_file_leaves_a_mix_that_is_refused_then_repaired(
        generated, tmp_path, monkeypatch):
    """A generation stopped right after its first file replaced the cached one (the real kill
    of a writer is tests/test_dataset_sets.py): make_task, launch.run's path, refuses the mix
    in one line naming the repair command, and `launch.datasets --force` repairs it."""
    cache = _copy_set(generated, tmp_path / "cache")
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(cache))
    real_replace = os.replace

    def replace_then_stop(src, dst):
        real_replace(src, dst)
        if os.path.dirname(os.fspath(dst)) == str(cache):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        gen.generate("pendulum", seed=SEED + 1, progress=False, overrides=TINY)
    monkeypatch.setattr(os, "replace", real_replace)
    seeds = {n: dl.load_metadata(cache / f"{n}.hdf5")["seed"] for n in NAMES}
    assert seeds == {n: SEED + 1 if "random" in n else SEED for n in NAMES}
    config = bc.default_config()
    with pytest.raises(ValueError) as e:
        common.make_task("pendulum-medium-v0", config)
    message = str(e.value)
    assert "\n" not in message and "pendulum-random-v0.hdf5 is from another generation" in message
    assert f"(seed {SEED + 1}, " in message and message.endswith(
        "repair: python -m launch.datasets --env=pendulum --force")
    calls = _tiny_generate(monkeypatch)
    assert cli.main(["datasets"], _flags(force=True), [].append) == 0
    assert calls == [SEED]
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.hdf5" for n in NAMES)
    dl.check_set("pendulum")
    assert common.make_task("pendulum-medium-v0", config).name == "pendulum-medium-v0"


def test_force_repairs_a_truncated_file_that_list_shows_as_damaged(generated, tmp_path,
                                                                   monkeypatch):
    cache = _copy_set(generated, tmp_path / "cache")
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(cache))
    path = cache / "pendulum-expert-v0.hdf5"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    out = []
    assert cli.main(["datasets"], _flags(list=True), out.append) == 0
    line = next(x for x in out if "pendulum-expert-v0" in x)
    assert "DAMAGED" in line and "truncated" in line and "--env=pendulum --force" in line
    assert all(x.endswith(" ok") for x in out if "pendulum-random-v0" in x)
    with pytest.raises(ValueError, match="pendulum-expert-v0.hdf5 is damaged .*--force"):
        common.make_task("pendulum-medium-v0", bc.default_config())
    calls = _tiny_generate(monkeypatch)
    out.clear()
    assert cli.main(["datasets"], _flags(force=True), out.append) == 0
    assert calls == [SEED]
    dl.check_set("pendulum")
    # Without --force a damaged cache is regenerated too (it is not the asked-for set).
    path.write_bytes(b"garbage")
    out.clear()
    assert cli.main(["datasets"], _flags(), out.append) == 0
    assert calls == [SEED, SEED] and "generated the pendulum datasets" in out[0]
    dl.check_set("pendulum")
