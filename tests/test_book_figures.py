"""The book's value figures from the command line (S. Zhao, Mathematical Foundations of RL).

Each row of the README table "The book's figures from the command line" is one test here: the
same `launch.run` flags, run through the algorithm's own functions (default config + the flags,
the default number of updates, seed 0), and the values it writes (`values.npy`, the `solution`)
compared with the table printed in the book's figure (one decimal in the book, so differences
up to 0.05 are print rounding). The test checks the README row states the same command and the
same max abs difference.
"""
import functools
import os
import re
import shlex

import jax
import numpy as np
import pytest

import envs
from algorithms.core import config_rules
from launch import registry

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def table(text):
    return np.array([float(x) for x in text.split()])


V_STAR_FORBIDDEN_10 = table("""3.5 3.9 4.3 4.8 5.3   3.1 3.5 4.8 5.3 5.9   2.8 2.5 10.0 5.9 6.6
                               2.5 10.0 10.0 10.0 7.3   2.3 9.0 10.0 9.0 8.1""")
GOOD_POLICY = ">>>>v/^^>>v/^<v>v/^>o<v/^>^<<"  # Fig. 2.7(a) right, Fig. 5.6(a)
CH5 = "--config.env.r_forbidden=-10 --config.env.bump_in_forbidden=boundary+forbidden"

