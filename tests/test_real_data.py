"""Real offline data end to end: D4RL's published reference returns by dataset name, D4RL v2
and v0 files (checked against d4rl.qlearning_dataset's rules, transcribed here), Minari datasets
made by minari's own DataCollector (HDF5 and Arrow storage), the evaluation env and reference
score options, train-only runs, and the CLI training and evaluating on gymnasium Hopper-v5.

The MuJoCo / Minari parts are skipped without the mujoco / minari extras.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.offline import common
from envs import d4rl_reference
from envs import datasets as ds

ROOT = pathlib.Path(__file__).resolve().parents[1]
# d4rl/infos.py (Fu et al. 2020): REF_MIN_SCORE / REF_MAX_SCORE of the locomotion tasks.
HOPPER = (-20.272305, 3234.3)
HALFCHEETAH = (-280.178953, 12135.0)
WALKER2D = (1.629008, 4592.3)


@pytest.fixture(autouse=True)
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def config(**fields):
    c = common.offline_config()
    c.update(fields)
    return c


# ----------------------------------------------------------------------------- D4RL names

@pytest.mark.parametrize("name, expected", [
    ("hopper-medium-v2", ("hopper-medium-v2", *HOPPER, "gymnasium:Hopper-v5")),
    ("/data/hopper_medium_replay-v2.hdf5",
     ("hopper-medium-replay-v2", *HOPPER, "gymnasium:Hopper-v5")),
    ("halfcheetah_medium_expert-v2.hdf5",
     ("halfcheetah-medium-expert-v2", *HALFCHEETAH, "gymnasium:HalfCheetah-v5")),
    ("walker2d-full-replay-v1", ("walker2d-full-replay-v1", *WALKER2D, "gymnasium:Walker2d-v5")),
    ("walker_mixed.hdf5", ("walker2d-medium-replay-v0", *WALKER2D, "gymnasium:Walker2d-v5")),
    ("hopper_medium.hdf5", ("hopper-medium-v0", *HOPPER, "gymnasium:Hopper-v5")),
    ("ant-expert-v2", ("ant-expert-v2", -325.6, 3879.7, None)),
    ("pen-human-v1", ("pen-human-v1", 96.262799, 3076.8331017826877, None)),
    ("antmaze-umaze-diverse-v2", ("antmaze-umaze-diverse-v2", 0.0, 1.0, None)),
    ("maze2d-large-v1", ("maze2d-large-v1", 6.7, 273.99, None)),
])
def test_d4rl_reference_returns_by_name(name, expected):
    ref = d4rl_reference.lookup(name)
    assert tuple(ref[:4]) == expected


@pytest.mark.parametrize("name", ["hopper-medium-v3", "hopper-full-replay-v0", "mydata.hdf5",
                                  "pendulum-medium-v0"])
def test_names_without_published_reference_returns(name):
    assert d4rl_reference.lookup(name) is None


# ----------------------------------------------------------------------------- D4RL v0 files

def qlearning_dataset_rows(terminals, max_episode_steps, timeouts=None):
    """The rows d4rl.qlearning_dataset keeps (terminate_on_end=False), transcribed from its
    loop: i in range(N - 1); final = timeouts[i] if given, else episode_step == T - 1; a final
    row is skipped (episode_step = 0); else episode_step is reset on a terminal, the row kept,
    and episode_step incremented."""
    kept, episode_step = [], 0
    for i in range(len(terminals) - 1):
        done = bool(terminals[i])
        final = bool(timeouts[i]) if timeouts is not None else \
            episode_step == max_episode_steps - 1
        if final:
            episode_step = 0
            continue
        if done or final:
            episode_step = 0
        kept.append(i)
        episode_step += 1
    return np.array(kept)


def test_v0_file_cut_at_the_time_limit_like_qlearning_dataset(tmp_path):
    rng = np.random.default_rng(0)
    n, limit = 90, 7
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    terminals = rng.random(n) < 0.08
    f = tmp_path / "v0.hdf5"
    with h5py.File(f, "w") as h:  # no timeouts; rewards and terminals as [N, 1] columns
        h["observations"] = obs
        h["actions"] = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        h["rewards"] = np.arange(n, dtype=np.float32)[:, None]
        h["terminals"] = terminals[:, None]
    loaded = ds.load_hdf5(f, max_episode_steps=limit)
    rows = qlearning_dataset_rows(terminals, limit)
    assert len(rows) < n - 1 - terminals.sum() // 2  # the limit dropped rows
    a = loaded.arrays
    np.testing.assert_array_equal(a["observations"], obs[rows])
    np.testing.assert_array_equal(a["next_observations"], obs[rows + 1])
    np.testing.assert_array_equal(a["rewards"], rows.astype(np.float32))
    np.testing.assert_array_equal(a["terminals"], terminals[rows])
    # an episode ends at a terminal or before a dropped row: no transition crosses into the next
    dropped_next = ~np.isin(rows + 1, rows)
    np.testing.assert_array_equal(a["timeouts"], dropped_next & ~terminals[rows])
    assert loaded.metadata["derived"] == ["timeouts", "next_observations"]
    assert loaded.metadata["max_episode_steps"] == limit
    with pytest.raises(ds.DatasetError, match=r"no 'timeouts' .*--config\.eval_env=ENV"):
        ds.load_hdf5(f)


# ----------------------------------------------------------------------------- MuJoCo data

def _needs(*modules):
    for m in modules:
        pytest.importorskip(m)


def hopper_rollouts(steps, seed=0):
    """A random policy's `steps` Hopper-v5 steps as D4RL v2 columns (+ infos/qpos, qvel)."""
    import gymnasium as gym

    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    cols = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                            "qpos", "qvel")}
    for _ in range(steps):
        action = env.action_space.sample()
        cols["observations"].append(obs)
        cols["actions"].append(action)
        cols["qpos"].append(env.unwrapped.data.qpos.copy())
        cols["qvel"].append(env.unwrapped.data.qvel.copy())
        obs, reward, terminated, truncated, _ = env.step(action)
        cols["rewards"].append(reward)
        cols["terminals"].append(terminated)
        cols["timeouts"].append(truncated and not terminated)
        if terminated or truncated:
            obs, _ = env.reset()
    return {k: np.asarray(v) for k, v in cols.items()}


