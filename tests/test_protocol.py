"""The algorithm protocol: every registered module implements it, launch/ knows no family, and
a new algorithm is one file (the README's worked example, run through the CLI)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from launch import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_algorithm_implements_the_protocol(name):
    algo = registry.get(name)  # raises TypeError naming missing members
    config = algo.default_config()
    for field in ("num_updates", "log_every"):
        assert field in config, f"{name}: default_config() lacks {field}"
    assert algo.TASK_FLAG in registry.TASK_FLAGS
    assert (algo.DEFAULT_TASK is None) == (algo.TASK_FLAG is None)
    assert algo.PRIMARY_METRIC.startswith("eval/") or "/" not in algo.PRIMARY_METRIC
    if algo.__name__.startswith("algorithms.") and algo.TASK_FLAG is not None:
        assert callable(registry.optional(algo, "act")), f"{name}: an RL algorithm needs act"
    assert "hidden" not in config, f"{name}: the config vocabulary says hidden_sizes"


@pytest.mark.parametrize("name", registry.names())
def test_every_config_field_has_an_allowed_range_and_defaults_are_allowed(name):
    from algorithms.core import config_rules
    algo = registry.get(name)
    config = algo.default_config()
    assert config_rules.uncovered(config, algo) == [], f"{name}: fields without a rule"
    config_rules.check(config, algo)


def test_config_rules_name_the_field_the_value_and_what_is_allowed():
    from algorithms.core import config_rules
    algo = registry.get("ppo")
    config = algo.default_config()
    config.gamma = 1.5
    with pytest.raises(ValueError, match=r"config.gamma=1.5 is not allowed: it must be a number "
                                         r"in \[0.0, 1.0\]"):
        config_rules.check(config, algo)


def _python_files(*folders):
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    yield os.path.relpath(path, ROOT), open(path).read()


def test_no_family_imports_another_familys_private_module():
    families = ("tabular", "online", "offline")
    for path, text in _python_files("algorithms", "diffusion", "envs", "launch", "benchmarks"):
        for family in families:
            if f"algorithms/{family}/" in path:
                continue
            pattern = rf"algorithms\.{family}\._|from algorithms\.{family} import _"
            assert not re.search(pattern, text), f"{path} imports a private {family} module"


def test_launch_has_no_family_special_cases():
    runner = open(os.path.join(ROOT, "launch", "runner.py")).read()
    run = open(os.path.join(ROOT, "launch", "run.py")).read()
    assert "gridworld" not in runner.lower()
    for text in ("hasattr(", "algorithms.offline", "startswith(\"algorithms", "MODEL",
                 "normalized_score"):
        assert text not in run, f"launch/run.py tests for a family: {text!r}"
    for path, text in _python_files("algorithms", "diffusion", "envs"):
        assert not re.search(r"^\s*(from|import) launch", text, re.M), \
            f"{path} imports launch/ (only launch/ may)"


def _readme_example() -> tuple[str, str]:
    """(path, code) of the README's worked example of a new algorithm."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(r"<!-- example: (\S+) -->\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its worked example"
    return match.group(1), match.group(2)


def test_a_new_algorithm_is_one_file_run_through_the_cli(tmp_path):
    """The README's ~60-line ARS is dropped into a copy of the tree and trained by
    `python -m launch.run` with no edit in launch/: it solves CartPole (return 500 max)."""
    rel_path, code = _readme_example()
    for package in ("algorithms", "diffusion", "envs", "launch"):
        shutil.copytree(os.path.join(ROOT, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / rel_path
    assert not target.exists()
    target.write_text(code)
    assert len(code.splitlines()) <= 80
    name = os.path.splitext(os.path.basename(rel_path))[0]
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.run", f"--algo={name}", "--num_seeds=2",
         "--config.num_updates=10", "--config.eval_every=10", f"--workdir={workdir}",
         "--noprogress"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "eval/return" in proc.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    # Random actions last ~22 steps; CartPole-v0 counted 195 as solved.
    assert summary["aggregate"]["eval/return"]["mean"] > 195
