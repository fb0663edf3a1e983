"""The one runner: seeds vmapped and sharded, jitted chunks, logs, evaluation, checkpoints, resume.

    keys  = split(key(seed), num_seeds), sharded over local devices (Mesh axis 'seed')
    programs = build_programs(algo, config, task, num_seeds)
    state = programs.init(keys)
    loop on the host:   state, metrics = programs.chunk(log_every)(state)
                        -> non-finite guard, CSV/TensorBoard rows (with the step axes
                           env_steps / grad_steps / wall_time), progress bar,
                           programs.evaluate every `eval_every` updates, orbax checkpoint
    after the last update: summary.json, learning curves, the algorithm's `artifacts`

An algorithm never writes its own loop, logger or checkpoint code, and the runner knows no
algorithm family: it relies only on the protocol in launch/registry.py. Every update of a chunk
is the same compiled program whether the run was interrupted or not, so a resumed run ends
bit-identical to an uninterrupted one. Benchmarks time `build_programs`' programs, the same
code a run executes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from types import ModuleType
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from algorithms.core import config_rules
from algorithms.core.tree import strong_types
from launch import distributed, registry, report
from launch.workdir import Checkpoints, Workdir, WorkdirError  # noqa: F401 - re-exported

# The least time between two checkpoints after the first (the last update's is always saved):
# an orbax save costs CPU time even for a small state, which at every evaluation was a
# noticeable part of a short run (README, runner overhead); a long run still saves at every
# evaluation that comes a minute or more after the previous save.
CHECKPOINT_INTERVAL_S = 60.0


class NonFiniteError(RuntimeError):
    """A metric became NaN or inf; the run stopped before saving the bad state."""


class Interrupted(RuntimeError):
    """Ctrl-C stopped the run between chunks; the last checkpoint is intact."""


@dataclasses.dataclass
class RunResult:
    state: Any  # per-seed State, leading axis = seeds
    final: dict[str, np.ndarray]  # metric -> [seeds], last training row and last evaluation
    step: int  # updates done
    finished: bool  # False when stopped early by `max_chunks`
    workdir: str | None
    chunk_compilations: int = 0  # programs compiled for the training chunks (1 per chunk length)
    artifacts: tuple[str, ...] = ()  # files the algorithm's `artifacts` hook wrote
    axes: dict = dataclasses.field(default_factory=dict)  # step axes at `step` (report.AXES)


# ---------------------------------------------------------------------------- seeds & devices
def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """Per-seed typed keys; seed i's key does not depend on num_seeds' sharding."""
    return jax.random.split(jax.random.key(seed), num_seeds)


def seed_sharding(num_seeds: int) -> NamedSharding:
    """Shards the seed axis over as many devices as divide num_seeds evenly, the same number
    on every process of a multi-process run (`distributed.seed_mesh`).

    A plain `Mesh` (not `jax.make_mesh`, whose Explicit axes broke random draws in scans,
    JAX issue 36562).
    """
    return NamedSharding(distributed.seed_mesh(num_seeds), P("seed"))


# ---------------------------------------------------------------------------- memory
class InsufficientMemoryError(ValueError):
    """The seed-batched state cannot fit in the devices' memory; raised before compiling."""


