"""envs.datasets: names, the atomic HDF5 round trip, D4RL and Minari files, validation errors,
normalized scores and episode returns, checked against hand-computed numbers."""
import json
import os
import pathlib

import h5py
import numpy as np
import pytest

from envs import datasets as ds


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets an empty dataset cache and Minari root of its own."""
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "cache"


def make_arrays(n=12, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[4] = True
    timeouts[8] = True
    return {"observations": obs[:-1].copy(),
            "actions": rng.uniform(-2, 2, (n, act_dim)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32), "next_observations": obs[1:].copy(),
            "terminals": terminals, "timeouts": timeouts}


METADATA = {"name": "pendulum-medium-v0", "env": "Pendulum-v1", "env_options": {"max_speed": 8.0},
            "kind": "medium", "policy": "SAC snapshot, stochastic", "seed": 3,
            "behaviour_return": -512.25, "num_episodes": 2, "ref_min_score": -1218.5,
            "ref_max_score": -145.0, "code_version": "0.1.0+abc123", "flag": True,
            "generator": {"chunks": [1, 2], "note": None, "nested": {"a": 0.5}}, "missing": None}


def write_h5(path, arrays, attrs=None):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


# ----------------------------------------------------------------------------- names, cache

def test_names_parse_and_cache_path(cache):
    names = ds.dataset_names()
    assert len(names) == len(ds.ENVS) * len(ds.KINDS) == 30
    assert "pendulum-medium-replay-v0" in names
    assert ds.parse_name("pendulum-medium-replay-v0") == ("pendulum", "Pendulum-v1",
                                                          "medium-replay")
    assert ds.parse_name("pendulum-expert-v0") == ("pendulum", "Pendulum-v1", "expert")
    assert ds.cache_dir() == cache and cache.is_dir()
    assert ds.dataset_path("pendulum-random-v0") == cache / "pendulum-random-v0.hdf5"
    with pytest.raises(ds.DatasetError, match="did you mean 'pendulum-medium-v0'") as e:
        ds.parse_name("pendulum-meduim-v0")
    assert all(n in str(e.value) for n in names)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXRL_DATASETS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ds.cache_dir() == tmp_path / ".cache" / "jaxrl-diffusion-lab" / "datasets"


# ----------------------------------------------------------------------------- round trip

def test_round_trip_is_bit_identical(tmp_path):
    arrays = make_arrays()
    path = ds.save_hdf5(tmp_path / "d.hdf5", ds.Dataset(arrays, METADATA))
    loaded = ds.load(path)
    assert set(loaded.arrays) == set(ds.KEYS)
    for k in ds.KEYS:
        assert loaded.arrays[k].dtype == arrays[k].dtype, k
        assert loaded.arrays[k].tobytes() == arrays[k].tobytes(), k
    assert loaded.metadata == METADATA
    assert type(loaded.metadata["seed"]) is int and type(loaded.metadata["flag"]) is bool
    assert (loaded.size, loaded.obs_dim, loaded.action_dim) == (12, 3, 2)
    assert ds.load_metadata(path) == METADATA
    assert os.listdir(tmp_path) == ["d.hdf5"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any new file


def test_file_is_d4rl_layout(tmp_path):
    """Plain h5py (as d4rl's readers do) finds the six arrays at the root."""
    path = ds.save_hdf5(tmp_path / "d.hdf5", ds.Dataset(make_arrays(), METADATA))
    with h5py.File(path, "r") as f:
        assert set(ds.KEYS) <= set(f.keys())
        assert f["observations"].shape == (12, 3) and f["observations"].dtype == np.float32
        assert f["rewards"].shape == (12,) and f["terminals"].dtype == np.bool_
        assert f.attrs["env"] == "Pendulum-v1" and f.attrs["seed"] == 3
        assert json.loads(f.attrs["env_options"]) == {"max_speed": 8.0}


def test_save_casts_to_canonical_dtypes(tmp_path):
    arrays = make_arrays()
    arrays = {**arrays, "observations": arrays["observations"].astype(np.float64),
              "terminals": arrays["terminals"].astype(np.float32),
              "timeouts": arrays["timeouts"].astype(int)}
    path = ds.save_hdf5(tmp_path / "d.h5", ds.Dataset(arrays, {"np": np.float32(1.5)}))
    loaded = ds.load_hdf5(path)
    assert loaded.arrays["observations"].dtype == np.float32
    assert loaded.arrays["terminals"].dtype == bool and loaded.arrays["terminals"][4]
    assert loaded.arrays["timeouts"].dtype == bool and loaded.arrays["timeouts"].sum() == 1
    assert loaded.metadata == {"np": 1.5, "name": "d"}


def test_tiny_pendulum_round_trip_and_returns(tmp_path):
    from tests.offline_data import tiny_pendulum_dataset

    data = tiny_pendulum_dataset()
    loaded = ds.load(ds.save_hdf5(tmp_path / "tiny.hdf5", data))
    for k in ds.KEYS:
        np.testing.assert_array_equal(loaded.arrays[k], data.arrays[k])
    assert loaded.metadata == data.metadata
    returns = ds.episode_returns(loaded)
    assert returns.shape == (40,)  # every episode ends by timeout at step 200
    by_episode = data.arrays["rewards"].astype(np.float64).reshape(40, 200)
    np.testing.assert_allclose(returns, by_episode.sum(1))
    # the scripted controller episodes beat the random ones (first 25%) by far
    assert returns[10:].mean() > returns[:10].mean() + 500


# ----------------------------------------------------------------------------- atomic writes

def test_interrupted_replace_leaves_no_file(tmp_path, monkeypatch):
    def crash(src, dst):
        raise KeyboardInterrupt("killed during rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ds.save_hdf5(tmp_path / "d.hdf5", ds.Dataset(make_arrays(), METADATA))
    assert os.listdir(tmp_path) == []


def test_interrupted_write_keeps_older_file(tmp_path, monkeypatch):
    path = tmp_path / "d.hdf5"
    old = make_arrays(seed=1)
    ds.save_hdf5(path, ds.Dataset(old, {"name": "old"}))
    real = h5py.Group.create_dataset

    def crash_on_rewards(self, name, *args, **kwargs):
        if name == "rewards":
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)
    monkeypatch.setattr(h5py.Group, "create_dataset", crash_on_rewards)
    with pytest.raises(OSError, match="disk full"):
        ds.save_hdf5(path, ds.Dataset(make_arrays(seed=2), {"name": "new"}))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["d.hdf5"]
    loaded = ds.load_hdf5(path)
    assert loaded.metadata == {"name": "old"}
    np.testing.assert_array_equal(loaded.arrays["rewards"], old["rewards"])


def test_save_refuses_invalid_data(tmp_path):
    arrays = make_arrays()
    arrays["rewards"] = arrays["rewards"][:-1]
    with pytest.raises(ds.DatasetError, match="'rewards' has 11 rows, expected 12"):
        ds.save_hdf5(tmp_path / "d.hdf5", ds.Dataset(arrays, {}))
    with pytest.raises(ds.DatasetError, match="metadata 'f' cannot be stored as JSON"):
        ds.save_hdf5(tmp_path / "d.hdf5", ds.Dataset(make_arrays(), {"f": object()}))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- loader errors

def test_validate_message_format():
    arrays = make_arrays(n=100)
    arrays["rewards"] = arrays["rewards"][:99]
    with pytest.raises(ds.DatasetError) as e:
        ds.validate(arrays, "x.hdf5")
    assert str(e.value) == "x.hdf5: key 'rewards' has 99 rows, expected 100 like 'observations'"


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("actions"), r"missing key\(s\) \['actions'\]"),
    (lambda a: a.update(terminals=a["terminals"][:-2]), "key 'terminals' has 10 rows, expected 12"),
    (lambda a: a.update(rewards=np.stack([a["rewards"]] * 2, axis=1)),
     r"key 'rewards' has shape \(12, 2\) \(rank 2\), expected rank 1"),
    (lambda a: a.update(observations=a["observations"][:, 0]),
     "key 'observations' .* expected rank 2"),
    (lambda a: a.update(next_observations=a["next_observations"][:, :2]),
     r"'next_observations' has shape \(12, 2\), expected \(12, 3\)"),
    (lambda a: a["rewards"].__setitem__(5, np.nan), "key 'rewards' has 1 non-finite value.*row 5"),
    (lambda a: a["next_observations"].__setitem__((7, 1), np.inf),
     "key 'next_observations' has 1 non-finite.*row 7"),
    (lambda a: a.update(actions=np.array([[b"a", b"b"]] * 12)),
     r"key 'actions' has dtype \|S1, expected numbers"),
])
def test_load_hdf5_errors_name_file_key_and_problem(tmp_path, change, message):
    arrays = make_arrays()
    change(arrays)
    path = write_h5(tmp_path / "bad.hdf5", arrays)
    with pytest.raises(ds.DatasetError, match=message) as e:
        ds.load_hdf5(path)
    assert str(e.value).startswith(str(path))


