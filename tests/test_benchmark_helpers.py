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