def write_d4rl_file(path, cols, v0=False):
    """D4RL's layout: float32 arrays and bool flags at the root, infos/*, metadata/*."""
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards"):
            f[key] = cols[key].astype(np.float32)
        f["terminals"] = cols["terminals"].astype(bool)
        if not v0:
            f["timeouts"] = cols["timeouts"].astype(bool)
        f["infos/qpos"] = cols["qpos"]
        f["infos/qvel"] = cols["qvel"]
        f["infos/action_log_probs"] = np.zeros(len(cols["rewards"]), np.float32)
        f["metadata/algorithm"] = "random"
        f["metadata/policy/fc0/weight"] = np.ones((4, 4), np.float32)
    return path


@pytest.mark.parametrize("v0", [False, True], ids=["v2", "v0"])
def test_d4rl_layout_file_task_on_gymnasium_hopper(tmp_path, v0):
    _needs("mujoco", "gymnasium")
    cols = hopper_rollouts(250)
    name = "hopper_random.hdf5" if v0 else "hopper_random-v2.hdf5"  # D4RL's download names
    path = write_d4rl_file(tmp_path / name, cols, v0=v0)
    task = common.make_task(str(path), config())
    timeouts = None if v0 else cols["timeouts"]
    rows = qlearning_dataset_rows(cols["terminals"], 1000, timeouts)
    np.testing.assert_array_equal(task.data["observations"],
                                  cols["observations"][rows].astype(np.float32))
    np.testing.assert_array_equal(task.data["next_observations"],
                                  cols["observations"][rows + 1].astype(np.float32))
    np.testing.assert_array_equal(task.data["terminals"], cols["terminals"][rows])
    np.testing.assert_allclose(task.data["actions"], cols["actions"][rows])  # box is [-1, 1]
    assert task.env.name == "gymnasium:Hopper-v5"
    assert (task.ref_min_score, task.ref_max_score) == HOPPER
    assert task.name == pathlib.Path(name).stem


def record_minari(dataset_id, steps, data_format, seed=0):
    """A random-policy Hopper-v5 dataset written by minari's DataCollector, and the same
    transitions as recorded from the collector's step results."""
    import gymnasium as gym
    import minari

    env = minari.DataCollector(gym.make("Hopper-v5"), data_format=data_format)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    seen = {k: [] for k in ("observations", "actions", "rewards", "next_observations",
                            "terminals", "timeouts")}
    for t in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or t == steps - 1  # minari closes the last episode by truncation
        for key, value in zip(seen, (obs, action, reward, next_obs, terminated,
                                     truncated and not terminated)):
            seen[key].append(value)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    with pytest.warns(UserWarning):  # minari asks for a description, an eval env ...
        env.create_dataset(dataset_id=dataset_id, algorithm_name="random",
                           ref_min_score=HOPPER[0], ref_max_score=HOPPER[1])
    return {k: np.asarray(v) for k, v in seen.items()}


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
def test_minari_data_collector_round_trip(data_format):
    _needs("mujoco", "gymnasium", "minari")
    if data_format == "arrow":
        _needs("pyarrow")
    seen = record_minari(f"test/hopper/random-{data_format}-v0", 150, data_format)
    loaded = ds.load(f"minari:test/hopper/random-{data_format}-v0")
    for key, want in seen.items():
        np.testing.assert_array_equal(loaded.arrays[key],
                                      want.astype(loaded.arrays[key].dtype), err_msg=key)
    meta = loaded.metadata
    assert (meta["env"], meta["minari_env_id"], meta["data_format"]) == (
        "gymnasium:Hopper-v5", "Hopper-v5", data_format)
    assert (meta["ref_min_score"], meta["ref_max_score"]) == HOPPER
    task = common.make_task(f"minari:test/hopper/random-{data_format}-v0", config())
    assert task.env.name == "gymnasium:Hopper-v5"


