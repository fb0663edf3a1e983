"""Seeds across processes: `launch.run --num_processes/--process_id/--coordinator`.

Two real processes with 2 CPU devices each (gloo collectives) against one process with 4
devices: the same per-seed numbers; and a two-process run whose second process is killed
after a checkpoint resumes, on a rerun of both, to exactly the uninterrupted numbers.
"""
import csv
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--algo=q_learning", "--num_seeds=4", "--config.num_updates=1500", "--noprogress",
        "--checkpoint_interval_s=0"]  # a checkpoint at every evaluation, to kill after one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir, devices: int, extra=(), cwd=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen([sys.executable, "-m", "launch.run", *ARGS, f"--workdir={workdir}",
                             *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _start_pair(workdir, cwd):
    port = _free_port()
    return [_start(workdir, 2, [f"--coordinator=localhost:{port}", "--num_processes=2",
                                f"--process_id={i}"], cwd) for i in range(2)]


def _rows(path):
    """The CSV's rows without the wall-clock column."""
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def _finish(procs, timeout=240):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def test_two_processes_match_one_and_resume_after_a_kill(tmp_path):
    reference = tmp_path / "one-process"
    _finish([_start(reference, 4, cwd=tmp_path)])

    shared = tmp_path / "two-processes"
    procs = _start_pair(shared, tmp_path)
    checkpoint = shared / "checkpoints" / "300"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and procs[1].poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), procs[1].communicate()[0][-3000:]
    procs[1].send_signal(signal.SIGKILL)  # process 1 dies mid-run
    try:
        procs[0].wait(timeout=3)           # process 0 loses its peer ...
    except subprocess.TimeoutExpired:
        procs[0].kill()                    # ... or waits for it forever: the operator stops it
    for p in procs:
        p.communicate()
    assert not (shared / "summary.json").exists()

    outs = _finish(_start_pair(shared, tmp_path))  # the same two commands again
    assert "Resuming from the checkpoint" in outs[0]
    for name in ("metrics.csv", "eval.csv"):
        assert _rows(shared / name) == _rows(reference / name), name
    assert len(_rows(shared / "metrics.csv")) == 15 * 4
    assert sorted(p.name for p in shared.glob(".lock*")) == [".lock.process0", ".lock.process1"]


@pytest.mark.parametrize("extra,words", [
    (["--num_processes=2"], "go together"),
    (["--coordinator=localhost:1", "--num_processes=2", "--process_id=2"],
     "--process_id=2 is not allowed"),
])
def test_inconsistent_process_flags_are_one_line(extra, words, tmp_path):
    proc = _start(tmp_path / "run", 1, extra, cwd=tmp_path)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2
    assert "Traceback" not in out and words in out, out
    assert not (tmp_path / "run").exists()
