"""What the offline algorithms refuse before compiling anything: config values outside what
their math allows (one line naming the field, the value and what is allowed), and datasets
that do not fit their environment (observation / action shapes, non-finite values, equal
reference returns; one line naming the dataset file and the problem)."""
from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from algorithms.core import config_rules
from algorithms.offline import awac, bc, common, cql, edac, iql, sac_n, td3_bc
from envs import datasets as dl
from envs.datasets import Dataset

OFFLINE = (bc, td3_bc, awac, cql, iql, sac_n, edac)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny(obs_dim=3, act_dim=1, **metadata):
    """20 transitions of a Pendulum-v1-like dataset (two 10-step episodes)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(21, obs_dim)).astype(np.float32)
    timeouts = np.zeros(20, bool)
    timeouts[[9, 19]] = True
    arrays = {"observations": obs[:-1],
              "actions": rng.uniform(-2, 2, (20, act_dim)).astype(np.float32),
              "rewards": rng.normal(size=20).astype(np.float32), "next_observations": obs[1:],
              "terminals": np.zeros(20, bool), "timeouts": timeouts}
    meta = {"name": "tiny", "env": "Pendulum-v1", "env_options": {}, "ref_min_score": -1200.0,
            "ref_max_score": -150.0, **metadata}
    return Dataset(arrays, meta)


# ---------------------------------------------------------------------------- config values
@pytest.mark.parametrize("algo", OFFLINE, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_config_field_has_a_rule_and_the_defaults_pass(algo):
    config = algo.default_config()
    assert config_rules.uncovered(config, algo) == []
    config_rules.check(config, algo)


BAD = [
    (iql, "expectile", 0.0, "a number in (0.0, 1.0)"),
    (iql, "expectile", 1.0, "a number in (0.0, 1.0)"),
    (iql, "beta", -1.0, "a number in [0.0, inf]"),
    (iql, "max_weight", 0.0, "a number in (0.0, inf]"),
    (iql, "actor_schedule", "linear", "one of 'cosine', 'constant'"),
    (iql, "reward_range", -5.0, "a number in [0.0, inf]"),
    (bc, "batch_size", 0, "an integer in [1, inf]"),
    (bc, "steps_per_update", 0, "an integer in [1, inf]"),
    (bc, "gamma", 1.0, "a number in [0.0, 1.0)"),
    (bc, "hidden_sizes", (0, 8), "a comma-separated list of positive integers, e.g. 256,256"),
    (awac, "tau", 0.0, "a number in (0.0, 1.0]"),
    (awac, "awac_lambda", 0.0, "a number in (0.0, inf]"),
    (cql, "cql_n_actions", 0, "an integer in [1, inf]"),
    (cql, "cql_alpha", -1.0, "a number in [0.0, inf]"),
    (cql, "init_alpha_prime", 0.0, "a number in (0.0, inf]"),
    (cql, "target_action_gap", math.nan, "a number in [-inf, inf]"),
    (sac_n, "init_alpha", -1.0, "a number in (0.0, inf]"),
    (sac_n, "num_critics", 0, "an integer in [1, inf]"),
    (sac_n, "target_entropy", math.inf, "a number in [-inf, inf]"),
    (edac, "eta", -0.5, "a number in [0.0, inf]"),
    (td3_bc, "policy_delay", 0, "an integer in [1, inf]"),
    (td3_bc, "alpha", -2.5, "a number in [0.0, inf]"),
    (td3_bc, "noise_clip", -0.5, "a number in [0.0, inf]"),
]


@pytest.mark.parametrize("algo, field, value, allowed", BAD,
                         ids=[f"{a.__name__.rsplit('.', 1)[-1]}.{f}={v}" for a, f, v, _ in BAD])
def test_bad_values_are_refused_naming_the_field_and_what_is_allowed(algo, field, value,
                                                                     allowed):
    config = algo.default_config()
    config[field] = value
    with pytest.raises(ValueError) as e:
        config_rules.check(config, algo)
    assert str(e.value) == f"config.{field}={value!r} is not allowed: it must be {allowed}"


def test_td3_bc_updates_run_whole_policy_delay_blocks():
    config = td3_bc.default_config()
    config.steps_per_update = 1001
    with pytest.raises(ValueError, match=r"^config.steps_per_update=1001 is not allowed: it "
                                         r"must be a multiple of config.policy_delay=2"):
        config_rules.check(config, td3_bc)
    config.policy_delay = 7
    config.steps_per_update = 7
    config_rules.check(config, td3_bc)


# ---------------------------------------------------------------------------- data vs env
def test_dataset_that_does_not_fit_its_env_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"^dataset 'tiny': dataset observations have 4 "
                                         r"features, but Pendulum-v1 observations have shape "
                                         r"\(3,\) \(3 features\)"):
        common.make_task(tiny(obs_dim=4), bc.default_config())
    with pytest.raises(ValueError, match=r"^dataset 'tiny': dataset actions have shape \(2,\), "
                                         r"but Pendulum-v1 actions have shape \(1,\)"):
        common.make_task(tiny(act_dim=2), bc.default_config())
    # In a file, the message starts with the file's path.
    path = dl.save_hdf5(tmp_path / "wrong.hdf5", tiny(obs_dim=4))
    with pytest.raises(ValueError) as e:
        common.make_task(str(path), bc.default_config())
    assert str(e.value).startswith(f"{path}: dataset observations have 4 features")


def test_non_finite_arrays_are_refused():
    ds = tiny()
    rewards = ds.arrays["rewards"].copy()
    rewards[5] = np.nan
    bad = Dataset({**ds.arrays, "rewards": rewards}, ds.metadata)
    with pytest.raises(ValueError, match=r"^dataset 'tiny': key 'rewards' has 1 non-finite "
                                         r"value\(s\) \(NaN or inf\), the first in row 5$"):
        common.make_task(bad, bc.default_config())
    obs = ds.arrays["next_observations"].copy()
    obs[3, 1] = np.inf
    with pytest.raises(ValueError, match="key 'next_observations' has 1 non-finite"):
        common.make_task(Dataset({**ds.arrays, "next_observations": obs}, ds.metadata),
                         bc.default_config())


@pytest.mark.parametrize("low, high", [(-150.0, -150.0), (math.nan, 0.0), ("low", 0.0)])
def test_reference_returns_must_be_finite_and_distinct(low, high):
    with pytest.raises(ValueError) as e:
        common.make_task(tiny(ref_min_score=low, ref_max_score=high), bc.default_config())
    assert str(e.value) == (f"dataset 'tiny': reference returns ref_min_score={low!r}, "
                            f"ref_max_score={high!r} must be finite numbers that differ (the "
                            "normalized score divides by their difference)")


def test_a_registered_dataset_error_names_its_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    for kind in dl.KINDS:
        name = f"pendulum-{kind}-v0"
        dl.save_hdf5(dl.dataset_path(name), tiny(obs_dim=5, name=name))
    with pytest.raises(ValueError) as e:
        common.make_task("pendulum-medium-v0", bc.default_config())
    assert str(e.value).startswith(f"{tmp_path / 'pendulum-medium-v0.hdf5'}: dataset "
                                   "observations have 5 features")


def test_launch_run_refuses_a_mismatched_dataset_in_one_line_before_writing(tmp_path):
    path = dl.save_hdf5(tmp_path / "wrong.hdf5", tiny(obs_dim=4))
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.run", "--algo=iql", f"--dataset={path}",
         f"--workdir={workdir}", "--config.num_updates=1", "--noprogress"], cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        f"ERROR: {path}: dataset observations have 4 features, but Pendulum-v1 observations "
        "have shape (3,) (3 features): recorded in another environment or with other env "
        "options?")
    assert not workdir.exists()
