"""JAX's persistent compilation cache for `launch.run`: a rerun loads its programs from disk.

XLA executables are stored under a key of the program, its compile options, the devices and
the jax / jaxlib versions, so a cached program is the same executable a fresh compile gives
(a rerun's numbers do not change). The folder, in order of precedence:

    --compilation_cache=PATH            that folder
    --compilation_cache=none            no persistent cache
    $JAXRL_COMPILATION_CACHE_DIR        when set
    otherwise                           `jax_compilation_cache/` beside the datasets cache
                                        ($JAXRL_DATASETS_DIR, else ~/.cache/jaxrl-diffusion-lab/
                                        datasets; see envs/datasets.py)

Every program is cached, however small or quick to compile (JAX's defaults skip programs that
compile in under a second, which on a CPU is most of a small run's programs).
"""
from __future__ import annotations

import os
import pathlib

OFF = "none"
_DATASETS_DEFAULT = "~/.cache/jaxrl-diffusion-lab/datasets"  # envs/datasets.py's default


def default_dir() -> pathlib.Path:
    """$JAXRL_COMPILATION_CACHE_DIR, else `jax_compilation_cache` beside the datasets cache."""
    explicit = os.environ.get("JAXRL_COMPILATION_CACHE_DIR")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    datasets = pathlib.Path(os.environ.get("JAXRL_DATASETS_DIR") or _DATASETS_DEFAULT)
    return datasets.expanduser().absolute().parent / "jax_compilation_cache"


def enable(setting: str | None) -> str | None:
    """Points JAX's persistent cache at the folder `setting` names (module docstring); returns
    the folder, or None when turned off. Call before the first program is compiled.

    Raises ValueError naming the path when the folder cannot be created or written.
    """
    if setting is not None and setting.strip().lower() == OFF:
        return None
    path = pathlib.Path(setting).expanduser() if setting else default_dir()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--compilation_cache={path} is a file, not a folder; give a folder "
                         f"or --compilation_cache={OFF}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--compilation_cache: cannot create {path} ({e.strerror or e}); give "
                         f"another folder or --compilation_cache={OFF}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--compilation_cache: {path} is not writable; give another folder or "
                         f"--compilation_cache={OFF}")
    import jax
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor
    return str(path)