def test_missing_required_key_in_d4rl_file(tmp_path):
    arrays = make_arrays()
    del arrays["rewards"], arrays["next_observations"]
    with pytest.raises(ds.DatasetError, match=r"bad.hdf5: missing key\(s\) \['rewards'\]"):
        ds.load(write_h5(tmp_path / "bad.hdf5", arrays))


def test_not_hdf5_and_missing_file(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(ds.DatasetError, match="notes.hdf5: not an HDF5 file"):
        ds.load(text)
    with pytest.raises(ds.DatasetError, match="nowhere.h5: no such file"):
        ds.load(tmp_path / "nowhere.h5")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ds.DatasetError, match="unknown dataset 'hopper-medium-v2'") as e:
        ds.load("hopper-medium-v2")
    assert all(n in str(e.value) for n in ds.dataset_names())
    assert "minari:<dataset id>" in str(e.value)


def test_missing_cached_dataset_names_the_generate_command(cache):
    with pytest.raises(ds.DatasetError, match="python -m launch.datasets --env=pendulum") as e:
        ds.load("pendulum-expert-v0")
    assert str(cache / "pendulum-expert-v0.hdf5") in str(e.value)
    with pytest.raises(ds.DatasetError, match="--env=reacher"):
        ds.normalized_score(0.0, "reacher-random-v0")


