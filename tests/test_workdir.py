"""A workdir is safe: one process at a time, self-healing checkpoints, runs that cannot be
mixed up, reports that never get worse, and one-line errors naming the path."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import runner
from launch.workdir import Workdir, WorkdirError, check_usable
from test_runner import _leaves, _noisy_algo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, **kw):
    algo = _noisy_algo()
    config = kw.pop("config", None) or algo.default_config()
    messages = []
    result = runner.train(algo, config, None, num_seeds=2, workdir=str(workdir), progress=False,
                          print_fn=messages.append, **kw)
    return result, messages


_HOLD = """
import sys, time
from launch.workdir import Workdir
with Workdir(sys.argv[1]):
    print('HOLDING', flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_and_a_dead_holder_releases_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HOLDING"
        with pytest.raises(WorkdirError, match=rf"in use by another run \(pid {holder.pid}\)"):
            _train(tmp_path)
        assert not (tmp_path / "metrics.csv").exists()  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: the process cannot clean up; the OS drops its lock
        holder.wait()
    result, _ = _train(tmp_path)
    assert result.finished
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 * 2  # header + 4 logged updates x 2 seeds, no duplicates


def _truncate_arrays(step_dir):
    for dirpath, _, files in os.walk(step_dir / "default"):
        for f in files:
            if "/d" in dirpath:
                path = os.path.join(dirpath, f)
                with open(path, "r+b") as fh:
                    fh.truncate(max(0, os.path.getsize(path) // 3))


def _zero_arrays(step_dir):
    for dirpath, _, files in os.walk(step_dir / "default"):
        for f in files:
            if "/d" in dirpath:
                path = os.path.join(dirpath, f)
                size = os.path.getsize(path)
                with open(path, "wb") as fh:
                    fh.write(b"\0" * size)


def _garbage_metadata(step_dir):
    (step_dir / "default" / "_METADATA").write_text("not json {")


def _delete_default(step_dir):
    shutil.rmtree(step_dir / "default")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run's final state."""
    return _train(tmp_path_factory.mktemp("reference"))[0]


@pytest.mark.parametrize("damage", [_truncate_arrays, _zero_arrays, _garbage_metadata,
                                    _delete_default])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, reference):
    workdir = tmp_path / "run"
    _train(workdir, max_chunks=3)  # stops at update 9; checkpoint at 6
    _train(workdir)  # resumes at 6, finishes: checkpoint at 12
    damage(workdir / "checkpoints" / "12")
    os.remove(workdir / "summary.json")  # so the rerun rewrites the reports
    result, messages = _train(workdir)
    assert any("checkpoint at update 12 does not restore" in m for m in messages), messages
    assert any("Resuming from the checkpoint at update 6" in m for m in messages), messages
    for a, b in zip(_leaves(reference.state), _leaves(result.state)):
        np.testing.assert_array_equal(a, b)
    moved = os.listdir(workdir / "damaged_checkpoints")
    assert len(moved) == 1 and moved[0].startswith("12-")  # kept, not deleted
    assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "6"]  # 12 saved again


def test_a_stray_empty_step_folder_never_blocks_a_run(tmp_path):
    _train(tmp_path, max_chunks=2)  # checkpoint at 6
    (tmp_path / "checkpoints" / "99").mkdir()
    result, messages = _train(tmp_path)
    assert result.finished and result.step == 12
    assert any("update 99 does not restore" in m for m in messages)


def test_num_updates_changes_are_explicit(tmp_path):
    algo = _noisy_algo()
    _train(tmp_path)
    config = algo.default_config()
    config.num_updates = 6
    with pytest.raises(WorkdirError, match="num_updates=12.*num_updates=6 would shorten"):
        _train(tmp_path, config=config)
    config.num_updates = 15
    with pytest.raises(WorkdirError, match="add --extend"):
        _train(tmp_path, config=config)
    result, _ = _train(tmp_path, config=config, extend=True)
    assert result.step == 15
    assert json.loads((tmp_path / "config.json").read_text())["config"]["num_updates"] == 15


def test_a_run_that_failed_before_its_first_checkpoint_does_not_lock_its_workdir(tmp_path):
    algo = _noisy_algo()
    config = algo.default_config()
    config.nan_at = 2  # stops in the first chunk, before any checkpoint
    with pytest.raises(runner.NonFiniteError):
        _train(tmp_path, config=config)
    config.nan_at = -1  # the user fixes the flag and reruns
    result, _ = _train(tmp_path, config=config)
    assert result.finished


def test_checkpoints_without_config_json_are_refused(tmp_path):
    _train(tmp_path, max_chunks=2)
    os.remove(tmp_path / "config.json")
    with pytest.raises(WorkdirError, match="checkpoints but no config.json"):
        _train(tmp_path)


def test_a_corrupt_config_json_is_named(tmp_path):
    _train(tmp_path, max_chunks=2)
    (tmp_path / "config.json").write_text("{ nope")
    with pytest.raises(WorkdirError, match=r"config.json is not valid JSON"):
        _train(tmp_path)


def test_reports_of_a_finished_run_never_get_worse(tmp_path):
    _train(tmp_path)
    before = json.loads((tmp_path / "summary.json").read_text())
    os.remove(tmp_path / "metrics.csv")
    time.sleep(0.01)
    _train(tmp_path)  # nothing left to train: the reports stay as they were
    after = json.loads((tmp_path / "summary.json").read_text())
    assert after == before and "loss" in after["aggregate"]


def test_file_system_problems_are_one_line_naming_the_path(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(WorkdirError, match=f"workdir {a_file} is a file"):
        check_usable(str(a_file))
    with pytest.raises(WorkdirError, match=f"is under {a_file}, which is a file"):
        check_usable(str(a_file / "run"))
    with pytest.raises(WorkdirError, match="is a file, not a checkpoint folder"):
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / "checkpoints").write_text("x")
        Workdir(str(tmp_path / "w")).open()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(WorkdirError, match="not writable"):
            check_usable(str(locked / "run"))


def test_a_resume_on_another_device_count_warns(tmp_path):
    _train(tmp_path, max_chunks=2)
    config = json.loads((tmp_path / "config.json").read_text())
    config["devices"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    _, messages = _train(tmp_path)
    assert any("used 8 device(s)" in m for m in messages), messages


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path, monkeypatch, reference):
    calls = {"n": 0}
    write = runner.report.MetricLog.write

    def interrupt_on_third_row(self, kind, step, per_seed, *axes):
        calls["n"] += 1
        if calls["n"] == 4:  # metrics at 3, metrics + eval at 6, then Ctrl-C at update 9
            raise KeyboardInterrupt
        return write(self, kind, step, per_seed, *axes)

    monkeypatch.setattr(runner.report.MetricLog, "write", interrupt_on_third_row)
    with pytest.raises(runner.Interrupted, match=r"interrupted at update 9 \(last checkpoint: "
                                                 r"update 6\); rerun the same command"):
        _train(tmp_path)
    monkeypatch.setattr(runner.report.MetricLog, "write", write)
    result, _ = _train(tmp_path)
    for a, b in zip(_leaves(reference.state), _leaves(result.state)):
        np.testing.assert_array_equal(a, b)


def test_a_corrupt_metrics_csv_is_named(tmp_path):
    _train(tmp_path, max_chunks=2)
    (tmp_path / "metrics.csv").write_bytes(b"step,seed,loss\n\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match=r"metrics.csv is not a readable CSV log"):
        _train(tmp_path)


def test_a_non_finite_metric_in_a_sweep_names_the_member(tmp_path):
    import types

    import jax
    import jax.numpy as jnp
    import ml_collections
    from flax import struct

    @struct.dataclass
    class S:
        x: jax.Array
        hparams: dict

    def init(key, config, task):
        return S(jnp.zeros(()), {"scale": jnp.float32(1.0)})

    def update(state, config, task):
        x = state.x + 1.0
        return S(x, state.hparams), {"y": jnp.log(state.hparams["scale"] - 1.0 + 0 * x)}

    algo = types.SimpleNamespace(
        default_config=lambda: ml_collections.ConfigDict(dict(num_updates=2, log_every=1)),
        init=init, update=update, evaluate=lambda s, k, c, t: {"x": s.x},
        SWEEPABLE=("scale",), __name__="toy")
    with pytest.raises(runner.NonFiniteError, match=r"seed 0 of \{'scale': 0.5\}"):
        runner.train(algo, algo.default_config(), None, num_seeds=2,
                     sweep={"scale": [3.0, 0.5]}, progress=False)


@pytest.mark.parametrize("args, expected", [
    (["--sweep=lr=1e-3;lr=3e-4"], "'lr' is given twice"),
    (["--sweep=lr=nan,1e-3"], "must be finite numbers"),
])
def test_cli_sweep_mistakes_are_one_line(args, expected, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launch.run", "--algo=ppo", "--noprogress",
                           f"--workdir={tmp_path / 'run'}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--nfe=0", "--num_samples=0", "--nfe=a"])
def test_sample_cli_refuses_empty_budgets(flag, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launch.sample", f"--workdir={tmp_path}", flag],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "must be" in proc.stderr and "Traceback" not in proc.stderr
