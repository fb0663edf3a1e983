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


_COMPILED = {}


def run_updates(algo, config, task, key, num_updates):
    """init + `num_updates` jitted updates of one seed (no runner): returns (state, metrics).

    metrics are stacked over updates ([num_updates] leaves). The jitted program is cached per
    (algorithm, config, task, length), so calling it for several keys compiles once.
    """
    cache_key = (algo.__name__, config.to_json_best_effort(sort_keys=True), id(task), num_updates)
    if cache_key not in _COMPILED:
        @jax.jit
        def run(key):
            state = algo.init(key, config, task)
            return jax.lax.scan(lambda s, _: algo.update(s, config, task), state, None,
                                length=num_updates)
        _COMPILED[cache_key] = (run, task)  # keep task alive so its id stays unique
    return _COMPILED[cache_key][0](key)