def test_registered_name_loads_from_cache():
    arrays = make_arrays()
    ds.save_hdf5(ds.dataset_path("pendulum-random-v0"), ds.Dataset(arrays, METADATA))
    loaded = ds.load("pendulum-random-v0")
    np.testing.assert_array_equal(loaded.arrays["actions"], arrays["actions"])


# ----------------------------------------------------------------------------- D4RL files

def qlearning_reference(a):
    """d4rl.qlearning_dataset's loop (terminate_on_end=False, timeouts given) on numpy arrays."""
    rows, nxt = [], []
    for i in range(len(a["rewards"]) - 1):
        if a["timeouts"][i]:
            continue
        rows.append(i)
        nxt.append(a["observations"][i + 1])
    return np.array(rows), np.array(nxt)


def test_d4rl_file_without_next_observations_or_timeouts(tmp_path):
    obs = np.arange(5, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], np.float32)
    f = write_h5(tmp_path / "hopper-medium-v2.hdf5", {
        "observations": obs, "actions": np.zeros((5, 1), np.float32),
        "rewards": np.array([1, 2, 3, 4, 5], np.float32),
        "terminals": np.array([0, 1, 0, 0, 0], bool)})
    with h5py.File(f, "a") as h:  # D4RL's metadata group, with policy weights
        h["metadata/algorithm"] = b"SAC"
        h["metadata/policy/fc0/weight"] = np.ones((4, 4))
        h["infos/qpos"] = np.zeros((5, 2))
    loaded = ds.load(f)
    # rows 0..3 kept (the last row has no successor); the row before the dropped one ends
    # its episode by timeout
    np.testing.assert_array_equal(loaded.arrays["observations"], obs[:4])
    np.testing.assert_array_equal(loaded.arrays["next_observations"],
                                  [[1, 10], [2, 20], [3, 30], [4, 40]])
    np.testing.assert_array_equal(loaded.arrays["rewards"], [1, 2, 3, 4])
    np.testing.assert_array_equal(loaded.arrays["terminals"], [False, True, False, False])
    np.testing.assert_array_equal(loaded.arrays["timeouts"], [False, False, False, True])
    # the D4RL name brings d4rl/infos.py's hopper reference returns and the 1000-step limit
    assert loaded.metadata == {"name": "hopper-medium-v2", "d4rl_metadata": {"algorithm": "SAC"},
                               "derived": ["timeouts", "next_observations"],
                               "d4rl_name": "hopper-medium-v2", "env": "gymnasium:Hopper-v5",
                               "ref_min_score": -20.272305, "ref_max_score": 3234.3,
                               "reference_source": "d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE",
                               "max_episode_steps": 1000}
    np.testing.assert_array_equal(ds.episode_returns(loaded), [3.0, 7.0])


