"""The optional brax extra: brax locomotion behind gymnax's interface, through the dataset
pipeline and an offline algorithm, on a tiny budget.

Without brax installed (CI: it is not in the test extra) only the error paths run; with
`pip install -e '.[brax]'` the rest runs (mostly XLA compiling brax's physics). The
"positional" backend with brax's own hopper keeps compilation short; hopper episodes are cut
at 30 steps and SAC gets 8-8 nets and 300 steps: the policies learn nothing, so these tests
check the pipeline (spaces, termination vs time limit, D4RL arrays, references, an IQL run and
its evaluation), not scores. The generations compile SAC around the physics for minutes on a
CPU: they are marked slow. How gymnasium's model on MJX matches gymnasium is
tests/test_mujoco_match.py.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import datasets as dl
from envs.brax_envs import BraxEnv

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAVE_BRAX = importlib.util.find_spec("brax") is not None
# gymnasium's models on MJX (the default of the hopper / halfcheetah / walker2d datasets) need
# mujoco-mjx and gymnasium, which the brax extra brings; they may be installed without brax.
HAVE_MJX = HAVE_BRAX or (importlib.util.find_spec("mujoco") is not None
                         and importlib.util.find_spec("mujoco.mjx") is not None
                         and importlib.util.find_spec("gymnasium") is not None)
needs_brax = pytest.mark.skipif(not HAVE_BRAX, reason="the optional brax extra is not installed")

EPISODE = 30
OPTIONS = {"backend": "positional", "model": "brax", "max_steps_in_episode": EPISODE}
TINY = {"env_options": OPTIONS,
        "sac": {"hidden_sizes": (8, 8), "batch_size": 32, "learning_starts": 100},
        "total_timesteps": 300, "snapshot_every": 100,
        "episodes": {"random": 4, "medium": 3, "expert": 3}, "eval_episodes": 2}
NAMES = [f"hopper-{kind}-v0" for kind in dl.KINDS]


def test_brax_names_are_registered_envs_and_dataset_prefixes():
    for name in ("brax-hopper", "brax-halfcheetah", "brax-walker2d"):
        assert name in envs.list_envs()
    assert dl.parse_name("walker2d-medium-replay-v0") == ("walker2d", "brax-walker2d",
                                                          "medium-replay")


def test_unknown_backend_is_refused_before_brax_is_imported():
    with pytest.raises(ValueError, match="unknown brax backend 'ode'.*generalized, positional"):
        BraxEnv("hopper", backend="ode")


@pytest.mark.skipif(HAVE_MJX, reason="brax or mujoco-mjx is installed")
def test_without_brax_the_error_names_the_extra(tmp_path, monkeypatch):
    from launch import datasets as cli

    with pytest.raises(ImportError, match=r"pip install -e '\.\[brax\]'"):
        envs.make("brax-hopper")
    # The command lines say so in one line, and nothing is written to the cache.
    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path / "cache"))
    out = []
    flags = types.SimpleNamespace(list=False, env="hopper", seed=0, force=False, progress=False)
    assert cli.main(["datasets"], flags, out.append) == 2
    assert out[-1].startswith("ERROR:") and ".[brax]" in out[-1]
    proc = subprocess.run([sys.executable, "-m", "launch.run", "--progress=false", "--algo=iql",
                           "--dataset=walker2d-expert-v0", f"--workdir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAXRL_DATASETS_DIR": str(tmp_path / "cache")})
    assert proc.returncode != 0 and "ERROR:" in proc.stderr and ".[brax]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "cache").glob("*.hdf5*"))  # no dataset, not even a temp file
    assert not (tmp_path / "run").exists()


@needs_brax
def test_adapter_spaces_termination_and_time_limit():
    env, params = envs.make("brax-hopper", **OPTIONS)
    assert params.max_steps_in_episode == EPISODE
    assert env.observation_space(params).shape == (11,) and env.action_space(params).shape == (3,)
    assert "backend" in envs.env_options("brax-hopper")
    assert "env_name" not in envs.env_options("brax-hopper")  # fixed by the registered name

    def run(actions):
        obs, state = env.reset(jax.random.key(0), params)

        def step(carry, a):
            obs, state = carry
            nobs, state, r, term, trunc, info = env.step(jax.random.key(1), state, a, params)
            return (nobs, state), (r, term, trunc, info["final_observation"], state.time)
        return obs, jax.lax.scan(step, (obs, state), actions)[1]

    # Zero torques: the hopper stands until the time limit; truncated (not terminated) at 30.
    obs, (r, term, trunc, final, time) = jax.jit(run)(jnp.zeros((EPISODE, 3)))
    assert obs.shape == (11,) and np.all(np.isfinite(np.asarray(r)))
    assert not np.any(np.asarray(term))
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(trunc)), [EPISODE - 1])
    assert int(time[-1]) == 0  # auto-reset after the time limit
    # Full negative torques: it falls within ~8 steps, which terminates (brax's healthy-range
    # check), then auto-resets and falls again; no time limit is reached.
    _, (_, term, trunc, _, time) = jax.jit(run)(-jnp.ones((EPISODE, 3)))
    falls = np.flatnonzero(np.asarray(term))
    assert falls.size >= 2 and falls[0] < 15 and not np.asarray(trunc).any()
    assert np.all(np.asarray(time)[falls] == 0)  # the state after a fall is a fresh reset


@needs_brax
@pytest.mark.slow
@pytest.mark.timeout(2400)  # generous: XLA compiles brax's physics, slow beside other jobs
def test_tiny_budget_generation_and_an_offline_run(tmp_path, monkeypatch):
    from algorithms.offline import iql
    from envs import generation as gen

    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    paths = gen.generate("hopper", seed=0, progress=False, overrides=TINY)
    assert sorted(paths) == sorted(NAMES)
    data = {name: dl.load_hdf5(path) for name, path in paths.items()}
    for ds in data.values():
        a, n = ds.arrays, ds.size
        assert sorted(a) == sorted(dl.KEYS) and n > 0
        assert a["observations"].shape == a["next_observations"].shape == (n, 11)
        assert a["actions"].shape == (n, 3) and np.all(np.abs(a["actions"]) <= 1.0)
        assert np.all(np.isfinite(a["observations"])) and np.all(np.isfinite(a["rewards"]))
        assert ds.metadata["env"] == "brax-hopper" and ds.metadata["env_options"] == OPTIONS
        # Every episode ends exactly once, by a fall (terminal) or the 30-step limit (timeout).
        ends = a["terminals"] | a["timeouts"]
        assert ends[-1] and not np.any(a["terminals"] & a["timeouts"])
        lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))
        assert lengths.max() <= EPISODE
        assert np.all(lengths[a["timeouts"][ends]] == EPISODE)
    random = data["hopper-random-v0"]
    assert dl.episode_returns(random).size == 4
    assert random.metadata["ref_min_score"] == pytest.approx(
        float(dl.episode_returns(random).mean()), rel=1e-6)
    assert dl.normalized_score(random.metadata["ref_max_score"], random) == pytest.approx(100.0)

    config = iql.default_config()
    config.hidden_sizes, config.batch_size, config.steps_per_update = (16, 16), 32, 50
    config.num_updates, config.eval_episodes = 2, 2
    task = iql.make_task("hopper-medium-replay-v0", config)
    state = iql.init(jax.random.key(0), config, task)
    for _ in range(2):
        state, metrics = jax.jit(lambda s: iql.update(s, config, task))(state)
        assert all(np.isfinite(float(v)) for v in metrics.values())
    out = jax.jit(lambda s, k: iql.evaluate(s, k, config, task))(state, jax.random.key(1))
    assert np.isfinite(float(out["normalized_score"]))
    assert 1.0 <= float(out["length"]) <= EPISODE


@needs_brax
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_tiny_generation_on_gymnasiums_model_from_the_command_line(tmp_path, monkeypatch):
    """The default hopper settings (gymnasium's Hopper-v5 on MJX) through launch.datasets with
    a tiny --overrides: D4RL arrays with gymnasium's observation size and time limit."""
    import json

    from launch import datasets as cli

    monkeypatch.setenv("JAXRL_DATASETS_DIR", str(tmp_path))
    tiny = {**TINY, "env_options": {"max_steps_in_episode": EPISODE}}
    flags = types.SimpleNamespace(list=False, env="hopper", seed=0, force=False,
                                  progress=False, overrides=json.dumps(tiny))
    out = []
    assert cli.main(["datasets"], flags, out.append) == 0, out
    assert any(line.startswith("hopper-medium-replay-v0") for line in "\n".join(out).splitlines())
    for name in NAMES:
        ds = dl.load_hdf5(tmp_path / f"{name}.hdf5")
        a = ds.arrays
        assert ds.metadata["env_options"] == {"backend": "mjx", "model": "gymnasium",
                                              "max_steps_in_episode": EPISODE}
        assert a["observations"].shape[1] == a["next_observations"].shape[1] == 11
        ends = a["terminals"] | a["timeouts"]
        lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))
        assert ends[-1] and lengths.max() <= EPISODE
        # Gymnasium's reward: healthy steps earn 1 + forward velocity - 1e-3 |a|^2; the
        # observation's qpos part is qpos[1:] (z first, ~1.25 at reset).
        assert np.all(np.abs(a["observations"][:, 0] - 1.25) < 0.6)
