"""launch.run's command line before absl parses it: flagfiles (with --algo / --env inside) and
`--config=file.py[:arg]` layered on the algorithm's defaults, then `--config.<field>` flags."""
import json
import os
import subprocess
import sys

import pytest

from algorithms.online import ppo
from launch import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG_FILE = '''
import ml_collections

def get_config(arg=None):
    """Fewer envs and a shorter rollout; ':fast' also raises the learning rate."""
    c = ml_collections.ConfigDict()
    c.num_envs = 2
    c.num_steps = 8
    c.lr = 1e-3 if arg == "fast" else 5e-4
    c.eval_episodes = 2
    return c
'''


def test_flagfiles_expand_nested_with_comments(tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("--env=CartPole-v1\n  --num_seeds=3\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"# PPO on CartPole\n--algo=ppo\n// another comment\n--flagfile={inner}\n")
    args = cli.expand_flagfiles([f"--flagfile={outer}", "--seed=2", "--algo=dqn"])
    assert args == ["--algo=ppo", "--env=CartPole-v1", "--num_seeds=3", "--seed=2",
                    "--algo=dqn"]
    assert cli.flag_value(args, "algo") == "dqn"  # the last one wins, as in absl
    assert cli.flag_value(args, "env") == "CartPole-v1"
    assert cli.flag_value(["--env", "Acrobot-v1"], "env") == "Acrobot-v1"
    with pytest.raises(cli.CliError, match="--flagfile.*missing.flags"):
        cli.expand_flagfiles([f"--flagfile={tmp_path / 'missing.flags'}"])


def test_config_file_sets_only_its_fields_and_keeps_derived_ones(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(_CONFIG_FILE)
    spec, rest = cli.split_config_file(["--algo=ppo", f"--config={path}:fast", "--config.lr=3"])
    assert spec == f"{path}:fast" and rest == ["--algo=ppo", "--config.lr=3"]
    config = cli.apply_config_file(ppo.default_config(), cli.load_config_file(spec), spec)
    assert (config.num_envs, config.num_steps, config.lr) == (2, 8, 1e-3)
    assert config.gamma == ppo.default_config().gamma  # not in the file: the default
    # num_updates stays derived: total_timesteps // (num_envs * num_steps) with the new sizes,
    # and follows a later total_timesteps override.
    assert config.num_updates == 500_000 // 16
    config.total_timesteps = 1600
    assert config.num_updates == 100
    assert cli.load_config_file(str(path)).lr == 5e-4  # get_config() without the arg


def test_a_config_file_that_derives_a_field_does_not_freeze_it(tmp_path):
    """A variant built on the default config (big_vision's habit) keeps num_updates derived."""
    path = tmp_path / "variant.py"
    path.write_text("from algorithms.online import ppo\n\ndef get_config():\n"
                    "    c = ppo.default_config()\n    c.num_steps = 64\n    return c\n")
    config = cli.apply_config_file(ppo.default_config(), cli.load_config_file(str(path)), "v")
    config.total_timesteps = 64 * 4 * 7
    assert config.num_updates == 7


@pytest.mark.parametrize("text, expected", [
    ("def get_config():\n    return {'lr': 1e-3, 'n_envs': 2, 'gama': 0.9}\n",
     ["unknown field(s) gama, n_envs", "valid keys:", "num_envs", "gamma"]),
    ("def get_config():\n    return {'num_envs': 'many'}\n", ["num_envs='many'"]),
    ("x = 1\n", ["defines no get_config() function"]),
    ("def get_config():\n    return 3\n", ["returned a int"]),
    ("def get_config(:\n", ["failed to load", "SyntaxError"]),
    ("def get_config():\n    return undefined_name\n", ["get_config() failed", "NameError"]),
])
def test_bad_config_files_are_one_clear_error(tmp_path, text, expected):
    path = tmp_path / "bad.py"
    path.write_text(text)
    with pytest.raises(cli.CliError) as info:
        cli.apply_config_file(ppo.default_config(), cli.load_config_file(str(path)), str(path))
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)
    assert str(path) in str(info.value)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(cli.CliError, match=r"no such file .*nope\.py"):
        cli.load_config_file(str(tmp_path / "nope.py") + ":arg")


def _cli(*args, cwd=ROOT, env=None):
    proc = subprocess.run([sys.executable, "-m", "launch.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_flagfile_with_algo_and_config_file_train_ppo(tmp_path):
    """The whole command line through `python -m launch.run`: --algo / --env come from a
    flagfile, the config file's fields sit on PPO's defaults, --config.x flags apply last."""
    (tmp_path / "cfg.py").write_text(_CONFIG_FILE)
    (tmp_path / "task.flags").write_text("--env=CartPole-v1\n")
    (tmp_path / "ppo.flags").write_text(
        "# PPO, tiny\n--algo=ppo\n--flagfile=task.flags\n--num_seeds=2\n"
        "--config=cfg.py:fast\n--config.num_updates=2\n--noprogress\n")
    workdir = tmp_path / "run"
    env = {**os.environ, "JAXRL_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    code, out = _cli("--flagfile=ppo.flags", "--config.update_epochs=1",
                     "--config.log_every=1", f"--workdir={workdir}", cwd=tmp_path, env=env)
    assert code == 0, out[-3000:]
    recorded = json.loads((workdir / "config.json").read_text())
    assert recorded["algo"] == "ppo" and recorded["env"] == "CartPole-v1"
    c = recorded["config"]
    assert (c["num_envs"], c["num_steps"], c["lr"], c["update_epochs"], c["num_updates"]) == \
        (2, 8, 1e-3, 1, 2)
    # Step axes: one PPO update is num_envs * num_steps = 16 env steps per seed.
    header, *rows = (workdir / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    assert cols[:4] == ["step", "seed", "env_steps", "wall_time"]
    for row in rows:
        step, _, env_steps, wall_time = row.split(",")[:4]
        assert int(env_steps) == int(step) * 2 * 8 and float(wall_time) > 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"]["env_steps"] == 2 * 16 and summary["wall_time"] > 0
    assert summary["ci_note"].startswith("fewer than 5 seeds") and "WARNING: fewer" in out
    assert summary["versions"]["jax"] and summary["versions"]["python"]
    assert os.listdir(tmp_path / "cache")  # the compiled programs went to the cache
    assert "memory: state" in out
