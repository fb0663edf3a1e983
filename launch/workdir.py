"""A run's working directory: one process at a time, checked before use, self-healing checkpoints.

    with Workdir(path) as wd:                  # creates it, checks it is writable, takes the lock
        wd.check_run(run_config, extend=False) # same run as the one already there, or refuse
        state, step = wd.checkpoints.restore_latest(template)   # newest intact checkpoint

Every problem is a `WorkdirError` (a ValueError) whose one-line message names the path and
what to do. Nothing already written is deleted: a damaged checkpoint is moved aside into
`<workdir>/damaged_checkpoints/`, never removed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from typing import Any, Callable

import jax

from algorithms.core.tree import is_prng_key
from launch import distributed, report

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
# Fields of config.json that may differ between the runs that share a workdir.
_UNCHECKED = {"devices"}


class WorkdirError(ValueError):
    """A workdir that cannot be used as asked; the message says which path and why."""


def read_json(path: str) -> Any:
    """The JSON content of `path`, or a WorkdirError naming the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise WorkdirError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); restore it "
                           "or choose another --workdir") from None
    except OSError as e:
        raise WorkdirError(f"cannot read {path}: {e.strerror}") from None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# ---------------------------------------------------------------------------- checkpoints
def _to_saveable(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_prng_key(x) else x, tree)


def _from_saved(saved, template):
    def restore_leaf(saved_leaf, template_leaf):
        if is_prng_key(template_leaf):
            return jax.random.wrap_key_data(saved_leaf, impl=jax.random.key_impl(template_leaf))
        return saved_leaf

    return jax.tree.map(restore_leaf, saved, template)


