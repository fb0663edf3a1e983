"""The runner: resume == uninterrupted, devices, non-finite guard, reports, and the CLI's errors."""
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

from algorithms.tabular import value_iteration
from launch import report, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _noisy_algo():
    """A stochastic toy algorithm: a random walk per seed (its key lives in the state)."""

    def default_config():
        return ml_collections.ConfigDict(dict(num_updates=12, log_every=3, eval_every=6,
                                              nan_at=-1))

    def init(key, config, task):
        # 0.0 + a Python float is weakly typed, as some gymnax reset states are.
        # Weakly typed leaves (jnp.asarray of Python scalars), as some gymnax reset states have:
        # the runner must strengthen them or the chunk recompiles on its second call.
        return {"x": jnp.asarray(0.0), "key": key, "step": jnp.asarray(0)}

    def update(state, config, task):
        key, sub = jax.random.split(state["key"])
        x = state["x"] + jax.random.normal(sub)
        step = state["step"] + 1
        loss = jnp.where(step == config.nan_at, jnp.nan, x ** 2)
        return {"x": x, "key": key, "step": step}, {"loss": loss}

    def evaluate(state, key, config, task):
        return {"x_plus_noise": state["x"] + jax.random.normal(key)}

    return types.SimpleNamespace(default_config=default_config, init=init, update=update,
                                 evaluate=evaluate, __name__="noisy")


def _leaves(state):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(state)]


def _without_wall_time(path) -> list[list[str]]:
    """A CSV log's cells without its wall_time column (the one column that differs between
    two runs of the same command)."""
    lines = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, c in enumerate(lines[0]) if c != "wall_time"]
    assert len(keep) == len(lines[0]) - 1  # the column is there
    return [[row[i] for i in keep] for row in lines]


def test_resume_is_bit_identical_to_uninterrupted(tmp_path):
    algo = _noisy_algo()
    config = algo.default_config()
    full = runner.train(algo, config, None, num_seeds=3, workdir=str(tmp_path / "full"),
                        progress=False)
    part = runner.train(algo, config, None, num_seeds=3, workdir=str(tmp_path / "cut"),
                        max_chunks=3, progress=False)  # stops at update 9; checkpoint at 6
    assert not part.finished and part.step == 9
    resumed = runner.train(algo, config, None, num_seeds=3, workdir=str(tmp_path / "cut"),
                           progress=False)
    assert resumed.finished and resumed.step == 12
    for a, b in zip(_leaves(full.state), _leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    # The logs of the resumed run equal those of the uninterrupted one (rows after the
    # checkpoint written by the interrupted process were dropped, then rewritten).
    for name in ("metrics.csv", "eval.csv"):
        assert _without_wall_time(tmp_path / "full" / name) == \
            _without_wall_time(tmp_path / "cut" / name)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    np.testing.assert_allclose(summary["per_seed"]["loss"], full.final["loss"], rtol=1e-6)


def test_seeds_differ_and_are_reproducible():
    algo = _noisy_algo()
    config = algo.default_config()
    a = runner.train(algo, config, None, num_seeds=4, progress=False)
    b = runner.train(algo, config, None, num_seeds=4, progress=False)
    np.testing.assert_array_equal(a.state["x"], b.state["x"])
    assert len(set(np.asarray(a.state["x"]).tolist())) == 4  # seeds are independent
    assert a.chunk_compilations == 1  # 4 chunks, one program: no recompiling on the 2nd call
    # Evaluation uses the same key for every seed: eval noise = eval value - x is shared.
    noise = a.final["eval/x_plus_noise"] - np.asarray(a.state["x"])
    np.testing.assert_allclose(noise, noise[0], atol=1e-5)


def test_non_finite_metric_stops_and_keeps_checkpoints(tmp_path):
    algo = _noisy_algo()
    config = algo.default_config()
    config.nan_at = 8
    with pytest.raises(runner.NonFiniteError, match=r"'loss'.*update 8.*checkpoint at update 6"):
        runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path), progress=False)
    ckpt = runner.Checkpoints(str(tmp_path / "checkpoints"))
    assert ckpt.latest_step() == 6  # the bad chunk (updates 7-9) was not saved
    template = jax.vmap(lambda k: algo.init(k, config, None))(runner.seed_keys(0, 2))
    restored = ckpt.restore(6, template)
    assert np.all(np.asarray(restored["step"]) == 6)
    ckpt.close()


