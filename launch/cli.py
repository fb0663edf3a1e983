"""Command-line plumbing of `launch.run` that runs before absl parses: flagfiles and config files.

`launch.run` needs two flags before absl parses the command line, because they shape the
`--config` flag itself: `--algo` (whose `default_config()` it is) and the algorithm's task flag
(`--env` options become `--config.env.<option>`). Both may sit in a `--flagfile`, so flagfiles
are expanded first (absl's own reader: one `--name=value` per line, `#` / `//` comments, nested
`--flagfile=`), and the expanded list is what absl then parses.

`--config=path/to/file.py[:arg]` follows ml_collections' `config_flags.DEFINE_config_file`: the
file defines `get_config()` (or `get_config(arg)` when `:arg` is given) returning a ConfigDict or
a dict. Here the file is layered on top of the algorithm's defaults: only the fields it sets
override them, and `--config.<field>=value` flags still apply after it.
"""
from __future__ import annotations

import importlib.util
import os

from absl import flags
from ml_collections import ConfigDict, FieldReference


class CliError(ValueError):
    """A bad flagfile or config file; the message names the file and what to do."""


def expand_flagfiles(args: list[str]) -> list[str]:
    """`args` (without the program name) with every `--flagfile=F` replaced by F's flags."""
    try:
        return flags.FlagValues().read_flags_from_files(list(args), force_gnu=True)
    except flags.CantOpenFlagFileError as e:
        raise CliError(f"--flagfile: {str(e).replace('ERROR:: ', '')}") from None


def flag_value(args: list[str], name: str) -> str | None:
    """The value of the last `--name=V` / `--name V` in `args` (absl's rule: the last wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
    return value


def split_config_file(args: list[str]) -> tuple[str | None, list[str]]:
    """(the `--config=FILE[:arg]` value or None, `args` without it); `--config.x=` flags stay."""
    spec, rest, skip = None, [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(args):
            spec, skip = args[i + 1], True
        else:
            rest.append(arg)
    return spec, rest


def load_config_file(spec: str) -> ConfigDict:
    """The ConfigDict that `get_config([arg])` of the Python file in `spec` ("path.py[:arg]",
    relative to the working directory) returns."""
    path, sep, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise CliError(f"--config={spec}: no such file {path!r} (a Python file defining "
                       "get_config(), relative to the working directory)")
    module_spec = importlib.util.spec_from_file_location("_jaxrl_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: any error in it is reported, not a traceback
        raise CliError(f"--config={spec}: {path} failed to load ({type(e).__name__}: {e})") \
            from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise CliError(f"--config={spec}: {path} defines no get_config() function")
    try:
        config = get_config(arg) if sep else get_config()
    except Exception as e:  # the user's code: a wrong signature or any error inside it
        called = f"get_config({arg!r})" if sep else "get_config()"
        raise CliError(f"--config={spec}: {called} failed ({type(e).__name__}: {e})") from None
    if isinstance(config, dict):
        config = ConfigDict(config)
    if not isinstance(config, ConfigDict):
        raise CliError(f"--config={spec}: get_config() returned a {type(config).__name__}, "
                       "not a ConfigDict or dict")
    return config


def _leaf_paths(config: ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, ConfigDict):
            out += _leaf_paths(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def apply_config_file(defaults: ConfigDict, overrides: ConfigDict, spec: str) -> ConfigDict:
    """`defaults` (changed in place and returned) with every field that `overrides` sets.

    A field the file still derives from other fields (a FieldReference with operations, such
    as num_updates = total_timesteps // steps per update) is not copied: the defaults derive it
    the same way, so it keeps following later `--config.<field>` flags. Unknown fields are one
    CliError naming all of them and the valid keys.
    """
    unknown = []

    def merge(target: ConfigDict, source: ConfigDict, prefix: str) -> None:
        for key in source.keys():
            field = source._fields[key]  # the raw field: a value or a FieldReference
            if key not in target:
                unknown.append(prefix + key)
                continue
            value = source[key]
            if isinstance(value, ConfigDict) and isinstance(target[key], ConfigDict):
                merge(target[key], value, f"{prefix}{key}.")
                continue
            if isinstance(field, FieldReference) and field._ops:
                continue
            try:
                target[key] = value
            except TypeError as e:
                raise CliError(f"--config={spec}: field {prefix}{key}={value!r}: {e}") from None

    merge(defaults, overrides, "")
    if unknown:
        raise CliError(f"--config={spec}: unknown field(s) {', '.join(unknown)}; valid keys: "
                       f"{', '.join(_leaf_paths(defaults))}")
    return defaults