def _gib(n: float) -> str:
    """A byte count in B / KiB / MiB / GiB, 3 significant digits."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def available_memory(sharding: NamedSharding) -> tuple[int | None, str]:
    """(bytes free for the run's state, where that number comes from), or (None, why not).

    Accelerators: the sum over the mesh's devices of bytes_limit - bytes_in_use. CPU devices
    share the host's RAM: its available physical memory (os.sysconf), counted once.
    """
    devices = list(sharding.mesh.devices.flat)
    if all(d.platform == "cpu" for d in devices):
        try:
            pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None, "host RAM unknown"
        return int(pages) * int(size), "available host RAM"
    total = 0
    for d in devices:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if not stats or "bytes_limit" not in stats:
            return None, f"{d.platform} memory unknown"
        total += int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return total, f"free memory of {len(devices)} {devices[0].platform} device(s)"


def check_memory(algo: ModuleType, config, task, num_seeds: int, members: int = 1,
                 print_fn: Callable[[str], None] = print) -> int:
    """Bytes of one seed's State (from `jax.eval_shape` of `init`: traced, not compiled);
    prints one line with the estimate for the whole batch, and raises InsufficientMemoryError
    naming num_seeds and the largest count that fits when the batch clearly does not fit.

    A chunk holds the state twice (its input and its output), beside the task's arrays; that
    is the estimate compared with the memory available. Activations of the update are not
    counted, so a batch that passes can still run out of memory; one refused cannot fit.
    """
    key_type = jax.eval_shape(jax.random.key, 0)
    shapes = jax.eval_shape(lambda k: algo.init(k, config, task), key_type)
    per_seed = sum(int(np.prod(x.shape)) * (8 if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                                              else np.dtype(x.dtype).itemsize)
                   for x in jax.tree.leaves(shapes))
    task_bytes = sum(int(x.nbytes) for x in split_task(task)[0])
    width = num_seeds * members
    need = 2 * per_seed * width + task_bytes
    free, source = available_memory(seed_sharding(width))
    line = (f"memory: state {_gib(per_seed)} per "
            f"seed x {width} = {_gib(per_seed * width)}; with a chunk's two copies and the "
            f"task's arrays ~{_gib(need)}")
    print_fn(line + (f" of {_gib(free)} {source}" if free is not None else f" ({source})"))
    if free is not None and need > free:
        fits = max(0, (free - task_bytes) // (2 * per_seed * members)) if per_seed else 0
        raise InsufficientMemoryError(
            f"--num_seeds={num_seeds} does not fit: ~{_gib(need)} needed for the seed-batched "
            f"state, {_gib(free)} {source}; at most --num_seeds={fits} fits")
    return per_seed


# ---------------------------------------------------------------------------- config
def config_to_dict(config) -> dict:
    return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
        else dict(config)


# ---------------------------------------------------------------------------- the loop
def _first_non_finite(metrics: dict[str, np.ndarray], first_step: int):
    """(name, step, seeds) of the first non-finite metric value in a chunk, or None."""
    for name in sorted(metrics):
        bad = ~np.isfinite(np.asarray(metrics[name], dtype=float))
        if bad.any():
            rows = np.nonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]
            t = int(rows[0])
            seeds = np.nonzero(bad.reshape(bad.shape[0], -1)[t])[0].tolist()
            return name, first_step + t + 1, seeds
    return None


def split_task(task) -> tuple[list, Callable[[list], Any]]:
    """(arrays, rebuild): the task's array leaves, and how to put a task back around them.

    The runner passes `arrays` to every jitted program as one replicated, un-vmapped argument:
    all seeds read one copy (an offline dataset, a diffusion training set, a tabular model),
    and the arrays are not baked into the compiled programs as constants. Every other leaf
    (environment objects, names, Python numbers) is closed over as static.
    """
    leaves, treedef = jax.tree.flatten(task)
    is_array = [isinstance(x, (jax.Array, np.ndarray)) for x in leaves]
    arrays = [x for x, a in zip(leaves, is_array) if a]

    def rebuild(new_arrays: list) -> Any:
        it = iter(new_arrays)
        return jax.tree.unflatten(treedef, [next(it) if a else x
                                            for x, a in zip(leaves, is_array)])

    return arrays, rebuild


def sweep_members(sweep: dict[str, Sequence[float]] | None) -> list[dict[str, float]]:
    """The grid of swept values: [{name: value, ...}, ...] (one empty dict without a sweep)."""
    members = [{}]
    for name, values in (sweep or {}).items():
        members = [{**m, name: float(v)} for m in members for v in values]
    return members


def _apply_sweep(algo, state, sweep, num_seeds: int):
    """Writes each member's swept values into the traced `state.hparams` leaves."""
    if not sweep:
        return state
    valid = tuple(registry.optional(algo, "SWEEPABLE"))
    unknown = sorted(set(sweep) - set(valid))
    if unknown:
        name = getattr(algo, "__name__", algo)
        raise ValueError(f"cannot sweep {unknown} in one program: {name} "
                         f"keeps only these hyperparameters traced: {', '.join(valid) or 'none'}")
    members = sweep_members(sweep)
    hparams = dict(state.hparams)
    for name in sweep:
        per_member = np.repeat([m[name] for m in members], num_seeds)
        hparams[name] = jnp.asarray(per_member, dtype=hparams[name].dtype)
    return state.replace(hparams=hparams)


def _progress_keys(row: dict) -> list[str]:
    """Up to three metrics for the progress bar, returns and losses first."""
    ranked = sorted(row, key=lambda k: (0 if "return" in k else 1 if "loss" in k else 2, k))
    return ranked[:3]


@dataclasses.dataclass
class Programs:
    """The jitted programs of a run, over `width` vmapped seeds, as the runner executes them.

    init(keys) -> state                    keys [width] typed keys, placed with `sharding`
    chunk(length)(state) -> (state, metrics)   `length` updates in one lax.scan; metrics
                                           [length, width]; compiled once per length
    evaluate(state, key, at) -> metrics    [width]; all seeds share the evaluation key
                                           fold_in(key, at) (`at`: the update number)
    The task's arrays (`split_task`) are bound as the programs' replicated last argument.
    """
    sharding: NamedSharding  # state leaves: seed axis first, split over devices
    metric_sharding: NamedSharding  # chunk metrics [updates, seeds]
    replicated: NamedSharding  # the task's arrays
    task_arrays: list
    _init: Callable
    _evaluate: Callable
    _make_chunk: Callable[[int], Callable]
    _chunks: dict = dataclasses.field(default_factory=dict)

    def init(self, keys: jax.Array):
        return self._init(keys, self.task_arrays)

    def chunk(self, length: int) -> Callable:
        if length not in self._chunks:
            compiled = self._make_chunk(length)
            self._chunks[length] = lambda state: compiled(state, self.task_arrays)
            self._chunks[length].jitted = compiled
        return self._chunks[length]

    def evaluate(self, state, key: jax.Array, at: int):
        return self._evaluate(state, key, at, self.task_arrays)

    def lower_chunk(self, length: int, state) -> jax.stages.Lowered:
        """The chunk program lowered for `state`, for ahead-of-time compilation and cost
        analysis; call its `.compile()` result as `compiled(state, programs.task_arrays)`."""
        return self._make_chunk(length).lower(state, self.task_arrays)

    def chunk_compilations(self) -> int:
        return sum(fn.jitted._cache_size() for fn in self._chunks.values())


def compiler_options() -> dict | None:
    """XLA options for the runner's programs: on CPU, LLVM at -O2 instead of XLA's default
    -O3, which compiles faster and runs as fast (the matmuls are library calls and the loop
    fusions vectorise alike at -O2; README, "Compiler options"). Other backends keep their
    defaults (not measured there)."""
    return {"xla_backend_optimization_level": 2} if jax.default_backend() == "cpu" else None


def build_programs(algo: ModuleType, config, task, width: int) -> Programs:
    """The init / chunk / evaluate programs of `algo` over `width` seeds (see `Programs`)."""
    # Every leaf of the state has the seed axis first and is split over devices along it;
    # metrics come out [updates, seeds]. Pinning the shardings keeps each seed on one device
    # and gives every chunk call the same input types (no recompiling).
    sharding = seed_sharding(width)
    metric_sharding = NamedSharding(sharding.mesh, P(None, "seed"))
    replicated = NamedSharding(sharding.mesh, P())
    arrays, rebuild = split_task(task)
    arrays = jax.device_put(arrays, replicated)

    options = compiler_options()
    init = jax.jit(jax.vmap(lambda k, d: strong_types(algo.init(k, config, rebuild(d))),
                            in_axes=(0, None)), out_shardings=sharding, compiler_options=options)
    # The evaluation key is folded with the update number inside the program: an eager
    # fold_in would be one more (tiny) compile per run.
    evaluate = jax.jit(jax.vmap(
        lambda s, root, at, d: algo.evaluate(s, jax.random.fold_in(root, at), config, rebuild(d)),
        in_axes=(0, None, None, None)), compiler_options=options)

    def make_chunk(length: int):
        vupdate = jax.vmap(lambda s, d: algo.update(s, config, rebuild(d)), in_axes=(0, None))
        return jax.jit(
            lambda s, d: jax.lax.scan(lambda c, _: vupdate(c, d), s, None, length=length),
            in_shardings=(sharding, replicated), out_shardings=(sharding, metric_sharding),
            compiler_options=options)

    return Programs(sharding, metric_sharding, replicated, arrays, init, evaluate, make_chunk)


def train(algo: ModuleType, config, task, *, num_seeds: int = 4, seed: int = 0,
          workdir: str | None = None, max_chunks: int | None = None, progress: bool = True,
          run_info: dict | None = None, sweep: dict[str, Sequence[float]] | None = None,
          artifacts: bool = True, extend: bool = False,
          print_fn: Callable[[str], None] = print,
          loggers: Sequence[Any] = (), check_memory_first: bool = False,
          checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S) -> RunResult:
    """Trains `num_seeds` seeds of `algo` on `task` as one vmapped, sharded program.

    With `sweep={"lr": [1e-3, 3e-4], ...}` every combination of values trains `num_seeds`
    seeds in the same program (the algorithm keeps those hyperparameters as traced leaves in
    `state.hparams`, listed in its `SWEEPABLE`): the leading axis then has
    len(members) * num_seeds entries, member-major, and seeds repeat across members.

    Args:
      algo: a module with the algorithm protocol (see launch/registry.py).
      config: its ConfigDict (num_updates, log_every, eval_every and hyperparameters).
      task: what `init`/`update`/`evaluate` take (its arrays are one shared argument).
      workdir: where logs, checkpoints and reports go; an existing run there is resumed.
      max_chunks: stop after this many chunks in this call (simulates preemption; tests).
      run_info: extra JSON-able facts recorded in config.json / summary.json (algo, env...).
      artifacts: after the last update, call the algorithm's `artifacts` hook (if it has one).
      extend: allow a larger num_updates than the run already in `workdir` was started with.
      check_memory_first: estimate the seed-batched state's memory before compiling, print it,
        and refuse a batch that cannot fit (`check_memory`).
      checkpoint_interval_s: checkpoints are written after evaluations: the first one of this
        call, then any that comes at least this many seconds after the previous save, and
        the last update's always; 0 saves at every evaluation. A preempted run loses at most
        about this much training beyond one evaluation interval.
      loggers: extra metric sinks (e.g. launch.wandb_log.WandbLogger), host-side objects with
        `write(kind, step, per_seed, axes)`, `write_summary(payload)` and `close()`, given what
        metrics.csv / eval.csv / summary.json receive (by process 0 only).

    Raises WorkdirError (a ValueError) before compiling anything when the workdir is in use by
    another process, not writable, or holds a different run; NonFiniteError when a metric
    becomes NaN/inf; Interrupted on Ctrl-C (the last checkpoint stays intact).
    """
    started = time.monotonic()  # wall_time counts from here (compilation included)
    config_rules.check(config, algo)  # every field in its allowed range, before compiling
    if not checkpoint_interval_s >= 0:  # also refuses NaN
        raise ValueError(f"checkpoint_interval_s={checkpoint_interval_s} is not allowed: it "
                         "must be >= 0 seconds (0: a checkpoint at every evaluation)")
    total, chunk = int(config.num_updates), int(config.log_every)
    eval_every = int(config.get("eval_every", chunk))
    if total <= 0 or chunk <= 0 or eval_every <= 0:
        raise ValueError(f"num_updates, log_every and eval_every must be positive; got "
                         f"{total}, {chunk}, {eval_every}")
    if config.get("x64", False) and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)  # before anything below is traced

    members = sweep_members(sweep)
    if check_memory_first:
        check_memory(algo, config, task, num_seeds, len(members), print_fn)
    run_config = {**(run_info or {}), "num_seeds": num_seeds, "seed": seed,
                  "config": config_to_dict(config), "devices": jax.device_count()}
    if sweep:
        run_config["sweep"] = {k: [float(v) for v in vs] for k, vs in sweep.items()}
    # The workdir is locked and checked before anything is compiled.
    wd = Workdir(workdir) if workdir is not None else None
    try:
        if wd is not None:
            wd.open()
            wd.check_run(run_config, extend=extend, print_fn=print_fn)
        return _train(algo, config, task, members, num_seeds, seed, wd, max_chunks, progress,
                      run_config, artifacts, print_fn, started, tuple(loggers),
                      float(checkpoint_interval_s))
    finally:
        if wd is not None:
            wd.close()
        for logger in loggers:
            logger.close()


