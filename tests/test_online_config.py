"""Config rules of the online algorithms (algorithms/core/config_rules.py with each module's
CONFIG_RULES / CONFIG_CHECKS): every default field is covered and allowed, and impossible
values are refused before anything is compiled, with one line naming the field, the value and
what is allowed; through the CLI (three cases, a process each), one ERROR line and no
traceback.
"""
import importlib
import os
import subprocess
import sys

import pytest

from algorithms.core import config_rules

ONLINE = ["ppo", "a2c", "reinforce", "trpo", "dqn", "ddpg", "td3", "sac"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module(name):
    return importlib.import_module(f"algorithms.online.{name}")


def refusal(name, **fields) -> str:
    """The message `config_rules.check` refuses `name`'s default config with `fields` set by,
    checked to be one line."""
    algo = module(name)
    config = algo.default_config()
    config.update(fields)
    with pytest.raises(ValueError) as info:
        config_rules.check(config, algo)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("name", ONLINE)
def test_every_default_field_is_covered_and_allowed(name):
    algo = module(name)
    assert config_rules.uncovered(algo.default_config(), algo) == []
    config_rules.check(algo.default_config(), algo)


# (module, field, bad value, words the message must contain besides the field and the value)
BAD = [
    ("ppo", "num_envs", 0, ["an integer in [1, inf]"]),
    ("ppo", "num_steps", 0, ["an integer in [1, inf]"]),
    ("a2c", "num_envs", -1, ["an integer in [1, inf]"]),
    ("dqn", "num_envs", 0, ["an integer in [1, inf]"]),
    ("dqn", "batch_size", 0, ["an integer in [1, inf]"]),
    ("ddpg", "batch_size", 0, ["an integer in [1, inf]"]),
    ("td3", "batch_size", 0, ["an integer in [1, inf]"]),
    ("sac", "batch_size", 0, ["an integer in [1, inf]"]),
    ("ppo", "activation", "sigmoidx", ["'relu', 'tanh', 'gelu', 'swish', 'elu', 'mish'"]),
    ("trpo", "activation", "sigmoidx", ["'relu', 'tanh'"]),
    ("ppo", "hidden_sizes", ("abc",), ["positive integers"]),
    ("sac", "hidden_sizes", (), ["positive integers"]),
    ("ppo", "total_timesteps", 100, ["leaves no update", "num_envs * num_steps = 4 * 128",
                                     "at least 512"]),
    ("reinforce", "total_timesteps", 1000, ["at least 1024"]),
    ("dqn", "total_timesteps", 10_000, ["learning_starts=10000", "at least 10080"]),
    ("sac", "total_timesteps", 5_100, ["learning_starts=5000", "at least 5250"]),
    ("ppo", "num_minibatches", 3, ["a divisor of 512"]),
    ("ppo", "update_epochs", 0, ["an integer in [1, inf]"]),
    ("ppo", "variant", "trust_region", ["'clip', 'kl_penalty'"]),
    ("ppo", "clip_eps", 0.0, ["(0.0, inf]"]),
    ("ppo", "vf_clip_eps", -0.2, ["(0.0, inf]"]),
    ("ppo", "kl_min", 0.5, ["must be <= config.kl_max=0.015"]),
    ("ppo", "kl_beta_factor", 0.5, ["[1.0, inf]"]),
    ("ppo", "gae_lambda", 1.5, ["[0.0, 1.0]"]),
    ("a2c", "rmsprop_eps", 0.0, ["(0.0, inf]"]),
    ("a2c", "optimizer", "sgd", ["'rmsprop', 'adam'"]),
    ("a2c", "rmsprop_decay", 1.0, ["[0.0, 1.0)"]),
    ("reinforce", "vf_steps", 0, ["an integer in [1, inf]"]),
    ("trpo", "backtrack_coef", 1.0, ["(0.0, 1.0)"]),
    ("trpo", "max_kl", 0.0, ["(0.0, inf]"]),
    ("trpo", "vf_minibatches", 4096, ["at most 2048"]),
    ("dqn", "learning_starts", 20_000, ["buffer_size=10000", "at most 10000"]),
    ("dqn", "num_steps", 2000, ["num_envs=8 writes 16000", "buffer_size=10000"]),
    ("dqn", "loss", "l1", ["'mse', 'huber'"]),
    ("dqn", "tau", 0.0, ["(0.0, 1.0]"]),
    ("dqn", "end_e", 1.5, ["[0.0, 1.0]"]),
    ("ddpg", "exploration_noise", -0.1, ["[0.0, inf]"]),
    ("td3", "num_steps", 251, ["a multiple of 2"]),
    ("td3", "policy_delay", 0, ["an integer in [1, inf]"]),
    ("sac", "init_alpha", 0.0, ["(0.0, inf]"]),
    ("sac", "learning_starts", -1, ["an integer in [0, inf]"]),
]


@pytest.mark.parametrize("name,field,value,words", BAD,
                         ids=[f"{n}-{f}={v!r}" for n, f, v, _ in BAD])
def test_impossible_values_are_refused_with_one_line(name, field, value, words):
    message = refusal(name, **{field: value})
    assert f"config.{field}={value!r}" in message or f"config.{field}={value}" in message
    assert all(word in message for word in words), (words, message)


def test_total_timesteps_too_small_names_total_timesteps_not_num_updates():
    assert refusal("ppo", total_timesteps=100).startswith("config.total_timesteps=100 ")
    # num_updates set directly (not derived from total_timesteps) is refused by its own name
    assert refusal("ppo", num_updates=0).startswith("config.num_updates=0 is not allowed")


def test_num_updates_reference_never_divides_by_zero():
    for name in ONLINE:
        config = module(name).default_config()
        config.num_envs = 0
        assert isinstance(config.num_updates, int)  # reading it does not raise
        config.to_json_best_effort()


def test_ppo_value_clip_follows_clip_eps_until_set():
    config = module("ppo").default_config()
    config.clip_eps = 0.1
    assert config.vf_clip_eps == 0.1
    config.vf_clip_eps = 0.5
    config.clip_eps = 0.3
    assert config.vf_clip_eps == 0.5


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "launch.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,words", [
    (("--algo=ppo", "--config.hidden_sizes=abc"), ["config.hidden_sizes=('abc',)",
                                                   "positive integers"]),
    (("--algo=ppo", "--config.num_envs=0"), ["config.num_envs=0", "[1, inf]"]),
    (("--algo=ppo", "--config.total_timesteps=100"), ["config.total_timesteps=100",
                                                      "at least 512"]),
])
def test_cli_prints_one_error_line_and_no_traceback(args, words, tmp_path):
    result = _cli(*args, f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_env_whose_construction_download_fails_is_one_line(monkeypatch):
    """bsuite's MNIST bandit downloads MNIST when built: a failed download (simulated here,
    whatever the machine's network) is one error naming the env, not a urllib traceback."""
    import urllib.error

    import envs
    from gymnax.environments.bsuite import mnist

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(mnist.load_mnist, "load_mnist", no_network)
    with pytest.raises(ValueError, match="'MNISTBandit-bsuite' downloads data when it is built"):
        envs.make("MNISTBandit-bsuite")


def test_action_box_of_swimmer_is_concrete_inside_jit():
    """gymnax's Swimmer-misc builds its Box bounds with jnp.array: inside jit (SAC's warm-up,
    dataset generation) the box helpers still get concrete bounds [-1, 1]^2."""
    import jax
    import numpy as np

    import envs
    from algorithms.core import spaces

    env, params = envs.make("Swimmer-misc")
    center, scale = jax.jit(lambda: spaces.box_center_scale(env.action_space(params)))()
    np.testing.assert_array_equal(center, [0.0, 0.0])
    np.testing.assert_array_equal(scale, [1.0, 1.0])