# (figure, flags of `python -m launch.run`, the printed table row by row, max abs difference).
ROWS = [
    ("Fig. 2.7(a), left", "--algo=policy_evaluation --config.method=closed_form "
     "--config.policy='>>>vv/^^>vv/^<v>v/^>o<v/^>^<<'", V_STAR_FORBIDDEN_10, 0.042),
    ("Fig. 2.7(a), right", "--algo=policy_evaluation --config.method=closed_form "
     f"--config.policy='{GOOD_POLICY}'", V_STAR_FORBIDDEN_10, 0.042),
    ("Fig. 2.7(b), left (always right)", "--algo=policy_evaluation "
     "--config.method=closed_form --config.policy='>>>>>/>>>>>/>>>>>/>>>>>/>>>>>'",
     table("""-6.6 -7.3 -8.1 -9.0 -10.0   -8.5 -8.3 -8.1 -9.0 -10.0   -7.5 -8.3 -8.1 -9.0 -10.0
              -7.5 -7.2 -9.1 -9.0 -10.0   -7.6 -7.3 -8.1 -9.0 -10.0"""), 0.039),
    ("Fig. 2.7(b), right", "--algo=policy_evaluation --config.method=closed_form "
     "--config.policy='><<^^/vo>v>/<>v<o/ov^^>/o>o>o'",
     table("""0.0 0.0 0.0 -10.0 -10.0   -9.0 -10.0 -0.4 -0.5 -10.0   -10.0 -0.5 0.5 -0.5 0.0
              0.0 -1.0 -0.5 -0.5 -10.0   0.0 0.0 0.0 0.0 0.0"""), 0.026),
    ("Fig. 3.4(a)", "--algo=value_iteration",
     table("""5.8 5.6 6.2 6.5 5.8   6.5 7.2 8.0 7.2 6.5   7.2 8.0 10.0 8.0 7.2
              8.0 10.0 10.0 10.0 8.0   7.2 9.0 10.0 9.0 8.1"""), 0.032),
    ("Fig. 3.4(b)", "--algo=value_iteration --config.gamma=0.5",
     table("""0.0 0.0 0.0 0.0 0.0   0.0 0.0 0.0 0.0 0.1   0.0 0.0 2.0 0.1 0.1
              0.0 2.0 2.0 2.0 0.2   0.0 1.0 2.0 1.0 0.5"""), 0.050),
    ("Fig. 3.4(c)", "--algo=value_iteration --config.gamma=0",
     table("""0.0 0.0 0.0 0.0 0.0   0.0 0.0 0.0 0.0 0.0   0.0 0.0 1.0 0.0 0.0
              0.0 1.0 1.0 1.0 0.0   0.0 0.0 1.0 0.0 0.0"""), 0.0),
    ("Fig. 3.4(d), Fig. 4.4(h)", "--algo=value_iteration --config.env.r_forbidden=-10",
     V_STAR_FORBIDDEN_10, 0.042),
    ("Fig. 3.5(a)", "--algo=policy_evaluation --config.method=closed_form "
     "--config.env.layout='../.T' --config.policy='vv/>o'", table("9.0 10.0 10.0 10.0"), 0.0),
    ("Fig. 3.5(b)", "--algo=policy_evaluation --config.method=closed_form "
     "--config.env.layout='../.T' --config.policy='v</>o'", table("9.0 8.1 10.0 10.0"), 0.0),
    ("Fig. 4.3(a), Ch. 4.2 (pi_0)", "--algo=policy_evaluation --config.method=closed_form "
     "--config.env.layout='.T' --config.env.actions=left,stay,right --config.policy='<<'",
     table("-10 -9"), 0.0),
    ("Fig. 4.3(b), Ch. 4.2 (pi_1)", "--algo=policy_iteration --config.env.layout='.T' "
     "--config.env.actions=left,stay,right", table("10 10"), 0.0),
    ("Fig. 4.4(a) (always stay)", "--algo=policy_evaluation --config.method=closed_form "
     "--config.env.r_forbidden=-10 --config.policy='ooooo/ooooo/ooooo/ooooo/ooooo'",
     table("""0 0 0 0 0   0 -100 -100 0 0   0 0 -100 0 0   0 -100 10 -100 0   0 -100 0 0 0"""),
     0.0),
    *[(f"Fig. 5.4({panel})", f"--algo=mc_basic --config.episode_length={length} "
       "--config.env.r_forbidden=-10", table(printed), diff)
      for panel, length, printed, diff in [
          ("a", 1, "0 0 0 0 0  0 0 0 0 0  0 0 1 0 0  0 1 1 1 0  0 0 1 0 0", 0.0),
          ("b", 2, "0 0 0 0 0  0 0 0 0 0  0 0 1.9 0 0  0 1.9 1.9 1.9 0  0 0.9 1.9 0.9 0", 0.0),
          ("c", 3, "0 0 0 0 0  0 0 0 0 0  0 0 2.7 0 0  0 2.7 2.7 2.7 0  0 1.7 2.7 1.7 0.8",
           0.010),
          ("d", 4, "0 0 0 0 0  0 0 0 0 0  0 0 3.4 0 0  0 3.4 3.4 3.4 0.7  0 2.4 3.4 2.4 1.5",
           0.039),
          ("e", 14, """1.2 1.6 2.0 2.5 3.0  0.9 1.2 2.5 3.0 3.6  0.5 0.3 7.7 3.6 4.3
                       0.3 7.7 7.7 7.7 5.0  0.0 6.7 7.7 6.7 5.8""", 0.050),
          ("f", 15, """1.4 1.8 2.2 2.7 3.3  1.1 1.4 2.7 3.3 3.8  0.8 0.5 7.9 3.8 4.5
                       0.5 7.9 7.9 7.9 5.2  0.2 6.9 7.9 6.9 6.0""", 0.046),
          ("g", 30, """3.1 3.5 3.9 4.4 4.9  2.7 3.1 4.4 4.9 5.5  2.4 2.1 9.6 5.5 6.1
                       2.1 9.6 9.6 9.6 6.9  1.9 8.6 9.6 8.6 7.7""", 0.050),
          ("h", 100, """3.5 3.9 4.3 4.8 5.3  3.1 3.5 4.8 5.3 5.9  2.8 2.5 10.0 5.9 6.6
                        2.5 10.0 10.0 10.0 7.3  2.3 9.0 10.0 9.0 8.1""", 0.042)]],
    ("Fig. 5.6(b)", "--algo=policy_evaluation --config.method=closed_form "
     f"--config.policy='{GOOD_POLICY}' --config.epsilon=0.1 {CH5}",
     table("""0.4 0.5 0.9 1.3 1.4   0.1 0.0 0.5 1.3 1.7   0.1 -0.4 3.4 1.4 1.9
              -0.1 3.4 3.3 3.7 2.2   -0.3 2.6 3.7 3.1 2.7"""), 0.045),
    ("Fig. 5.6(c)", "--algo=policy_evaluation --config.method=closed_form "
     f"--config.policy='{GOOD_POLICY}' --config.epsilon=0.2 {CH5}",
     table("""-2.2 -2.4 -2.1 -1.7 -1.8   -2.5 -3.0 -3.3 -2.3 -2.0   -2.3 -3.3 -2.5 -2.8 -2.2
              -2.5 -2.5 -2.8 -2.0 -2.4   -2.8 -3.2 -2.1 -2.3 -2.2"""), 0.049),
    ("Fig. 5.6(d)", "--algo=policy_evaluation --config.method=closed_form "
     f"--config.policy='{GOOD_POLICY}' --config.epsilon=0.5 {CH5}",
     table("""-8.0 -9.0 -8.4 -7.2 -7.8   -8.7 -10.8 -12.4 -9.6 -8.9
              -8.3 -12.3 -15.3 -12.3 -10.5   -9.7 -15.5 -17.0 -14.4 -12.2
              -10.9 -16.7 -15.2 -14.3 -12.4"""), 0.048),
    ("Fig. 5.7(a)", "--algo=epsilon_greedy_policy_iteration --config.epsilon=0 "
     f"{CH5}", V_STAR_FORBIDDEN_10, 0.042),
    ("Fig. 5.7(b)", f"--algo=epsilon_greedy_policy_iteration --config.epsilon=0.1 {CH5}",
     table("""0.4 0.5 0.9 1.3 1.4   0.1 0.0 0.5 1.3 1.7   0.1 -0.4 3.4 1.4 1.9
              -0.1 3.4 3.3 3.7 2.2   -0.3 2.6 3.7 3.1 2.7"""), 0.045),
    ("Fig. 5.7(c)", f"--algo=epsilon_greedy_policy_iteration --config.epsilon=0.2 {CH5}",
     table("""-1.1 -1.5 -1.1 -0.6 -0.6   -1.5 -2.2 -2.3 -1.0 -0.6   -1.2 -2.4 -2.2 -1.5 -0.6
              -1.6 -2.3 -2.6 -1.4 -1.1   -2.0 -3.0 -1.8 -1.4 -1.0"""), 0.066),
    ("Fig. 5.7(d)", f"--algo=epsilon_greedy_policy_iteration --config.epsilon=0.5 {CH5}",
     table("""-4.3 -5.5 -4.5 -2.6 -2.3   -5.6 -7.7 -7.7 -4.1 -2.4   -5.5 -9.0 -8.0 -5.6 -2.8
              -6.8 -8.9 -9.4 -5.5 -4.2   -7.9 -10.1 -6.7 -5.1 -3.7"""), 0.048),
]


