"""The dataset cache as sets of five files: written as one set, checked as one set (missing,
damaged and mixed files named with the repair command), stale temporaries of killed writers
removed, sets without set ids still loading, and an unusable cache directory named in one
line. Synthetic 20-row Pendulum-shaped datasets: no behaviour policy is trained."""
import os
import pathlib
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

from algorithms.offline import bc, common
from envs import datasets as dl
from launch import datasets as cli

NAMES = [f"pendulum-{kind}-v0" for kind in dl.KINDS]
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny(name, seed=0, **metadata):
    """20 Pendulum-shaped transitions (obs 3, action 1 in [-2, 2]), two 10-step episodes."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(21, 3)).astype(np.float32)
    timeouts = np.zeros(20, bool)
    timeouts[[9, 19]] = True
    arrays = {"observations": obs[:-1], "actions": rng.uniform(-2, 2, (20, 1)).astype(np.float32),
              "rewards": rng.normal(size=20).astype(np.float32), "next_observations": obs[1:],
              "terminals": np.zeros(20, bool), "timeouts": timeouts}
    meta = {"name": name, "env": "Pendulum-v1", "env_options": {}, "seed": seed,
            "code_version": "0.1.0+gabc", "ref_min_score": -1200.0 - seed,
            "ref_max_score": -150.0, **metadata}
    return dl.Dataset(arrays, meta)


def tiny_set(seed=0):
    return {n: tiny(n, seed) for n in NAMES}


def test_save_set_writes_one_set_id_and_leaves_no_temporary(cache):
    paths = dl.save_set("pendulum", tiny_set())
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.hdf5" for n in NAMES)
    ids = {dl.load_metadata(paths[n])[dl.SET_ID] for n in NAMES}
    assert len(ids) == 1
    assert [f.status for f in dl.inspect_set("pendulum")] == ["ok"] * 5
    dl.check_set("pendulum")
    with pytest.raises(dl.DatasetError, match="needs exactly the datasets"):
        dl.save_set("pendulum", {NAMES[0]: tiny(NAMES[0])})


def test_sets_without_set_ids_keep_loading_and_their_mixes_are_found(cache):
    """Files whose metadata has no set id form a set when seed, code version and reference
    returns agree (no migration: the files are read as they are)."""
    for name in NAMES:
        dl.save_hdf5(dl.dataset_path(name), tiny(name))
    dl.check_set("pendulum")
    task = common.make_task("pendulum-medium-v0", bc.default_config())
    assert task.name == "pendulum-medium-v0" and task.ref_min_score == -1200.0
    dl.save_hdf5(dl.dataset_path(NAMES[2]), tiny(NAMES[2], seed=1))
    with pytest.raises(dl.DatasetError) as e:
        dl.check_set("pendulum")
    assert str(e.value) == (
        f"the cached pendulum datasets in {cache} are not one complete set: "
        "pendulum-expert-v0.hdf5 is from another generation (seed 1, ref_min_score -1201, "
        "ref_max_score -150) than pendulum-random-v0.hdf5, pendulum-medium-v0.hdf5, "
        "pendulum-medium-replay-v0.hdf5, pendulum-medium-expert-v0.hdf5 (seed 0, ref_min_score "
        "-1200, ref_max_score -150); repair: python -m launch.datasets --env=pendulum --force")
    # A set written as one set next to files without set ids is a mix too.
    dl.save_hdf5(dl.dataset_path(NAMES[2]), tiny(NAMES[2], **{dl.SET_ID: "0123"}))
    assert [f.status for f in dl.inspect_set("pendulum")].count("mixed") == 1


def test_missing_and_damaged_members_are_named(cache):
    dl.save_set("pendulum", tiny_set())
    dl.dataset_path(NAMES[0]).unlink()
    dl.dataset_path(NAMES[1]).write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    dl.dataset_path(NAMES[3]).unlink()
    dl.dataset_path(NAMES[3]).mkdir()
    status = {f.name: (f.status, f.detail) for f in dl.inspect_set("pendulum")}
    assert status[NAMES[0]] == ("missing", "not generated")
    assert status[NAMES[1]][0] == "damaged" and "not an HDF5 file" in status[NAMES[1]][1]
    assert status[NAMES[3]] == ("damaged", "not a regular file")
    assert status[NAMES[2]][0] == status[NAMES[4]][0] == "ok"
    with pytest.raises(ValueError) as e:
        common.make_task("pendulum-expert-v0", bc.default_config())
    message = str(e.value)
    assert "\n" not in message and message.endswith("--env=pendulum --force")
    for part in ("pendulum-random-v0.hdf5 is missing", "pendulum-medium-v0.hdf5 is damaged",
                 "pendulum-medium-replay-v0.hdf5 is damaged (not a regular file)"):
        assert part in message
    with pytest.raises(dl.DatasetError, match="medium-replay-v0.hdf5 is not a regular file"):
        dl.save_set("pendulum", tiny_set(1))
    dl.dataset_path(NAMES[3]).rmdir()
    dl.save_set("pendulum", tiny_set(1))
    dl.check_set("pendulum")


_KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from envs import datasets as dl
from test_dataset_sets import tiny_set
cache = str(dl.cache_dir())
real_replace = os.replace
def replace(src, dst):
    real_replace(src, dst)
    if os.path.dirname(os.fspath(dst)) == cache:  # the set's first file is in the cache
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
dl.save_set("pendulum", tiny_set(seed=7))
"""