class Checkpoints:
    """orbax CheckpointManager over the State pytree (typed keys stored as raw key data)."""

    def __init__(self, directory: str, max_to_keep: int = 3):
        import orbax.checkpoint as ocp
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise WorkdirError(f"{self.directory} is a file, not a checkpoint folder; move it "
                               "away or choose another --workdir")
        self._options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                     enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        """Starts saving `state` as step `step` and returns once its arrays are copied off the
        devices; orbax writes them on a background thread into a temporary folder that it
        renames to `<step>` when complete, so a step folder is always whole (a killed save
        leaves only the temporary folder, which restore ignores). The next save, `wait` and
        `close` wait for it."""
        self.manager.save(step, args=self._ocp.args.StandardSave(_to_saveable(state)))

    def wait(self) -> None:
        """Returns once every started save is on disk."""
        self.manager.wait_until_finished()

    def restore(self, step: int, template):
        """Restores step `step` onto `template`'s shapes, dtypes and shardings."""
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, _to_saveable(template))
        saved = self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        restored = _from_saved(saved, template)
        if jax.tree.structure(restored) != jax.tree.structure(template):
            raise ValueError("the saved state has another structure than this run's")
        return restored

    def _step_folders(self) -> list[int]:
        steps = {int(name) for name in os.listdir(self.directory) if name.isdigit()}
        return sorted(steps | set(self.manager.all_steps()), reverse=True)

    def _move_aside(self, step: int) -> str:
        """Moves a damaged step folder to <workdir>/damaged_checkpoints/ (never deletes it)."""
        source = os.path.join(self.directory, str(step))
        target_dir = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(source):
            shutil.move(source, target)
        # A fresh manager: orbax infers the checkpoint layout from the folders it finds, and a
        # damaged one must not decide how the next save is written.
        self.manager.close()
        self.manager = self._ocp.CheckpointManager(self.directory, options=self._options)
        return target

    def restore_latest(self, template, print_fn: Callable[[str], None] = print):
        """(state, step) of the newest checkpoint that restores, or (template, 0) if none.

        A step that fails to restore (truncated or zeroed arrays, bad metadata, a missing or
        empty step folder) is moved aside with a message saying which and why, and the next
        older one is tried.
        """
        for step in self._step_folders():
            try:
                return self.restore(step, template), step
            except Exception as e:  # whatever the failure, this step is unusable
                reason = " ".join(str(e).split())[:160] or type(e).__name__
                # Several processes see the same damage; process 0 moves the folder.
                moved = self._move_aside(step) if distributed.is_primary() else "(process 0)"
                distributed.barrier(f"checkpoint {step} moved aside")
                if not distributed.is_primary():
                    self.manager.close()
                    self.manager = self._ocp.CheckpointManager(self.directory,
                                                               options=self._options)
                print_fn(f"WARNING: the checkpoint at update {step} does not restore "
                         f"({type(e).__name__}: {reason}); moved it to {moved} and trying "
                         "the next older one")
        return template, 0

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# ---------------------------------------------------------------------------- the workdir
class Workdir:
    """A run's folder, held by this process alone while it is open (an advisory lock).

    The lock is an `fcntl.flock` on `<workdir>/.lock`, released by the OS when the process
    ends however it ends, so the lock of a killed run never blocks the next one. In a
    multi-process run each process holds its own lock file (`.lock.process<i>`), and only
    process 0 writes config.json.
    """

    def __init__(self, path: str):
        self.path = path
        self._lock_fd: int | None = None
        self.checkpoints: Checkpoints | None = None

    def __enter__(self) -> "Workdir":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        check_writable(self.path)
        lock_path = os.path.join(self.path, LOCK_FILE if jax.process_count() == 1
                                 else f"{LOCK_FILE}.process{jax.process_index()}")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise WorkdirError(
                f"workdir {self.path} is in use by another run (pid {holder}); wait for it to "
                "finish, stop it, or choose another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        self.checkpoints = Checkpoints(os.path.join(self.path, "checkpoints"))

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()
            self.checkpoints = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def check_run(self, run_config: dict, *, extend: bool = False,
                  print_fn: Callable[[str], None] = print) -> None:
        """Refuses to continue a different run here; writes config.json for this one.

        A config.json without any checkpoint is provisional (a run that failed before its first
        checkpoint) and is replaced. Checkpoints without config.json cannot be matched to a
        run and are refused. `num_updates` may grow only with `extend=True` and never shrink.
        """
        path = os.path.join(self.path, CONFIG_FILE)
        has_checkpoint = bool(self.checkpoints and self.checkpoints._step_folders())
        if has_checkpoint and not os.path.exists(path):
            raise WorkdirError(
                f"{self.path} holds checkpoints but no {CONFIG_FILE}, so they cannot be matched "
                "to a configuration; restore the file or choose another --workdir")
        if has_checkpoint:
            old = _flat(read_json(path))
            new = _flat(run_config)
            diff = sorted(k for k in set(old) | set(new) if k not in _UNCHECKED
                          and k != "config.num_updates" and old.get(k) != new.get(k))
            if diff:
                shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
                raise WorkdirError(
                    f"workdir {self.path!r} holds a run with a different configuration "
                    f"({shown}); choose another --workdir to start a new run")
            before, now = old.get("config.num_updates"), new.get("config.num_updates")
            if before is not None and now != before:
                if now < before:
                    raise WorkdirError(
                        f"workdir {self.path!r} holds a run of num_updates={before}; "
                        f"num_updates={now} would shorten it (choose another --workdir)")
                if not extend:
                    raise WorkdirError(
                        f"workdir {self.path!r} holds a run of num_updates={before}; to extend "
                        f"it to {now}, add --extend")
            if old.get("devices") not in (None, new.get("devices")):
                print_fn(f"WARNING: this run used {old.get('devices')} device(s) and resumes on "
                         f"{new.get('devices')}: a seed's floats depend on the device layout, "
                         "so the result will not be bit-identical to an uninterrupted run")
        if distributed.is_primary():
            report.atomic_write_text(path, json.dumps(run_config, indent=2, sort_keys=True))


def check_usable(path: str) -> None:
    """WorkdirError naming the path if folder `path` could not be created or written; creates
    nothing (so a run refused for another reason leaves no empty folder behind)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "is" if probe == os.path.abspath(path) else f"is under {probe}, which is"
        raise WorkdirError(f"workdir {path} {what} a file, not a folder; "
                           "choose another --workdir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise WorkdirError(f"workdir {path} is not writable ({probe} is read-only to this "
                           "user); choose another --workdir")


def check_writable(path: str) -> None:
    """Creates folder `path` if needed; WorkdirError naming the path if that is impossible."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"workdir {path} is a file, not a folder; choose another --workdir")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"cannot create workdir {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise WorkdirError(f"workdir {path} is not writable; choose another --workdir")