def test_arrow_storage_without_minari_names_the_extra(tmp_path, monkeypatch):
    data = tmp_path / "minari" / "x" / "data"
    data.mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps({"data_format": "arrow"}))
    monkeypatch.setitem(sys.modules, "minari", None)
    monkeypatch.setitem(sys.modules, "minari.dataset.minari_storage", None)
    with pytest.raises(ImportError, match=r"arrow storage .*pip install -e '\.\[minari\]'"):
        ds.load("minari:x")


# ----------------------------------------------------------------------------- options, errors

def small_dataset(obs_dim, act_dim, **metadata):
    rng = np.random.default_rng(1)
    n = 30
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[-1] = True
    arrays = {"observations": obs[:-1], "next_observations": obs[1:],
              "actions": rng.uniform(-0.5, 0.8, (n, act_dim)).astype(np.float32),
              "rewards": rng.normal(size=n).astype(np.float32), "terminals": np.zeros(n, bool),
              "timeouts": timeouts}
    return ds.Dataset(arrays, {"name": "mine", **metadata})


def test_observation_size_mismatch_names_both_sizes():
    _needs("mujoco", "gymnasium")
    dataset = small_dataset(5, 3, ref_min_score=0.0, ref_max_score=1.0)
    with pytest.raises(ValueError, match=r"dataset observations have 5 features, but "
                                         r"gymnasium:Hopper-v5 observations have shape \(11,\)"):
        common.make_task(dataset, config(eval_env="gymnasium:Hopper-v5"))


def test_reference_scores_option_and_its_absence(tmp_path):
    path = tmp_path / "mydata.hdf5"
    ds.save_hdf5(path, small_dataset(3, 1, env="Pendulum-v1"))
    with pytest.raises(ValueError, match=r"mydata.hdf5 has no ref_min_score / ref_max_score .*"
                                         r"not a D4RL dataset name.*--config\.ref_scores="):
        common.make_task(str(path), config())
    task = common.make_task(str(path), config(ref_scores=(-1200.0, -150.0)))
    assert (task.ref_min_score, task.ref_max_score) == (-1200.0, -150.0)
    with pytest.raises(ValueError, match=r"names no environment.*--config\.eval_env=ENV"):
        common.make_task(small_dataset(3, 1), config())
    task = common.make_task(small_dataset(3, 1), config(eval_env="Pendulum-v1",
                                                        ref_scores=(0.0, 1.0)))
    assert task.params.max_steps_in_episode == 200


def test_train_only_run_evaluates_on_the_data():
    """eval_env=none: no env, no reference returns needed; evaluation is the mean squared
    action error over evenly spaced dataset rows, in the box spanned by the data's actions."""
    dataset = small_dataset(3, 2)
    task = common.make_task(dataset, config(eval_env="none"))
    assert task.env is None and np.isnan(task.ref_min_score)
    actions = dataset.arrays["actions"]
    low, high = actions.min(0), actions.max(0)
    center = (low + high) / 2
    out = common.evaluate_actions(lambda obs, _: jnp.broadcast_to(center, (obs.shape[0], 2)),
                                  None, config(), task)
    expected = np.mean(((actions - center) / ((high - low) / 2)) ** 2)
    assert float(out["dataset_action_mse"]) == pytest.approx(expected, rel=1e-5)
    assert list(out) == ["dataset_action_mse"]


# ----------------------------------------------------------------------------- the CLI

def run_cli(dataset, workdir, *extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "launch.run", "--algo=td3_bc", f"--dataset={dataset}",
           "--num_seeds=2", "--config.num_updates=2", "--config.steps_per_update=100",
           "--config.log_every=2", "--config.eval_every=2", "--config.eval_episodes=2",
           "--config.batch_size=64", "--progress=false", f"--workdir={workdir}", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("source", ["minari", pytest.param("d4rl", marks=pytest.mark.slow)])
def test_cli_trains_real_data_and_evaluates_on_hopper(tmp_path, source):
    """200 TD3+BC gradient steps from the CLI, then evaluation on gymnasium Hopper-v5: every
    eval row's normalized score is 100 (R - R_random) / (R_expert - R_random) with D4RL's
    hopper reference returns."""
    _needs("mujoco", "gymnasium", "minari")
    if source == "minari":
        record_minari("test/hopper/cli-v0", 300, "hdf5")
        dataset = "minari:test/hopper/cli-v0"
    else:
        dataset = str(write_d4rl_file(tmp_path / "hopper-random-v2.hdf5", hopper_rollouts(300)))
    result = run_cli(dataset, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "eval/normalized_score" in result.stdout
    with open(tmp_path / "run" / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2  # one evaluation, two seeds
    for row in rows:
        expected = 100 * (float(row["return"]) - HOPPER[0]) / (HOPPER[1] - HOPPER[0])
        assert float(row["normalized_score"]) == pytest.approx(expected, rel=1e-4)
        assert 1 <= float(row["length"]) <= 1000