def test_checkpoint_interval_keeps_the_first_and_last_saves(tmp_path, monkeypatch):
    """Checkpoints follow evaluations: with a long interval only the first and the last are
    written; with 0 every one (evaluations at 6, 12, 18, 24)."""
    algo = _noisy_algo()
    config = algo.default_config()
    config.num_updates = 24
    saved = {}
    original = runner.Checkpoints.save

    def recording_save(self, step, state):
        saved.setdefault(self.directory, []).append(step)
        original(self, step, state)

    monkeypatch.setattr(runner.Checkpoints, "save", recording_save)
    for name, interval in (("sparse", 1e9), ("every", 0.0)):
        runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path / name),
                     progress=False, checkpoint_interval_s=interval)
    assert saved[str(tmp_path / "sparse" / "checkpoints")] == [6, 24]
    assert saved[str(tmp_path / "every" / "checkpoints")] == [6, 12, 18, 24]
    with pytest.raises(ValueError, match=r"checkpoint_interval_s=-1.0 is not allowed.*>= 0"):
        runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path / "bad"),
                     progress=False, checkpoint_interval_s=-1.0)
    assert not (tmp_path / "bad").exists()  # refused before the workdir was made


def test_resume_refuses_a_different_config(tmp_path):
    algo = _noisy_algo()
    config = algo.default_config()
    runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path), progress=False)
    config.log_every = 2
    with pytest.raises(ValueError, match="different configuration.*log_every"):
        runner.train(algo, config, None, num_seeds=2, workdir=str(tmp_path), progress=False)


def test_tabular_reports(tmp_path, book_task):
    config = value_iteration.default_config()
    config.num_updates, config.log_every = 120, 40
    result = runner.train(value_iteration, config, book_task, num_seeds=2,
                          workdir=str(tmp_path), progress=False,
                          run_info={"algo": "value_iteration", "env": "gridworld"})
    values = np.load(tmp_path / "values.npy")
    policy = np.load(tmp_path / "policy.npy")
    assert values.shape == (2, 25) and policy.shape == (2, 25, 5)
    np.testing.assert_allclose(policy.sum(-1), 1.0, atol=1e-6)
    assert values[0, 22] == pytest.approx(10.0, abs=1e-3)  # the target (4, 3)
    for name in ("gridworld.png", "learning_curve.png", "metrics.csv", "eval.csv"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    agg = summary["aggregate"]["eval/optimality_gap"]
    assert abs(agg["mean"]) < 1e-4 and agg["n"] == 2
    assert summary["config"]["config"]["gamma"] == pytest.approx(0.9)
    assert result.finished


def test_bootstrap_ci_and_iqm_against_hand_values():
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 6.0, 7.0])
    assert report.iqm(v) == pytest.approx(np.mean([3, 4, 5, 6]))
    lo, hi = report.bootstrap_ci(v)
    assert lo < v.mean() < hi
    # The percentile-bootstrap CI of the mean of n iid points shrinks like 1/sqrt(n).
    rng = np.random.default_rng(0)
    w_small = np.subtract(*report.bootstrap_ci(rng.normal(size=16))[::-1])
    w_big = np.subtract(*report.bootstrap_ci(rng.normal(size=1024))[::-1])
    assert 4 < w_small / w_big < 12
    s = report.summarize([2.0, 2.0, 2.0])
    assert s["mean"] == s["ci_low"] == s["ci_high"] == 2.0


_DEVICES_SCRIPT = """
import numpy as np, jax
from algorithms.tabular import common, q_learning
import envs
from launch import runner
env, params = envs.make('gridworld')
config = q_learning.default_config()
config.num_updates, config.log_every = 6, 3
res = runner.train(q_learning, config, common.Task(env, params), num_seeds=8, progress=False)
leaf = jax.tree.leaves(res.state)[0]
print('DEVICES', jax.device_count(), len(leaf.sharding.device_set))
np.save('{out}', np.asarray(res.state.q))
"""


