"""Shared fixtures: the book's grid world and a tiny driver that runs an algorithm's updates."""
import jax
import pytest

import envs
from algorithms.tabular.common import Task


@pytest.fixture(scope="session")
def book_task():
    """The book's 5x5 grid world with its default rewards (Fig. 3.4)."""
    env, params = envs.make("gridworld")
    return Task(env, params)


def run_updates(algo, config, task, key, num_updates):
    """init + `num_updates` jitted updates of one seed (no runner): returns (state, metrics).

    metrics are stacked over updates ([num_updates] leaves).
    """
    state = algo.init(key, config, task)

    @jax.jit
    def run(state):
        return jax.lax.scan(lambda s, _: algo.update(s, config, task), state, None,
                            length=num_updates)

    return run(state)