def parse_flags(flags: str):
    """(algo name, env name or None, {config path: text value}) of `launch.run` flags."""
    algo, env, overrides = None, None, {}
    for arg in shlex.split(flags):
        key, value = arg[2:].split("=", 1)
        if key == "algo":
            algo = value
        elif key == "env":
            env = value
        else:
            assert key.startswith("config."), arg
            overrides[key[len("config."):]] = value
    return algo, env, overrides


def typed(text: str, default):
    """A flag's text as the type of the field's default (as absl's config flags parse it)."""
    if isinstance(default, bool):
        return {"true": True, "false": False}[text.lower()]
    return type(default)(text)


def build(flags: str):
    """(module, config, task) that `python -m launch.run <flags>` trains."""
    name, env, overrides = parse_flags(flags)
    algo = registry.get(name)
    env = env or algo.DEFAULT_TASK
    config = algo.default_config()
    with config.unlocked():
        import ml_collections
        config.env = ml_collections.ConfigDict(envs.env_options(env))
    for path, text in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = typed(text, node[leaf])
    config_rules.check(config, algo)
    return algo, config, algo.make_task(env, config)


@functools.lru_cache(maxsize=None)
def final_values(flags: str) -> np.ndarray:
    """Seed 0's values after the configured number of updates (what values.npy holds)."""
    algo, config, task = build(flags)

    @jax.jit
    def run(key):
        state = algo.init(key, config, task)
        state, _ = jax.lax.scan(lambda s, _: algo.update(s, config, task), state, None,
                                length=int(config.num_updates))
        return algo.solution(state, config, task)[0]

    key = jax.random.split(jax.random.key(0), 1)[0]  # the runner's key of seed 0
    return np.asarray(run(key), np.float64)


def readme_rows():
    """{figure: (command, stated difference)} of the README table."""
    rows = {}
    for line in open(README, encoding="utf-8"):
        m = re.match(r"\| (Fig\. [^|]+?) \| `python -m launch\.run (.+?)` \| ([0-9.]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), float(m.group(3)))
    return rows


@pytest.mark.parametrize("figure,flags,printed,stated", ROWS, ids=[r[0] for r in ROWS])
def test_book_figure(figure, flags, printed, stated):
    values = final_values(flags)
    diff = float(np.max(np.abs(values - printed)))
    # The book prints one decimal: 0.05 is print rounding. Fig. 5.7(c) is the exception, at one
    # cell, (3, 1): the book's -1.2 there does not satisfy the Bellman equation of its own
    # policy with the printed neighbours (they give -1.14); every other cell agrees to 0.05.
    assert diff <= (0.07 if figure == "Fig. 5.7(c)" else 0.05 + 1e-6), (figure, values)
    assert abs(diff - stated) < 1e-3, (figure, diff)
    command, readme_diff = readme_rows()[figure]
    assert command == flags, (figure, command)
    assert abs(readme_diff - diff) < 1e-3, (figure, readme_diff, diff)