def _train(algo, config, task, members, num_seeds, seed, wd, max_chunks, progress, run_config,
           artifacts, print_fn, started, loggers, checkpoint_interval_s) -> RunResult:
    total, chunk = int(config.num_updates), int(config.log_every)
    eval_every = int(config.get("eval_every", chunk))
    if wd is not None and distributed.is_primary():
        report.preload_plotting()  # for the learning curves written at the end
    programs = build_programs(algo, config, task, len(members) * num_seeds)
    # Made by jitted programs placed on the seed mesh, so that every process of a
    # multi-process run builds only its own shards; the same values as eager code.
    keys = jax.jit(lambda: jnp.tile(seed_keys(seed, num_seeds), len(members)),  # same seeds
                   out_shardings=programs.sharding)()                          # per member
    sweep = run_config.get("sweep")
    state = programs.init(keys)
    if sweep:
        state = jax.jit(lambda s: _apply_sweep(algo, s, sweep, num_seeds),
                        out_shardings=programs.sharding)(state)
    primary = distributed.is_primary()
    step, log, ckpt = 0, None, None
    step_counts = registry.optional(algo, "step_counts")
    counted = step_counts(config, 0) if step_counts is not None else {}
    tb_axis = next((a for a in ("env_steps", "grad_steps") if a in counted), None)
    workdir = wd.path if wd is not None else None
    clock_offset = 0.0  # training seconds before this call (a resumed run's recorded time)
    if wd is not None:
        ckpt = wd.checkpoints
        state, step = ckpt.restore_latest(state, print_fn)
        if step:
            print_fn(f"Resuming from the checkpoint at update {step} in {workdir}")
        if primary:
            log = report.MetricLog(workdir, resume_step=step, tb_axis=tb_axis)
            clock_offset = log.wall_time() if step else 0.0
    if not primary:
        loggers = ()

    def axes_at(update: int) -> dict:
        """The step axes after `update` updates (report.AXES), wall_time as of now."""
        counts = dict(step_counts(config, update)) if step_counts is not None else {}
        return {**counts, "wall_time": round(clock_offset + time.monotonic() - started, 3)}

    def write(kind: str, at: int, per_seed: dict, axes: dict) -> None:
        if log is not None:
            log.write(kind, at, per_seed, axes)
        for logger in loggers:
            logger.write(kind, at, per_seed, axes)

    eval_key_root = jax.random.key(seed + 1_000_003)  # same eval episodes for every seed
    final: dict[str, np.ndarray] = {}
    if log is not None:
        final.update(log.last("metrics"))
        final.update({f"eval/{k}": v for k, v in log.last("eval").items()})

    def who(columns: list[int]) -> str:
        if len(members) == 1:
            return f"seeds {columns}"
        return "; ".join(f"seed {c % num_seeds} of {members[c // num_seeds]}" for c in columns)

    bar = None
    if progress and primary:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=step, unit="upd", dynamic_ncols=True, leave=True)
    chunks_run = 0
    last_save = None  # time.monotonic() of this call's last checkpoint

    def dispatch(from_state, at: int, run: int):
        """Starts the chunk after update `at` (the run's `run`-th in this call), or None."""
        if at >= total or (max_chunks is not None and run >= max_chunks):
            return None
        return programs.chunk(min(chunk, total - at))(from_state)

    try:
        running = dispatch(state, step, 0)
        while running is not None:
            length = min(chunk, total - step)
            state, metrics = running  # `state` is now the chunk's output (not yet computed)
            # The next chunk is queued before this one's metrics reach the host, so the
            # device does not wait for the host's logging, evaluation call or checkpoint
            # (a non-finite metric below discards it unsaved).
            running = dispatch(state, step + length, chunks_run + 1)
            metrics = {k: np.asarray(v) for k, v in distributed.to_host(metrics).items()}
            bad = _first_non_finite(metrics, step)
            if bad:
                name, at, columns = bad
                last = ckpt.latest_step() if ckpt else None
                raise NonFiniteError(
                    f"metric {name!r} became non-finite at update {at} ({who(columns)}); "
                    f"stopped without saving that state"
                    + (f"; the checkpoint at update {last} in {workdir} is intact" if last
                       is not None else ""))
            prev, step = step, step + length
            row = {k: v[-1] for k, v in metrics.items()}  # the chunk's last update, per seed
            final.update(row)
            write("metrics", step, row, axes_at(step))
            if step // eval_every > prev // eval_every or step == total:
                ev = distributed.to_host(
                    programs.evaluate(state, eval_key_root, step))
                ev = {k: np.asarray(v) for k, v in ev.items()}
                bad = _first_non_finite({k: v[None] for k, v in ev.items()}, step - 1)
                if bad:
                    raise NonFiniteError(f"evaluation metric {bad[0]!r} is non-finite at update "
                                         f"{step} ({who(bad[2])}); stopped without saving")
                final.update({f"eval/{k}": v for k, v in ev.items()})
                write("eval", step, ev, axes_at(step))
                if ckpt is not None and (last_save is None or step == total or time.monotonic()
                                         - last_save >= checkpoint_interval_s):
                    ckpt.save(step, state)
                    last_save = time.monotonic()
            chunks_run += 1
            if bar is not None:
                bar.update(length)
                shown = {k: float(np.mean(row[k])) for k in _progress_keys(row)}
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
    except KeyboardInterrupt:
        last = ckpt.latest_step() if ckpt else None
        raise Interrupted(f"interrupted at update {step}"
                          + (f" (last checkpoint: update {last}); rerun the same command to "
                             "resume" if last is not None else "")) from None
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    finished = step >= total
    written: tuple[str, ...] = ()
    axes = axes_at(step)
    # Reports are rewritten only from complete information: by a call that trained, or when
    # there are none yet (a rerun of a finished run whose CSVs were deleted changes nothing).
    if workdir is not None and finished and (
            chunks_run or not os.path.exists(os.path.join(workdir, "summary.json"))):
        hook = registry.optional(algo, "artifacts")
        # Several processes: the hook gets the whole state on process 0 (a collective).
        host_state = (distributed.state_to_host(state)
                      if hook is not None and artifacts and jax.process_count() > 1 else state)
        if primary:
            axes["wall_time"] = max(axes["wall_time"], log.wall_time())
            payload = _write_reports(config, final, log, workdir, run_config, axes)
            for logger in loggers:
                logger.write_summary(payload)
            if artifacts and hook is not None:
                written = tuple(hook(host_state, config, task, workdir) or ())
        distributed.barrier("reports written")
    return RunResult(state=state, final=final, step=step, finished=finished, workdir=workdir,
                     chunk_compilations=programs.chunk_compilations(), artifacts=written,
                     axes=axes)


def _write_reports(config, final, log, workdir, run_config, axes) -> dict:
    """summary.json and the learning curves; returns summary.json's content."""
    title = f"{run_config.get('algo', '')} on {run_config.get('env', '-')}"
    extra = {"title": title, "steps": {"update": int(config.num_updates), **axes},
             "wall_time": axes["wall_time"], **report.provenance()}
    if "sweep" in run_config:
        members = sweep_members(run_config["sweep"])
        n = run_config["num_seeds"]
        extra["members"] = members
        extra["per_member"] = {
            json.dumps(m, sort_keys=True): {k: report.summarize(np.asarray(v)[i * n:(i + 1) * n])
                                            for k, v in final.items()}
            for i, m in enumerate(members)}
    payload = report.write_summary(os.path.join(workdir, "summary.json"), run_config, final,
                                   extra)
    report.plot_learning_curves(log, os.path.join(workdir, "learning_curve.png"), title)
    return payload
