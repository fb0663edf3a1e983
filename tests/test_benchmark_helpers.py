"""benchmarks/offline.py's FLOP accounting: XLA's cost analysis of a scanned program counts the
loop body once, which is what makes its GFLOP-per-step column per step (README, Benchmarks)."""
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest


def _load_benchmark():
    """benchmarks/offline.py as a module. benchmarks/ is on sys.path only while it imports (it
    imports its sibling online.py): left there, its diffusion.py would shadow the package."""
    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_offline", folder / "offline.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


bench = _load_benchmark()


@pytest.mark.parametrize("steps", [2, 7])
def test_step_flops_counts_one_scan_body_whatever_the_length(steps):
    m, k, n = 32, 48, 16
    x, w = jnp.ones((m, k)), jnp.ones((k, n))

    def program(x, w):
        # each step: one [m, k] x [k, n] product (2 m k n FLOP) and a cheap reduction
        return jax.lax.scan(lambda c, _: (c + jnp.sum(x @ w), None), 0.0, None, length=steps)[0]

    compiled = jax.jit(program).lower(x, w).compile()
    flops = bench.step_flops(compiled)
    assert flops == pytest.approx(2 * m * k * n, rel=0.05)
    assert bench.step_flops(compiled, block=2) == pytest.approx(flops / 2)


def test_matmul_peak_is_a_positive_rate():
    peak = bench.matmul_peak(size=64, chain=10)
    assert 0.01 < peak < 1e5  # GFLOP/s; any real CPU or accelerator is in this range


def _load_compare():
    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("benchmarks_compare_purejaxrl",
                                                  folder / "compare_purejaxrl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


def test_purejaxrl_configs_translate_to_the_same_training():
    """PureJaxRL's PPO does TOTAL_TIMESTEPS // NUM_STEPS // NUM_ENVS updates of NUM_MINIBATCHES
    minibatches; its DQN one gradient step per TRAINING_INTERVAL env steps after
    LEARNING_STARTS, epsilon annealed over EPSILON_ANNEAL_TIME steps: ours must match."""
    pj = compare.PJ_PPO
    ppo_config = compare.our_ppo_config(int(pj["TOTAL_TIMESTEPS"]))
    assert ppo_config.num_updates == pj["TOTAL_TIMESTEPS"] // pj["NUM_STEPS"] // pj["NUM_ENVS"]
    assert ppo_config.num_envs * ppo_config.num_steps // ppo_config.num_minibatches == 128
    dq = compare.PJ_DQN
    dqn_config = compare.our_dqn_config(int(dq["TOTAL_TIMESTEPS"]))
    grad_steps = dqn_config.num_updates * dqn_config.num_envs * dqn_config.num_steps
    assert grad_steps // dqn_config.train_frequency == (
        dq["TOTAL_TIMESTEPS"] - dq["LEARNING_STARTS"]) // dq["TRAINING_INTERVAL"]
    assert dqn_config.exploration_fraction * dqn_config.total_timesteps == dq[
        "EPSILON_ANNEAL_TIME"]


def test_per_seed_budget_is_whole_updates_under_the_cap():
    assert compare.per_seed_budget("ppo", 1, 4e6) == 976 * 512  # 5e5 rounded down to updates
    assert compare.per_seed_budget("ppo", 64, 4e6) == 122 * 512  # 62,500 -> whole updates
    assert compare.per_seed_budget("dqn", 1, 1e6) == 500_000
    assert compare.per_seed_budget("dqn", 8, 1e6) == 10_000 + 1150 * 100  # warm-up + updates
    assert compare.quarters([1, 2, 3, 4, 5, 6, 7, 8]) == [2.0, 4.0, 6.0, 8.0]


def test_ratio_table_pairs_rounds_and_marks_a_missing_process(capsys):
    rows = [{"seeds": 64, "round": 0, "impl": "ours", "sps": 150},  # PureJaxRL hung this round
            {"seeds": 64, "round": 1, "impl": "ours", "sps": 200},
            {"seeds": 64, "round": 1, "impl": "purejaxrl", "sps": 100}]
    compare.ratio_table(rows, "sps", "PureJaxRL", "title", "env steps/s")
    assert "| 64 | - / 100 | 150 / 200 | - / 2.00 |" in capsys.readouterr().out


def test_run_child_gives_up_on_a_hung_process(capsys):
    assert compare.run_child(["-c", "import time; time.sleep(30)"], timeout_s=0.5) is None
    assert "timed out after" in capsys.readouterr().err
    assert compare.run_child(["-c", "print('{\"a\": 1}')"], timeout_s=30) == {"a": 1}