def test_a_writer_killed_after_its_first_file_leaves_a_mix_that_is_found_and_cleaned(cache):
    """A real process SIGKILLed right after the first file of its set replaced the cached one:
    the set is reported mixed, the dead writer's staging folder is a stale temporary that
    `clean_temporaries` (run by every generation and by launch.datasets) removes."""
    dl.save_set("pendulum", tiny_set())
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(ROOT / "tests")], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [dl.load_metadata(dl.dataset_path(n))["seed"] for n in NAMES] == [7, 0, 0, 0, 0]
    (staging,) = [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert staging.is_dir() and len(list(staging.iterdir())) == 4
    assert [f.status for f in dl.inspect_set("pendulum")] == ["mixed"] + ["ok"] * 4
    with pytest.raises(dl.DatasetError, match=r"pendulum-random-v0.hdf5 is from another "
                                              r"generation \(seed 7,"):
        dl.check_set("pendulum")
    assert dl.clean_temporaries() == [staging] and not staging.exists()
    dl.save_set("pendulum", tiny_set())
    dl.check_set("pendulum")


def test_clean_temporaries_removes_only_those_of_dead_writers(cache):
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = cache / f".pendulum-random-v0.hdf5.{dead.pid}.0a1b2c.tmp"
    stale_file.write_bytes(b"partial")
    stale_dir = cache / f".pendulum-set.{dead.pid}.0a1b2c.tmp"
    stale_dir.mkdir()
    (stale_dir / "pendulum-random-v0.hdf5").write_bytes(b"partial")
    keep = [cache / f".pendulum-random-v0.hdf5.{os.getpid()}.0a1b2c.tmp",  # this process
            cache / f".pendulum-medium-v0.hdf5.{os.getppid()}.0a1b2c.tmp",  # a live one
            cache / ".notes.tmp", cache / "mine.1.2.tmp", cache / "pendulum-random-v0.hdf5"]
    for path in keep:
        path.write_bytes(b"x")
    assert sorted(dl.clean_temporaries()) == sorted([stale_file, stale_dir])
    assert sorted(cache.iterdir()) == sorted(keep)


def test_an_unusable_cache_directory_is_one_line_naming_it(tmp_path, monkeypatch, cache):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(afile))
    with pytest.raises(dl.DatasetError, match=f"JAXRL_DATASETS_DIR={afile} is a file, not a "
                                              "directory"):
        dl.cache_dir()
    with pytest.raises(ValueError, match=f"JAXRL_DATASETS_DIR={afile} is a file"):
        common.make_task("pendulum-medium-v0", bc.default_config())
    out = []
    flags = types.SimpleNamespace(list=True)
    assert cli.main(["datasets"], flags, out.append) == 2
    assert out == [f"ERROR: $JAXRL_DATASETS_DIR={afile} is a file, not a directory; point "
                   "JAXRL_DATASETS_DIR at a directory (created if missing)"]
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(afile / "sub"))
    with pytest.raises(dl.DatasetError, match=f"cannot create the directory {afile / 'sub'}: "
                                              "Not a directory"):
        dl.cache_dir()