def test_four_fake_devices_equal_one(tmp_path):
    pytest.importorskip("algorithms.tabular.q_learning")
    outs = []
    for n in (1, 4):
        out = tmp_path / f"q{n}.npy"
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
               "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT.format(out=out)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"DEVICES {n} {n}" in proc.stdout  # the seed axis really is spread over n
        outs.append(np.load(out))
    np.testing.assert_array_equal(outs[0], outs[1])


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "launch.run", "--progress=false", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--algo=valu_iteration"], ["valu_iteration", "value_iteration", "q_learning"]),
    (["--env=gridwrld"], ["unknown environment 'gridwrld'", "gridworld", "CartPole-v1"]),
    (["--config.gama=0.5"], ["gama"]),
    (["--config.gamma=abc"], ["gamma", "abc"]),
    (["--config.env.r_forbiden=-10"], ["r_forbiden"]),
    (["--env=CartPole-v1"], ["needs an exact tabular model", "gridworld"]),
    (["--config.env.layout=..x/..T"], ["unknown layout characters", "'x'"]),
    (["--algo=iql", "--env=Pendulum-v1"], ["takes --dataset", "drop --env"]),
    (["--algo=iql", "--dataset=pendulum-medum-v0"], ["unknown dataset 'pendulum-medum-v0'",
                                                     "pendulum-medium-v0", "swimmer-expert-v0"]),
    (["--algo=ppo", "--dataset=moons"], ["takes --env", "drop --dataset"]),
    (["--algo=robbins_monro", "--env=gridworld"], ["takes neither --env nor --dataset"]),
    (["--checkpoint_interval_s=-5"], ["--checkpoint_interval_s must be >= 0", "got -5"]),
])
def test_cli_rejects_bad_input_with_the_valid_choices(args, expected, tmp_path):
    if not any(a.startswith("--algo=") for a in args):  # the grid-world cases
        args = ["--algo=value_iteration", *args]
    code, out = _cli(f"--workdir={tmp_path}", *args)
    assert code != 0
    for text in expected:
        assert text in out, out[-3000:]
    assert not (tmp_path / "checkpoints").exists()  # nothing was started


def test_cli_trains_overridden_env_and_hyperparameters(tmp_path):
    code, out = _cli("--algo=value_iteration", "--num_seeds=2", f"--workdir={tmp_path}",
                     "--config.gamma=0.5", "--config.env.r_forbidden=-10",
                     "--config.num_updates=60")
    assert code == 0, out[-3000:]
    assert "eval/policy_value" in out and "95% CI" in out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["gamma"] == 0.5 and config["config"]["env"]["r_forbidden"] == -10
    # With gamma 0.5 the target's value is r_target / (1 - gamma) = 2.
    assert np.load(tmp_path / "values.npy")[0, 22] == pytest.approx(2.0, abs=1e-4)


def test_sweep_trains_every_value_in_one_program(tmp_path):
    """A swept hyperparameter is a traced leaf: members share seeds and differ only by it."""
    from flax import struct

    @struct.dataclass
    class S:
        x: jax.Array
        key: jax.Array
        hparams: dict

    def init(key, config, task):
        return S(jnp.zeros(()), key, {"scale": jnp.float32(config.scale)})

    def update(state, config, task):
        key, sub = jax.random.split(state.key)
        x = state.x + state.hparams["scale"] * jax.random.normal(sub)
        return S(x, key, state.hparams), {"x": x}

    algo = types.SimpleNamespace(
        default_config=lambda: ml_collections.ConfigDict(
            dict(num_updates=4, log_every=2, scale=1.0)),
        init=init, update=update, evaluate=lambda s, k, c, t: {"x": s.x},
        SWEEPABLE=("scale",), __name__="toy")
    config = algo.default_config()
    res = runner.train(algo, config, None, num_seeds=3, sweep={"scale": [1.0, 2.0, 0.0]},
                       workdir=str(tmp_path), progress=False)
    x = np.asarray(res.state.x).reshape(3, 3)  # [member, seed]
    np.testing.assert_allclose(x[1], 2.0 * x[0], rtol=1e-6)  # same seeds, scaled noise
    np.testing.assert_array_equal(x[2], 0.0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["members"] == [{"scale": 1.0}, {"scale": 2.0}, {"scale": 0.0}]
    assert summary["per_member"]['{"scale": 0.0}']["x"]["mean"] == 0.0
    with pytest.raises(ValueError, match="cannot sweep.*scale"):
        runner.train(algo, config, None, num_seeds=2, sweep={"lr": [1.0]}, progress=False)
