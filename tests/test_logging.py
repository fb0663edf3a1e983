"""What a run records: step axes in every row, summary provenance and the few-seeds CI note,
wandb (offline), the compilation-cache folder and the memory estimate made before compiling."""
import csv
import importlib
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from algorithms.core import steps
from launch import compilation_cache, registry, report, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _walker(state_size: int = 1, with_counts: bool = True):
    """A random walk per seed whose config has the online budget fields (2 envs x 5 steps)."""

    def default_config():
        return ml_collections.ConfigDict(dict(num_updates=12, log_every=3, eval_every=6,
                                              num_envs=2, num_steps=5))

    def init(key, config, task):
        return {"x": jnp.zeros((state_size,)), "key": key}

    def update(state, config, task):
        key, sub = jax.random.split(state["key"])
        x = state["x"] + jax.random.normal(sub, state["x"].shape)
        metrics = {"loss": jnp.sum(x ** 2)}
        if with_counts:  # a counter named like an axis: the runner's env_steps replaces it
            metrics["env_steps"] = jnp.float32(-1)
        return {"x": x, "key": key}, metrics

    def evaluate(state, key, config, task):
        return {"x0": state["x"][0]}

    members = dict(default_config=default_config, init=init, update=update, evaluate=evaluate,
                   __name__="walker")
    if with_counts:
        members["step_counts"] = steps.on_policy
    return types.SimpleNamespace(**members)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_step_counts_of_every_family():
    """Each online / offline / diffusion algorithm binds the axes; the numbers follow the
    configs' documented meaning of one update."""
    expected_kind = {"algorithms.online": "env_steps", "algorithms.offline": "grad_steps",
                     "diffusion.models": "grad_steps"}
    for name, module_name in registry.ALGORITHMS.items():
        package = module_name.rsplit(".", 1)[0]
        counts_fn = registry.optional(registry.get(name), "step_counts")
        if package not in expected_kind:
            assert counts_fn is None, name  # tabular / sequence: update count and time only
            continue
        assert counts_fn is not None, f"{name} has no step_counts"
        config = registry.get(name).default_config()
        counts = counts_fn(config, 7)
        assert expected_kind[package] in counts, name
        if package == "algorithms.offline":
            assert counts == {"grad_steps": 7 * config.steps_per_update}  # 7000 by default
        if package == "diffusion.models":
            assert counts == {"grad_steps": 7}
    ppo = registry.get("ppo").default_config()
    assert registry.get("ppo").step_counts(ppo, 3) == {"env_steps": 3 * 4 * 128}
    # DQN: 10000 warm-up steps, then 8 envs x 10 steps per update, one gradient step per 10.
    dqn = registry.get("dqn").default_config()
    assert registry.get("dqn").step_counts(dqn, 5) == {"env_steps": 10_000 + 5 * 80,
                                                        "grad_steps": 5 * 8}
    off = importlib.import_module("algorithms.online._offpolicy")  # the agents' own counters
    for name in ("dqn", "ddpg", "td3", "sac"):
        config = registry.get(name).default_config()
        assert registry.get(name).step_counts(config, 9)["env_steps"] == \
            off.env_steps(9, config), name
    # SAC / TD3: one critic step per transition (UTD 1), 250 per update by default.
    assert registry.get("sac").step_counts(registry.get("sac").default_config(), 2)[
        "grad_steps"] == 2 * 250


def test_rows_carry_step_axes_and_resumed_wall_time_continues(tmp_path):
    algo = _walker()
    config = algo.default_config()
    cut = runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path), max_chunks=3,
                       progress=False)  # stops at 9, checkpoint at 6
    assert cut.step == 9 and cut.axes["env_steps"] == 9 * 10
    at_checkpoint = [float(r["wall_time"]) for r in _rows(tmp_path / "metrics.csv")
                     if r["step"] == "6"][0]
    done = runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path), progress=False)
    rows = _rows(tmp_path / "metrics.csv")
    assert list(rows[0])[:4] == ["step", "seed", "env_steps", "wall_time"]
    assert [int(r["step"]) for r in rows] == [3, 3, 6, 6, 9, 9, 12, 12]
    for r in rows:
        assert int(r["env_steps"]) == int(r["step"]) * 2 * 5
    times = [float(r["wall_time"]) for r in rows[::2]]
    assert times[1] == at_checkpoint and all(b > a for a, b in zip(times, times[1:]))
    eval_rows = _rows(tmp_path / "eval.csv")
    assert [int(r["env_steps"]) for r in eval_rows] == [60, 60, 120, 120]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == {"update": 12, "env_steps": 120,
                                "wall_time": summary["wall_time"]}
    assert summary["wall_time"] >= times[-1] and done.axes["env_steps"] == 120
    log = report.MetricLog(str(tmp_path), resume_step=12, tensorboard=False)
    axes = log.axes("metrics")
    np.testing.assert_array_equal(axes["env_steps"], [30, 60, 90, 120])
    assert report.x_axis(axes) == "env_steps" and "env_steps" not in log.last("metrics")