def test_d4rl_timeouts_drop_rows_like_qlearning_dataset(tmp_path):
    obs = np.arange(7, dtype=np.float32)[:, None]
    arrays = {"observations": obs, "actions": obs * 2, "rewards": obs[:, 0] + 0.5,
              "terminals": np.array([0, 0, 0, 0, 1, 0, 0], bool),
              "timeouts": np.array([0, 0, 1, 0, 0, 0, 0], bool)}
    loaded = ds.load_hdf5(write_h5(tmp_path / "d.h5", arrays))
    np.testing.assert_array_equal(loaded.arrays["observations"][:, 0], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(loaded.arrays["next_observations"][:, 0], [1, 2, 4, 5, 6])
    np.testing.assert_array_equal(loaded.arrays["terminals"], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(loaded.arrays["timeouts"], [0, 1, 0, 0, 1])
    assert loaded.metadata["derived"] == ["next_observations"]

    # random episodes: the same rows and next observations as d4rl's loop
    rng = np.random.default_rng(0)
    n = 200
    arrays = {"observations": rng.normal(size=(n, 3)).astype(np.float32),
              "actions": rng.normal(size=(n, 2)).astype(np.float32),
              "rewards": rng.normal(size=n).astype(np.float32),
              "terminals": rng.random(n) < 0.05, "timeouts": rng.random(n) < 0.05}
    loaded = ds.load_hdf5(write_h5(tmp_path / "r.h5", arrays))
    rows, nxt = qlearning_reference(arrays)
    np.testing.assert_array_equal(loaded.arrays["observations"], arrays["observations"][rows])
    np.testing.assert_array_equal(loaded.arrays["actions"], arrays["actions"][rows])
    np.testing.assert_array_equal(loaded.arrays["terminals"], arrays["terminals"][rows])
    np.testing.assert_array_equal(loaded.arrays["next_observations"], nxt)


# ----------------------------------------------------------------------------- Minari

def write_minari(root, dataset_id, episodes, info=None):
    data = pathlib.Path(root) / dataset_id / "data"
    data.mkdir(parents=True)
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i, ep in enumerate(episodes):
            g = f.create_group(f"episode_{i}")
            g.attrs["id"] = i
            g.attrs["total_steps"] = len(ep["rewards"])
            for k, v in ep.items():
                g.create_dataset(k, data=v)
    (data / "metadata.json").write_text(json.dumps(info or {}))
    return data


def minari_episode(start, steps, terminated):
    obs = (start + np.arange(steps + 1, dtype=np.float32))[:, None] * np.ones((1, 3), np.float32)
    end = np.zeros(steps, bool)
    end[-1] = True
    return {"observations": obs, "actions": np.full((steps, 1), start, np.float32),
            "rewards": np.ones(steps) * start, "terminations": end & terminated,
            "truncations": end & (not terminated)}


MINARI_INFO = {"dataset_id": "mini/pend-v0", "total_episodes": 2, "total_steps": 5,
               "data_format": "hdf5", "ref_min_score": -1000.0, "ref_max_score": -200.0,
               "env_spec": json.dumps({"id": "Pendulum-v1", "max_episode_steps": 200})}


def test_minari_directory(tmp_path):
    write_minari(tmp_path / "minari", "mini/pend-v0",
                 [minari_episode(10, 3, terminated=True), minari_episode(20, 2, terminated=False)],
                 MINARI_INFO)
    loaded = ds.load("minari:mini/pend-v0")  # root from $MINARI_DATASETS_PATH
    a = loaded.arrays
    np.testing.assert_array_equal(a["observations"][:, 0], [10, 11, 12, 20, 21])
    np.testing.assert_array_equal(a["next_observations"][:, 0], [11, 12, 13, 21, 22])
    np.testing.assert_array_equal(a["actions"][:, 0], [10, 10, 10, 20, 20])
    np.testing.assert_array_equal(a["terminals"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(a["timeouts"], [0, 0, 0, 0, 1])
    assert a["rewards"].dtype == np.float32 and a["next_observations"].shape == (5, 3)
    m = loaded.metadata
    assert m["name"] == "minari:mini/pend-v0" and m["env"] == m["minari_env_id"] == "Pendulum-v1"
    assert (m["ref_min_score"], m["ref_max_score"], m["num_episodes"]) == (-1000.0, -200.0, 2)
    assert m["behaviour_return"] == (30 + 40) / 2
    assert ds.normalized_score(-600.0, loaded) == 50.0
    # the same data through `root`, the dataset directory and the data directory
    other = tmp_path / "elsewhere"
    write_minari(other, "x-v0", [minari_episode(10, 3, True), minari_episode(20, 2, False)])
    for source in (ds.load_minari("x-v0", root=other), ds.load_minari(other / "x-v0"),
                   ds.load_minari(other / "x-v0" / "data")):
        np.testing.assert_array_equal(source.arrays["observations"], a["observations"])
        assert "env" not in source.metadata


def test_minari_errors(tmp_path):
    with pytest.raises(ds.DatasetError,
                       match="Minari dataset 'absent-v0' not found.*minari/absent-v0/data"):
        ds.load("minari:absent-v0")
    ep = minari_episode(0, 3, True)
    ep["observations"] = ep["observations"][:-1]
    write_minari(tmp_path / "m", "short-v0", [ep])
    with pytest.raises(ds.DatasetError,
                       match=r"episode_0/observations has shape \(3, 3\), expected 4 rows"):
        ds.load_minari("short-v0", root=tmp_path / "m")
    data = write_minari(tmp_path / "m", "dict-v0", [minari_episode(0, 2, True)])
    with h5py.File(data / "main_data.hdf5", "a") as f:
        del f["episode_0/observations"]
        f["episode_0/observations/pos"] = np.zeros((3, 2))
    with pytest.raises(ds.DatasetError, match="episode_0/observations is a group"):
        ds.load_minari("dict-v0", root=tmp_path / "m")
    ep = minari_episode(0, 3, True)
    ep["rewards"][1] = np.nan
    write_minari(tmp_path / "m", "nan-v0", [ep])
    with pytest.raises(ds.DatasetError, match="main_data.hdf5: key 'rewards' has 1 non-finite"):
        ds.load_minari("nan-v0", root=tmp_path / "m")


# ----------------------------------------------------------------------------- scores, returns

def test_normalized_score_hand_numbers():
    meta = {"name": "p", "ref_min_score": -1200.0, "ref_max_score": -200.0}
    assert ds.normalized_score(-1200.0, meta) == 0.0  # random policy
    assert ds.normalized_score(-200.0, meta) == 100.0  # expert
    assert ds.normalized_score(-700.0, meta) == 50.0
    assert ds.normalized_score(-1300.0, meta) == -10.0
    np.testing.assert_allclose(ds.normalized_score(np.array([-1200.0, -450.0]), meta), [0.0, 75.0])
    assert ds.normalized_score(-700.0, ds.Dataset(make_arrays(), meta)) == 50.0
    with pytest.raises(ds.DatasetError, match="'q': metadata has no 'ref_min_score'"):
        ds.normalized_score(1.0, {"name": "q", "ref_max_score": 1.0})
    with pytest.raises(ds.DatasetError, match="must be finite numbers that differ"):
        ds.normalized_score(1.0, {"ref_min_score": 1.0, "ref_max_score": 1.0})
    with pytest.raises(ds.DatasetError, match="ref_min_score='low'"):
        ds.normalized_score(1.0, {"ref_min_score": "low", "ref_max_score": 1.0})


def test_normalized_score_of_registered_name_reads_the_cache():
    ds.save_hdf5(ds.dataset_path("pendulum-medium-v0"), ds.Dataset(make_arrays(), METADATA))
    # (-145 - -1218.5) / 2 + -1218.5 is halfway
    assert ds.normalized_score(-681.75, "pendulum-medium-v0") == 50.0


def test_episode_returns_hand_case():
    arrays = {"rewards": np.array([1, 2, 3, 4, 5, 6, 7], np.float32),
              "terminals": np.array([0, 1, 0, 0, 0, 0, 0], bool),
              "timeouts": np.array([0, 0, 0, 0, 1, 0, 0], bool)}
    np.testing.assert_array_equal(ds.episode_returns(arrays), [3.0, 12.0])
    np.testing.assert_array_equal(ds.episode_returns(arrays, include_unfinished=True),
                                  [3.0, 12.0, 13.0])
    arrays["timeouts"][-1] = True
    np.testing.assert_array_equal(ds.episode_returns(arrays), [3.0, 12.0, 13.0])
    assert ds.episode_returns({k: v[:1] for k, v in arrays.items()}).shape == (0,)


def test_core_episode_boundaries_numpy_and_jax():
    """algorithms.core.episodes: ends from flags and from an observation break, ids, sums,
    starts, returns; numpy and (jitted) jax give the same."""
    import jax
    import jax.numpy as jnp

    from algorithms.core import episodes

    obs = np.array([[0.0], [1.0], [2.0], [9.0], [10.0], [11.0]], np.float32)
    next_obs = np.array([[1.0], [2.0], [3.0], [10.0], [11.0], [12.0]], np.float32)
    terminals = np.array([0, 0, 0, 0, 1, 0], np.float32)
    timeouts = np.array([1, 0, 0, 0, 0, 0], bool)
    rewards = np.arange(1.0, 7.0, dtype=np.float32)
    np.testing.assert_array_equal(episodes.episode_ends(terminals, timeouts),
                                  [1, 0, 0, 0, 1, 0])
    ends = episodes.episode_ends(terminals, observations=obs, next_observations=next_obs,
                                 close_last=True)  # the reset after row 2, the unfinished end
    np.testing.assert_array_equal(ends, [0, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(episodes.episode_ids(ends), [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(episodes.episode_starts(ends), [0, 3, 5])
    np.testing.assert_array_equal(episodes.episode_returns(rewards, ends), [6.0, 9.0, 6.0])
    sums, count = episodes.episode_sums(rewards, ends)
    np.testing.assert_array_equal(sums, [6.0, 9.0, 6.0, 0.0, 0.0, 0.0])
    assert count == 3

    @jax.jit
    def on_device(terminals, obs, next_obs, rewards):
        ends = episodes.episode_ends(terminals, observations=obs, next_observations=next_obs,
                                     close_last=True)
        return ends, episodes.episode_ids(ends), episodes.episode_sums(rewards, ends)

    j_ends, j_ids, (j_sums, j_count) = on_device(*map(jnp.asarray,
                                                      (terminals, obs, next_obs, rewards)))
    np.testing.assert_array_equal(j_ends, ends)
    np.testing.assert_array_equal(j_ids, episodes.episode_ids(ends))
    np.testing.assert_array_equal(j_sums, sums)
    assert int(j_count) == 3
    assert episodes.episode_returns(np.zeros(0), np.zeros(0, bool)).shape == (0,)
