"""Seeds across processes and hosts: JAX's multi-controller runtime for the runner.

One run may span several processes (one per host, or per GPU): each runs the same command with
its own process id, `jax.distributed.initialize` connects them, and `jax.devices()` then lists
every device of every process. The runner lays the seed axis over all of them (`seed_mesh`):
each process computes the seeds on its own devices, and the jitted programs are the same ones a
single process runs, so a seed's numbers do not depend on how many processes share the devices
(only on which program computes it, see the README's reproducibility notes).

Who does what:
  every process   compiles and runs the programs, saves / restores its shards of a checkpoint
                  (orbax coordinates the processes), and reads the gathered metrics, so all of
                  them stop together on a non-finite value;
  process 0       writes metrics.csv, TensorBoard, summary.json, plots and artifacts, shows
                  the progress bar, and moves a damaged checkpoint aside.

On CPU the processes exchange data through gloo (`jax_cpu_collectives_implementation`); on
GPU / TPU through the platform's own collectives. On a cluster, `initialize()` without
arguments reads the scheduler's environment (SLURM, Open MPI, Cloud TPU; see
`jax.distributed.initialize`).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Connects this process to the others of its run (call before any JAX computation).

    Args:
      coordinator: "host:port" of process 0's coordination service; None to read it from a
        cluster scheduler's environment.
      num_processes, process_id: the run's process count and this process's index in
        [0, num_processes); None with `coordinator=None` on a cluster.

    Raises ValueError for an inconsistent combination, naming the flags.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("--coordinator, --num_processes and --process_id go together: give "
                         "all three (or none, on a cluster whose scheduler sets them)")
    if num_processes is not None:
        if num_processes < 1:
            raise ValueError(f"--num_processes={num_processes} is not allowed: it must be >= 1")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} is not allowed: it must be in "
                             f"[0, {num_processes - 1}]")
    # Before the CPU backend starts: cross-process collectives on CPU need gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def seed_mesh(width: int) -> Mesh:
    """A 1-D mesh ('seed') for `width` vmapped seeds: the same number of devices from every
    process (as many as divide the per-process share of seeds), process by process, so seed i
    always lands on the same device of the same process.

    Raises ValueError when `width` does not split evenly over the processes.
    """
    processes = jax.process_count()
    if width % processes:
        raise ValueError(f"{width} seeds (x sweep members) cannot be split evenly over "
                         f"{processes} processes; use a multiple of {processes}")
    per_process = np.gcd(width // processes, jax.local_device_count())
    devices = [d for p in range(processes)
               for d in [d for d in jax.devices() if d.process_index == p][:per_process]]
    return Mesh(np.array(devices), ("seed",))


def to_host(tree: Any) -> Any:
    """The whole value of every array of `tree` as numpy, on every process (a collective
    across processes: every process must call it at the same point)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier `name` (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def state_to_host(state: Any) -> Any:
    """`to_host` for a State pytree whose typed PRNG keys cannot be gathered as they are:
    they travel as raw key data and are wrapped again on arrival."""
    from algorithms.core.tree import is_prng_key
    raw = jax.tree.map(lambda x: jax.random.key_data(x) if is_prng_key(x) else x, state)
    gathered = to_host(raw)
    return jax.tree.map(
        lambda g, x: jax.random.wrap_key_data(g, impl=jax.random.key_impl(x))
        if is_prng_key(x) else g, gathered, state)