def _tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the TFRecord event files in `folder` (8-byte length,
    4-byte CRC, the Event proto, 4-byte CRC per record)."""
    from tensorboardX.proto import event_pb2
    out = {}
    for name in sorted(os.listdir(folder)):
        data = (folder / name).read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            length = int.from_bytes(data[pos:pos + 8], "little")
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_steps_are_env_steps(tmp_path):
    runner.train(_walker(), _walker().default_config(), None, num_seeds=2,
                 workdir=str(tmp_path), progress=False)
    scalars = _tb_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["loss"]] == [30, 60, 90, 120]
    assert scalars["steps/update"] == [(30, 3.0), (60, 6.0), (90, 9.0), (120, 12.0)]


def test_without_step_counts_rows_carry_update_and_wall_time(tmp_path):
    runner.train(_walker(with_counts=False), _walker().default_config(), None, num_seeds=2,
                 workdir=str(tmp_path), progress=False)
    assert list(_rows(tmp_path / "metrics.csv")[0])[:3] == ["step", "seed", "wall_time"]


def test_summary_records_versions_git_and_the_ci_note(tmp_path):
    from importlib import metadata
    info = report.provenance()
    assert info["versions"]["numpy"] == metadata.version("numpy")
    assert info["versions"]["jax"] == jax.__version__
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert info["git"]["commit"] == head.stdout.strip()
        assert isinstance(info["git"]["dirty"], bool)
    assert report.provenance(str(tmp_path))["git"] is None  # not a checkout: no crash
    few = report.write_summary(str(tmp_path / "a.json"), {"num_seeds": 4},
                               {"r": np.arange(4.0)}, {})
    enough = report.write_summary(str(tmp_path / "b.json"), {"num_seeds": 5},
                                  {"r": np.arange(5.0)}, {})
    assert few["ci_note"] == report.CI_NOTE and enough["ci_note"] is None
    assert json.loads((tmp_path / "a.json").read_text())["ci_note"] == report.CI_NOTE
    assert report.format_table({"r": np.arange(4.0)}).endswith(f"WARNING: {report.CI_NOTE}")
    assert "WARNING" not in report.format_table({"r": np.arange(5.0)})


def test_wandb_offline_logs_the_csv_scalars_config_and_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from launch import wandb_log
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    logger = wandb_log.WandbLogger(project="tests", entity=None, mode="offline",
                                   run_config={"algo": "walker"}, workdir=str(tmp_path / "w"))
    logged, summaries = [], []
    original_write, original_summary = logger.write, logger.write_summary
    logger.write = lambda *a: (logged.append(a), original_write(*a))
    logger.write_summary = lambda p: (summaries.append(p), original_summary(p))
    original_close = logger.close

    def close():
        run = logger.run
        summaries.append({k: run.summary[k] for k in ("final/loss/mean", "wall_time")})
        summaries.append(dict(run.config))
        original_close()

    logger.close = close
    runner.train(_walker(), _walker().default_config(), None, num_seeds=2,
                 workdir=str(tmp_path / "w"), progress=False, loggers=[logger])
    rows = _rows(tmp_path / "w" / "metrics.csv")
    metric_calls = [a for a in logged if a[0] == "metrics"]
    assert [a[1] for a in metric_calls] == [3, 6, 9, 12]
    last = metric_calls[-1]
    assert last[3]["env_steps"] == 120 and last[3]["wall_time"] == float(rows[-1]["wall_time"])
    np.testing.assert_allclose(np.mean(last[2]["loss"]),
                               np.mean([float(r["loss"]) for r in rows[-2:]]), rtol=1e-6)
    payload, in_run, config = summaries
    assert in_run["final/loss/mean"] == pytest.approx(payload["aggregate"]["loss"]["mean"])
    assert in_run["wall_time"] == payload["wall_time"] and config == {"algo": "walker"}
    files = [f for _, _, fs in os.walk(tmp_path / "wandb_dir") for f in fs if
             f.endswith(".wandb")]
    assert files  # the offline run's records, for `wandb sync`


def test_missing_wandb_is_one_line_naming_the_extra(monkeypatch):
    from launch import wandb_log
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match=r"--wandb_project needs the wandb package.*\[wandb\]"):
        wandb_log.check_installed()


def test_compilation_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXRL_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path / "data" / "datasets"))
    assert compilation_cache.default_dir() == tmp_path / "data" / "jax_compilation_cache"
    monkeypatch.setenv("JAXRL_COMPILATION_CACHE_DIR", str(tmp_path / "cc"))
    assert compilation_cache.default_dir() == tmp_path / "cc"
    assert compilation_cache.enable("none") is None and compilation_cache.enable("None") is None
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--compilation_cache=.*file is a file.*=none"):
        compilation_cache.enable(str(tmp_path / "file"))


def test_too_many_seeds_are_refused_before_anything_compiles(tmp_path, monkeypatch):
    algo = _walker(state_size=250_000)  # 1 MB of float32 per seed, plus its key
    config = algo.default_config()
    messages = []
    per_seed = runner.check_memory(algo, config, None, 3, print_fn=messages.append)
    assert per_seed == 250_000 * 4 + 8  # x float32 + a threefry key (2 x uint32)
    assert messages[0].startswith("memory: state") and "available host RAM" in messages[0]
    compiles = []

    def listener(event, duration, **kw):
        if "backend_compile" in event:  # an XLA compilation (tracing is allowed)
            compiles.append(event)

    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    too_many = 2 * ram // per_seed
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(runner.InsufficientMemoryError) as info:
            runner.train(algo, config, None, num_seeds=too_many, workdir=str(tmp_path / "w"),
                         progress=False, check_memory_first=True, print_fn=messages.append)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert f"--num_seeds={too_many} does not fit" in str(info.value)
    fits = int(str(info.value).rsplit("at most --num_seeds=", 1)[1].split()[0])
    assert 0 < fits * 2 * per_seed <= ram  # two copies of the state within the host's RAM
    assert compiles == [] and not (tmp_path / "w").exists()  # nothing compiled or written
