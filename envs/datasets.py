"""Offline RL datasets in the D4RL layout: storage, loading, validation and normalization.

A dataset is a `Dataset`: flat arrays of N transitions under the D4RL key names
(Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven Reinforcement Learning",
arXiv:2004.07219) plus a metadata dict (environment, behaviour policy, reference returns).

    ds = load("pendulum-medium-v0")          # registered name -> cache file (see `cache_dir`)
    ds = load("/data/hopper-medium-v2.hdf5")  # any D4RL-style HDF5 file
    ds = load("minari:D4RL/pen/human-v2")     # a Minari dataset already on disk
    save_hdf5(path, ds)                       # atomic: a crash never leaves a partial file
    normalized_score(returns, ds)             # 100 (R - R_random) / (R_expert - R_random)

Files. `save_hdf5` writes the six arrays at the file root exactly as D4RL's HDF5 files hold
them, so `h5py`/`d4rl.qlearning_dataset`-style readers read ours, and the metadata as root
attributes (JSON text for values that are not a bool/int/float/str). `load_hdf5` reads ours and
D4RL's: D4RL files may lack `next_observations` (derived as `d4rl.qlearning_dataset` does, see
`_qlearning_transitions`) and `timeouts` (v0 files: episodes cut at the env's time limit, as
d4rl does), store per-step scalars as [N, 1], and carry a `metadata/` group (its small entries
are kept under metadata["d4rl_metadata"]). A file named like a D4RL dataset
("hopper-medium-v2.hdf5", "hopper_medium-v2.hdf5") gets D4RL's published reference returns and
evaluation env (`envs.d4rl_reference`) unless it stores its own.

Sets. The five kinds of one prefix are generated together and share their reference returns.
`save_set` writes them as one set (staged in a hidden folder, then renamed into place; every
file's metadata carries the same SET_ID), `check_set` / `inspect_set` tell a complete set from
one with a missing, damaged or mixed file (files without a SET_ID count as one set when their
seed, code version and reference returns agree), and `clean_temporaries` removes what killed
writers left in the cache.

Minari (Farama Foundation, https://minari.farama.org) datasets in HDF5 storage are read with
h5py only, from its on-disk layout: <root>/<dataset id>/data/main_data.hdf5 with one group
`episode_<i>` per episode holding observations [T+1, ...] (the final observation included),
actions [T, ...], rewards [T], terminations [T], truncations [T], and the dataset metadata in
<root>/<dataset id>/data/metadata.json (`data_format`, `env_spec` / `eval_env_spec`, and in
D4RL ports `ref_min_score` / `ref_max_score`). Arrow and Parquet storage (one folder per
episode) are read through minari's own storage classes: the optional minari extra.

Normalized score (D4RL Sec. 5): 100 (R - ref_min_score) / (ref_max_score - ref_min_score) with
ref_min_score the mean return of the uniformly random policy and ref_max_score that of the
expert: 0 = random, 100 = expert.

Every loader funnels through `validate`, which raises `DatasetError` naming the file, the key
and the problem. Episode boundaries and the score formula are `algorithms.core.episodes` and
`algorithms.core.scores`; the generator of the registered datasets is `envs.generation`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import pathlib
import secrets
import shutil
from typing import Any, Mapping

import numpy as np

from algorithms.core import episodes
from algorithms.core.scores import normalized_score as _score

# The D4RL key names (Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven RL", arXiv:2004.07219).
KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")

# Dataset prefix -> environment id (envs.make); registered names are f"{prefix}-{kind}-v0".
# hopper / halfcheetah / walker2d are gymnasium v5's MuJoCo models on MJX (the optional brax
# extra, envs.brax_envs / envs.mujoco_match; generating them is an accelerator-sized job, see
# envs.generation_config.GENERATION).
ENVS: dict[str, str] = {"pendulum": "Pendulum-v1", "swimmer": "Swimmer-misc",
                        "reacher": "Reacher-misc", "hopper": "brax-hopper",
                        "halfcheetah": "brax-halfcheetah", "walker2d": "brax-walker2d"}

# key -> (rank, dtype) of the canonical arrays.
_SPEC = {"observations": (2, np.float32), "actions": (2, np.float32),
         "rewards": (1, np.float32), "next_observations": (2, np.float32),
         "terminals": (1, np.bool_), "timeouts": (1, np.bool_)}
# Root attribute listing the metadata keys stored as JSON text.
_JSON_ATTRS = "_json_attrs"
_DEFAULT_CACHE = "~/.cache/jaxrl-diffusion-lab/datasets"
# Metadata key: the token shared by the five files of one generation (`save_set`).
SET_ID = "set_id"


class DatasetError(ValueError):
    """A dataset file or array set is malformed (missing key, wrong shape, non-finite values)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Flat arrays of transitions (leading axis N) plus metadata (env, policy, reference returns).

    observations [N, obs_dim] float32, actions [N, act_dim] float32 (environment units),
    rewards [N] float32, next_observations [N, obs_dim] float32, terminals [N] bool (true
    termination: no bootstrap), timeouts [N] bool (truncation: the episode ends but bootstraps).
    """
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.arrays["rewards"].shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.arrays["observations"].shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.arrays["actions"].shape[1])


# ----------------------------------------------------------------------------- names and cache

def dataset_names() -> list[str]:
    """Every registered dataset name, f"{prefix}-{kind}-v0" for each prefix of ENVS and kind."""
    return [f"{prefix}-{kind}-v0" for prefix in ENVS for kind in KINDS]


def parse_name(name: str) -> tuple[str, str, str]:
    """(prefix, gymnax env id, kind) of a registered name, e.g. "pendulum-medium-v0"."""
    for prefix, env_id in ENVS.items():
        for kind in KINDS:
            if name == f"{prefix}-{kind}-v0":
                return prefix, env_id, kind
    raise DatasetError(f"unknown dataset name {name!r}{_suggest(name, dataset_names())}; "
                       f"valid names: {', '.join(dataset_names())}")


def cache_dir() -> pathlib.Path:
    """$JAXRL_DATASETS_DIR if set, else ~/.cache/jaxrl-diffusion-lab/datasets (created).

    Raises DatasetError naming the path when it is a file, lies under a file or cannot be
    created.
    """
    value = os.environ.get("JAXRL_DATASETS_DIR")
    path = pathlib.Path(value or _DEFAULT_CACHE).expanduser()
    what = f"$JAXRL_DATASETS_DIR={value}" if value else f"the dataset cache {path}"
    if path.exists() and not path.is_dir():
        raise DatasetError(f"{what} is a file, not a directory; point JAXRL_DATASETS_DIR at a "
                           "directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"{what}: cannot create the directory {path}: "
                           f"{e.strerror or e}") from e
    return path


def dataset_path(name: str) -> pathlib.Path:
    """cache_dir() / f"{name}.hdf5" for a registered name (the file need not exist)."""
    parse_name(name)
    return cache_dir() / f"{name}.hdf5"


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------- validation

def validate(arrays: Mapping[str, Any], source: str = "arrays") -> dict[str, np.ndarray]:
    """The six KEYS arrays with their canonical dtypes, after checking them.

    Checks, in order: every key present; numeric dtype; rank (observations, actions and
    next_observations [N, d], rewards, terminals and timeouts [N]); one leading length N >= 1;
    next_observations shaped like observations; finite float values. Extra keys are ignored.
    Floats become float32, terminals/timeouts bool (nonzero = True).

    Raises DatasetError "<source>: key '<key>' <problem>".
    """
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"{source}: missing key(s) {missing}; a dataset needs all of "
                           f"{list(KEYS)}")
    out = {}
    for key in KEYS:
        value = np.asarray(arrays[key])
        rank, dtype = _SPEC[key]
        if value.dtype.kind not in "biuf":
            raise DatasetError(f"{source}: key {key!r} has dtype {value.dtype}, expected numbers")
        if value.ndim != rank:
            want = "[N, dim]" if rank == 2 else "[N]"
            raise DatasetError(f"{source}: key {key!r} has shape {value.shape} (rank "
                               f"{value.ndim}), expected rank {rank} {want}")
        out[key] = value
    n = out["observations"].shape[0]
    for key in KEYS:
        if out[key].shape[0] != n:
            raise DatasetError(f"{source}: key {key!r} has {out[key].shape[0]} rows, expected "
                               f"{n} like 'observations'")
    if n == 0:
        raise DatasetError(f"{source}: key 'observations' has 0 rows, a dataset needs at least "
                           "one transition")
    if out["next_observations"].shape != out["observations"].shape:
        raise DatasetError(f"{source}: key 'next_observations' has shape "
                           f"{out['next_observations'].shape}, expected "
                           f"{out['observations'].shape} like 'observations'")
    for key in KEYS:
        value = out[key]
        if value.dtype.kind == "f":
            bad = ~np.isfinite(value)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DatasetError(f"{source}: key {key!r} has {int(bad.sum())} non-finite "
                                   f"value(s) (NaN or inf), the first in row {row}")
        dtype = _SPEC[key][1]
        out[key] = value != 0 if dtype is np.bool_ else value.astype(dtype, copy=False)
    return out


# ----------------------------------------------------------------------------- HDF5

def save_hdf5(path, dataset: Dataset) -> pathlib.Path:
    """Write `dataset` to `path` atomically; returns the path.

    The file is written to a temporary file in the same directory, flushed and fsynced, then
    renamed over `path` (os.replace), so an interrupted write leaves no file at `path` and an
    existing file there intact (a killed process may leave a hidden ".<name>.*.tmp" file
    beside it, never a partial `path`). Concurrent writers of one path each write their own
    temporary file; the last rename wins. Arrays go to the root datasets KEYS (the D4RL
    layout), metadata to root attributes (JSON text where not bool/int/float/str, their names
    listed in the attribute "_json_attrs"; JSON turns tuples into lists and numpy values into
    Python ones). Raises DatasetError for invalid arrays or metadata, writing nothing.
    """
    import h5py

    path = pathlib.Path(path).expanduser()
    arrays = validate(dataset.arrays, source=str(path))
    attrs, json_keys = _encode_metadata(dataset.metadata, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh hidden name per writer (h5py mode "x" refuses an existing file); unlike
    # tempfile.mkstemp's 0600, the file gets the usual permissions (umask), so a shared cache
    # stays readable.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        with h5py.File(tmp, "x") as f:
            for key in KEYS:
                f.create_dataset(key, data=arrays[key])
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs[_JSON_ATTRS] = json.dumps(json_keys)
            f.flush()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: pathlib.Path) -> None:
    """Persist a rename (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode_metadata(metadata: Mapping[str, Any], source: str) -> tuple[dict, list[str]]:
    attrs, json_keys = {}, []
    for key, value in metadata.items():
        if not isinstance(key, str) or key == _JSON_ATTRS:
            raise DatasetError(f"{source}: metadata key {key!r} must be a string other than "
                               f"{_JSON_ATTRS!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            attrs[key] = value
            continue
        try:
            attrs[key] = json.dumps(value, default=_json_default)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{source}: metadata {key!r} cannot be stored as JSON: {e}") from e
        json_keys.append(key)
    return attrs, json_keys


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _decode_attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _read_attrs(f, source: str) -> dict[str, Any]:
    metadata = {k: _decode_attr(v) for k, v in f.attrs.items() if k != _JSON_ATTRS}
    json_keys = json.loads(_decode_attr(f.attrs[_JSON_ATTRS])) if _JSON_ATTRS in f.attrs else []
    for key in json_keys:
        try:
            metadata[key] = json.loads(metadata[key])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{source}: metadata {key!r} is not valid JSON: {e}") from e
    return metadata


def _open_hdf5(path: pathlib.Path):
    import h5py

    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not an HDF5 file (or unreadable): {e}") from e


def load_hdf5(path, max_episode_steps: int | None = None) -> Dataset:
    """Dataset from an HDF5 file written by `save_hdf5` or in the D4RL layout.

    D4RL files: `rewards` / `terminals` / `timeouts` stored as [N, 1] are squeezed to [N] (as
    d4rl's get_dataset does); a missing `next_observations` is derived as
    d4rl.qlearning_dataset does (see `_qlearning_transitions`), and in a file without
    `timeouts` (D4RL v0) episodes are also cut every `max_episode_steps` steps as that function
    does (default: the D4RL table's limit for the file's name, `envs.d4rl_reference`);
    metadata["derived"] lists what was filled in. A file that is not ours gets the name of its
    stem, and for a D4RL dataset name (`envs.d4rl_reference.lookup`) the published reference
    returns and evaluation env where it stores none. A `metadata/` group's scalar entries go to
    metadata["d4rl_metadata"]. Raises DatasetError naming the file, the key and the problem.
    """
    path = pathlib.Path(path).expanduser()
    source = str(path)
    with _open_hdf5(path) as f:
        import h5py

        missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
        if missing:
            raise DatasetError(f"{source}: missing key(s) {missing}; a dataset needs all of "
                               f"{list(KEYS)} (next_observations and timeouts may be derived)")
        raw = {}
        for key in KEYS:
            if key in f:
                if not isinstance(f[key], h5py.Dataset):
                    raise DatasetError(f"{source}: key {key!r} is a group, expected an array")
                value = f[key][()]
                raw[key] = _squeeze_column(value) if _SPEC[key][0] == 1 else value
        metadata = _read_attrs(f, source)
        if "metadata" in f and isinstance(f["metadata"], h5py.Group):
            metadata["d4rl_metadata"] = _small_entries(f["metadata"])
    metadata = _with_d4rl_reference(metadata, path)
    derived = []
    if "next_observations" not in raw:
        if "timeouts" not in raw:
            steps = max_episode_steps or metadata.get("max_episode_steps")
            if not steps:
                raise DatasetError(
                    f"{source}: no 'timeouts' and no 'next_observations' (a D4RL v0 file): its "
                    "episodes are cut at the environment's time limit, as "
                    "d4rl.qlearning_dataset does, and the file's name is not a D4RL dataset "
                    "name with a known limit; name the env it was recorded in with "
                    "--config.eval_env=ENV (its time limit cuts the episodes; load_hdf5: "
                    "max_episode_steps) or add a 'timeouts' array to the file")
            metadata["max_episode_steps"] = int(steps)
            derived.append("timeouts")
        # Validate what the derivation reads, so its errors name the file's real problem.
        probe = dict(raw, next_observations=raw["observations"],
                     timeouts=raw.get("timeouts", np.zeros(np.shape(raw["terminals"])[:1])))
        validate(probe, source)
        raw = _qlearning_transitions(raw, metadata.get("max_episode_steps"))
        derived.append("next_observations")
    elif "timeouts" not in raw:
        raw["timeouts"] = np.zeros(np.shape(raw["terminals"])[:1], bool)
        derived.append("timeouts")
    if derived:
        metadata["derived"] = derived
    return Dataset(validate(raw, source), metadata)


def _squeeze_column(value: np.ndarray) -> np.ndarray:
    """[N, 1] -> [N] (per-step scalars some converted files store as columns)."""
    return value[:, 0] if value.ndim == 2 and value.shape[1] == 1 else value


def _with_d4rl_reference(metadata: dict, path: pathlib.Path) -> dict:
    """metadata with a name (the file's stem) and, for a D4RL dataset name, the published
    reference returns, evaluation env and episode limit where the file has none."""
    from envs import d4rl_reference

    metadata = dict(metadata)
    metadata.setdefault("name", path.stem)
    if metadata.get(SET_ID) is not None or "code_version" in metadata:
        return metadata  # written by our generator: its metadata is complete
    ref = d4rl_reference.lookup(path.name)
    if ref is None:
        return metadata
    metadata["d4rl_name"] = ref.name
    if metadata.get("ref_min_score") is None and metadata.get("ref_max_score") is None:
        metadata["ref_min_score"], metadata["ref_max_score"] = (ref.ref_min_score,
                                                                ref.ref_max_score)
        metadata["reference_source"] = "d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE"
    if ref.env and not metadata.get("env"):
        metadata["env"] = ref.env
    if ref.max_episode_steps and not metadata.get("max_episode_steps"):
        metadata["max_episode_steps"] = ref.max_episode_steps
    return metadata


def _small_entries(group) -> dict[str, Any]:
    """The scalar and string entries of a D4RL `metadata/` group (not policy weights)."""
    import h5py

    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.size <= 1:
            out[name] = _decode_attr(obj[()])
    group.visititems(visit)
    return out


def qlearning_episode_ends(terminals, timeouts=None, max_episode_steps: int | None = None):
    """bool [N]: the rows d4rl.qlearning_dataset treats as an episode's final timestep.

    With `timeouts` (D4RL v1/v2) those are the timeout rows. Without them (v0) d4rl counts
    steps: a counter starts at 0, a row is final when the counter equals max_episode_steps - 1
    (the counter then restarts at 0 and the row is dropped); every kept row adds 1, and a
    terminal row first resets the counter to 0, so the step after a termination counts 1
    (the d4rl code's order, kept so that the same rows survive).
    """
    if timeouts is not None:
        return np.asarray(timeouts, bool).copy()
    terminals = np.asarray(terminals, bool)
    final = np.zeros(terminals.shape[0], bool)
    last = int(max_episode_steps) - 1
    count = 0
    for i in range(terminals.shape[0] - 1):
        if count == last:
            final[i] = True
            count = 0
            continue
        if terminals[i]:
            count = 0
        count += 1
    return final


def _qlearning_transitions(arrays: Mapping[str, np.ndarray],
                           max_episode_steps: int | None) -> dict[str, np.ndarray]:
    """Transitions (s_i, a_i, r_i, s_{i+1}) from a flat D4RL array set without next states.

    The rows d4rl.qlearning_dataset keeps (terminate_on_end=False; Fu et al. 2020 code): row i
    pairs observations[i] with observations[i + 1]; final timesteps (`qlearning_episode_ends`:
    timeouts, or the step counter of a file without them) and the last row are dropped.
    Terminal rows are kept; their next observation (the next episode's first) is masked by the
    terminal. Unlike d4rl, episode ends survive: a kept row followed by a dropped one that is
    not already an end gets timeouts=True, so `episode_returns` still splits episodes.
    """
    n = arrays["observations"].shape[0]
    terminals = np.asarray(arrays["terminals"], bool)
    keep = ~qlearning_episode_ends(terminals, arrays.get("timeouts"), max_episode_steps)
    keep[n - 1] = False
    before_dropped = np.zeros(n, bool)
    before_dropped[:-1] = ~keep[1:]
    obs = arrays["observations"]
    out = {k: np.asarray(arrays[k])[keep] for k in ("observations", "actions", "rewards",
                                                     "terminals")}
    out["next_observations"] = np.concatenate([obs[1:], obs[-1:]])[keep]
    out["timeouts"] = (before_dropped & ~terminals)[keep]
    return out


# ----------------------------------------------------------------------------- cached sets

def set_names(prefix: str) -> list[str]:
    """The five registered names generated together, f"{prefix}-{kind}-v0" for each of KINDS."""
    if prefix not in ENVS:
        raise DatasetError(f"unknown dataset prefix {prefix!r}; valid: {', '.join(ENVS)}")
    return [f"{prefix}-{kind}-v0" for kind in KINDS]


def repair_command(prefix: str) -> str:
    return f"python -m launch.datasets --env={prefix} --force"


@dataclasses.dataclass
class CachedFile:
    """One file of a cached set as `inspect_set` found it.

    status: "ok", "missing", "damaged" (does not read as a dataset) or "mixed" (readable, but
    from another generation than the rest of the set); detail says why.
    """
    name: str
    path: pathlib.Path
    status: str
    detail: str = ""
    metadata: dict | None = None
    dataset: Dataset | None = None


def _identity(metadata: Mapping[str, Any]) -> tuple:
    """What the files of one generation share: its set id; for files written without one,
    their seed, code version and reference returns."""
    if metadata.get(SET_ID) is not None:
        return (SET_ID, str(metadata[SET_ID]))
    return ("legacy", metadata.get("seed"), metadata.get("code_version"),
            metadata.get("ref_min_score"), metadata.get("ref_max_score"))


def _describe(metadata: Mapping[str, Any]) -> str:
    def number(x):
        return f"{x:.6g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else repr(x)
    return (f"seed {metadata.get('seed')!r}, ref_min_score {number(metadata.get('ref_min_score'))}"
            f", ref_max_score {number(metadata.get('ref_max_score'))}")


def inspect_set(prefix: str, *, read_arrays: bool = False) -> list[CachedFile]:
    """The five files of the cached set `prefix` (`set_names`), each with its status.

    damaged: not a readable HDF5 dataset (a truncated or overwritten file, metadata that is not
    JSON, a folder in its place; with read_arrays, the whole `load_hdf5` and its validation).
    mixed: readable but not from the generation that most readable files come from (another
    `SET_ID`, or, for files written without one, another seed, code version or reference
    returns): what an interrupted or concurrent generation leaves. Never raises for a file's
    content; the cache directory itself may raise (see `cache_dir`).
    """
    files = []
    for name in set_names(prefix):
        path = dataset_path(name)
        if not os.path.lexists(path):
            files.append(CachedFile(name, path, "missing", "not generated"))
            continue
        if not path.is_file():
            files.append(CachedFile(name, path, "damaged", "not a regular file"))
            continue
        try:
            if read_arrays:
                dataset = load_hdf5(path)
                metadata = dataset.metadata
            else:
                dataset = None
                with _open_hdf5(path) as f:
                    metadata = _read_attrs(f, str(path))
        except DatasetError as e:
            files.append(CachedFile(name, path, "damaged", str(e).removeprefix(f"{path}: ")))
            continue
        files.append(CachedFile(name, path, "ok", "", metadata, dataset))
    groups: dict[tuple, list[CachedFile]] = {}
    for f in files:
        if f.status == "ok":
            groups.setdefault(_identity(f.metadata), []).append(f)
    if len(groups) > 1:
        main = max(groups.values(), key=len)  # the first of the largest groups, in KINDS order
        for f in files:
            if f.status == "ok" and f not in main:
                f.status = "mixed"
                others = ", ".join(m.path.name for m in main)
                f.detail = (f"from another generation ({_describe(f.metadata)}) than {others} "
                            f"({_describe(main[0].metadata)})")
    return files


def check_set(prefix: str) -> None:
    """Nothing if the cached set `prefix` is complete, readable and from one generation; else
    DatasetError, one line naming each bad file and the command that regenerates the set."""
    bad = [f for f in inspect_set(prefix) if f.status != "ok"]
    if not bad:
        return
    problems = "; ".join(f"{f.path.name} is {f.detail}" if f.status == "mixed" else
                         f"{f.path.name} is {f.status} ({f.detail})" for f in bad)
    raise DatasetError(f"the cached {prefix} datasets in {cache_dir()} are not one complete "
                       f"set: {problems}; repair: {repair_command(prefix)}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def clean_temporaries(directory=None) -> list[pathlib.Path]:
    """Removes what killed writers left in `directory` (default: the cache): the hidden
    ".<name>.<pid>.<token>.tmp" files of `save_hdf5` and folders of `save_set` whose process
    <pid> no longer runs on this machine. Returns the removed paths."""
    directory = cache_dir() if directory is None else pathlib.Path(directory)
    removed = []
    for entry in sorted(directory.iterdir()):
        parts = entry.name[:-len(".tmp")].rsplit(".", 2)
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp") and len(parts) == 3
                and parts[1].isdigit()):
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _process_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def save_set(prefix: str, datasets: Mapping[str, Dataset]) -> dict[str, pathlib.Path]:
    """Writes the five datasets of `prefix` into the cache as one set; returns {name: path}.

    Every file gets the same fresh metadata[SET_ID]. The files are first written (each with
    `save_hdf5`) into a hidden staging folder in the cache, then renamed over the cached ones
    one after the other: an interruption while writing leaves the cached set untouched, and
    one during the renames leaves a set that `check_set` reports as mixed. Stale temporaries
    of killed writers are removed first (`clean_temporaries`).
    """
    names = set_names(prefix)
    if sorted(datasets) != sorted(names):
        raise DatasetError(f"a {prefix} set needs exactly the datasets {names}; got "
                           f"{sorted(datasets)}")
    directory = cache_dir()
    clean_temporaries(directory)
    in_the_way = [dataset_path(n) for n in names
                  if os.path.lexists(dataset_path(n)) and not dataset_path(n).is_file()]
    if in_the_way:
        raise DatasetError(f"{in_the_way[0]} is not a regular file; move it away and generate "
                           "again")
    set_id = secrets.token_hex(8)
    staging = directory / f".{prefix}-set.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    staging.mkdir()
    try:
        for name in names:
            ds = datasets[name]
            save_hdf5(staging / f"{name}.hdf5",
                      Dataset(ds.arrays, {**ds.metadata, SET_ID: set_id}))
        for name in names:
            os.replace(staging / f"{name}.hdf5", dataset_path(name))
        _fsync_dir(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: dataset_path(name) for name in names}


# ----------------------------------------------------------------------------- Minari

def _minari_data_dir(dataset_id_or_path, root) -> pathlib.Path:
    path = pathlib.Path(dataset_id_or_path).expanduser()
    candidates = []
    if path.is_file():
        return path.parent
    if path.is_dir():
        candidates += [path / "data", path]
    base = pathlib.Path(root or os.environ.get("MINARI_DATASETS_PATH")
                        or "~/.minari/datasets").expanduser()
    candidates.append(base / str(dataset_id_or_path) / "data")
    for c in candidates:
        if (c / "main_data.hdf5").is_file() or (c / "metadata.json").is_file():
            return c
    raise DatasetError(f"Minari dataset {str(dataset_id_or_path)!r} not found: no "
                       f"main_data.hdf5 or metadata.json in {', '.join(str(c) for c in candidates)}"
                       " (root: the `root` argument, else $MINARI_DATASETS_PATH, else "
                       "~/.minari/datasets; nothing is downloaded at run time: fetch it first, "
                       "e.g. `minari download <id>`)")


MINARI_INSTALL = "pip install -e '.[minari]' (minari with pyarrow)"


def _minari_hdf5_episodes(file: pathlib.Path):
    """(label, {observations, actions, rewards, terminations, truncations}) per episode of a
    Minari HDF5 file, in episode order, read with h5py."""
    import h5py

    source = str(file)
    with _open_hdf5(file) as f:
        names = [k for k in f.keys() if k.startswith("episode_") and k[8:].isdigit()]
        if not names:
            raise DatasetError(f"{source}: no episode_<i> groups (not a Minari dataset)")
        for ep_name in sorted(names, key=lambda k: int(k[8:])):
            ep = f[ep_name]
            for key in _MINARI_KEYS:
                if key not in ep:
                    raise DatasetError(f"{source}: {ep_name} has no key {key!r}")
                if not isinstance(ep[key], h5py.Dataset):
                    raise DatasetError(f"{source}: {ep_name}/{key} is a group (a Dict or Tuple "
                                       "space); only array observations and actions are "
                                       "supported")
            yield ep_name, {key: ep[key][()] for key in _MINARI_KEYS}


def _minari_storage_episodes(data_dir: pathlib.Path, data_format: str):
    """The same per episode, for Arrow / Parquet storage, through minari's storage class."""
    try:
        from minari.dataset.minari_storage import MinariStorage
        storage = MinariStorage.read(data_dir)
    except ImportError as e:
        raise ImportError(f"{data_dir}: a Minari dataset in {data_format} storage is read "
                          f"through minari and pyarrow ({e.name or e} is not installed): "
                          f"{MINARI_INSTALL}") from None
    except (ValueError, KeyError, AssertionError) as e:
        raise DatasetError(f"{data_dir}: not a readable Minari dataset: {e}") from e
    for i, ep in enumerate(storage.get_episodes(range(storage.total_episodes))):
        for key in _MINARI_KEYS:
            if not isinstance(ep[key], np.ndarray):
                raise DatasetError(f"{data_dir}: episode {i} {key!r} is not an array (a Dict or "
                                   "Tuple space); only array observations and actions are "
                                   "supported")
        yield f"episode {i}", {key: ep[key] for key in _MINARI_KEYS}


_MINARI_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def load_minari(dataset_id_or_path, root=None) -> Dataset:
    """Dataset from a Minari dataset on disk (HDF5 storage read with h5py; Arrow / Parquet
    through minari, the optional minari extra).

    `dataset_id_or_path`: a dataset id (e.g. "D4RL/pen/human-v2") under `root`, else
    $MINARI_DATASETS_PATH, else ~/.minari/datasets; or the dataset's directory, its data/
    directory or its main_data.hdf5. Per episode: observations[:-1] -> observations,
    observations[1:] -> next_observations, terminations -> terminals, truncations (and not
    terminations) -> timeouts. Only array (Box) observations and actions are supported.
    metadata: name "minari:<id>", the reference scores of metadata.json when present, the
    environment of its eval_env_spec (else env_spec) as "minari_env_id" and as "env": the gymnax
    id when gymnax has it, else "gymnasium:<id>" (`envs.gymnasium_env`).
    """
    data_dir = _minari_data_dir(dataset_id_or_path, root)
    info = {}
    if (data_dir / "metadata.json").is_file():
        try:
            info = json.loads((data_dir / "metadata.json").read_text())
        except ValueError as e:
            raise DatasetError(f"{data_dir / 'metadata.json'}: not valid JSON: {e}") from e
    data_format = info.get("data_format", "hdf5")
    if data_format == "hdf5":
        source = str(data_dir / "main_data.hdf5")
        episodes_iter = _minari_hdf5_episodes(data_dir / "main_data.hdf5")
    else:
        source = str(data_dir)
        episodes_iter = _minari_storage_episodes(data_dir, data_format)
    parts = {k: [] for k in KEYS}
    num_episodes = 0
    for label, ep in episodes_iter:
        obs = np.asarray(ep["observations"])
        steps = np.shape(ep["actions"])[0]
        for key in ("rewards", "terminations", "truncations"):
            ep[key] = _squeeze_column(np.asarray(ep[key]))
            if ep[key].shape[:1] != (steps,):
                raise DatasetError(f"{source}: {label}/{key} has shape {ep[key].shape}, "
                                   f"expected {steps} rows like {label}/actions")
        if obs.shape[:1] != (steps + 1,):
            raise DatasetError(f"{source}: {label}/observations has shape {obs.shape}, "
                               f"expected {steps + 1} rows ({label}/actions + 1)")
        terminations = ep["terminations"].astype(bool)
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(ep["actions"]))
        parts["rewards"].append(ep["rewards"])
        parts["terminals"].append(terminations)
        parts["timeouts"].append(ep["truncations"].astype(bool) & ~terminations)
        num_episodes += 1
    if not num_episodes:
        raise DatasetError(f"{source}: the Minari dataset has no episodes")
    arrays = validate({k: np.concatenate(v) for k, v in parts.items()}, source)
    dataset_id = info.get("dataset_id", str(dataset_id_or_path))
    metadata = {"name": f"minari:{dataset_id}", "source": source, "num_episodes": num_episodes}
    env_id = _minari_env_id(info)
    if env_id:
        metadata["minari_env_id"] = env_id
        metadata["env"] = env_id if _is_gymnax_env(env_id) else f"gymnasium:{env_id}"
    for key in ("ref_min_score", "ref_max_score", "algorithm_name", "author",
                "total_steps", "total_episodes", "data_format"):
        if info.get(key) is not None:
            metadata[key] = info[key]
    returns = episode_returns(arrays)
    if returns.size:
        metadata["behaviour_return"] = float(returns.mean())
    return Dataset(arrays, metadata)


def _minari_env_id(info: Mapping[str, Any]):
    """The id of the dataset's evaluation env spec, else of the env it was collected in."""
    for key in ("eval_env_spec", "env_spec"):
        spec = info.get(key)
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except ValueError:
                continue
        if isinstance(spec, dict) and spec.get("id"):
            return spec["id"]
    return None


def _is_gymnax_env(env_id: str) -> bool:
    import gymnax

    return env_id in gymnax.registered_envs


# ----------------------------------------------------------------------------- load, scores

def _resolve(name_or_path) -> tuple[str, Any]:
    """("registered" | "hdf5" | "minari", path or id) for anything `load` accepts."""
    text = os.fspath(name_or_path)
    if text.startswith("minari:"):
        return "minari", text[len("minari:"):]
    if text in dataset_names():
        path = dataset_path(text)
        if not path.is_file():
            prefix = parse_name(text)[0]
            raise DatasetError(f"dataset {text!r} is not in the cache ({path}); generate it with "
                               f"`python -m launch.datasets --env={prefix}` (the cache directory "
                               "is $JAXRL_DATASETS_DIR, else ~/.cache/jaxrl-diffusion-lab/"
                               "datasets)")
        return "hdf5", path
    if text.endswith((".hdf5", ".h5")) or os.path.isfile(text):
        return "hdf5", pathlib.Path(text)
    raise DatasetError(f"unknown dataset {text!r}{_suggest(text, dataset_names())}: expected a "
                       f"registered name ({', '.join(dataset_names())}), a path to a .hdf5/.h5 "
                       "file or 'minari:<dataset id>'")


def load(name_or_path, max_episode_steps: int | None = None) -> Dataset:
    """A registered name (from the cache), a path to an .hdf5/.h5 file, or "minari:<id>".

    max_episode_steps: the time limit that cuts the episodes of a D4RL v0 file (no timeouts),
    see `load_hdf5`."""
    kind, where = _resolve(name_or_path)
    if kind == "minari":
        return load_minari(where)
    return load_hdf5(where, max_episode_steps=max_episode_steps)


def load_metadata(name_or_path) -> dict[str, Any]:
    """The metadata of what `load` accepts, without reading the arrays (HDF5 files)."""
    kind, where = _resolve(name_or_path)
    if kind == "minari":
        return load_minari(where).metadata
    with _open_hdf5(pathlib.Path(where)) as f:
        metadata = _read_attrs(f, str(where))
    return _with_d4rl_reference(metadata, pathlib.Path(where))


def normalized_score(returns, dataset):
    """`algorithms.core.scores.normalized_score` of `returns` with the reference returns
    (ref_min_score, ref_max_score) of `dataset`'s metadata.

    `dataset`: a Dataset, its metadata dict, or anything `load` accepts (metadata read from the
    file). 0 = the random policy, 100 = the expert. Returns a float for a scalar `returns`,
    else a float64 array of its shape.
    """
    if isinstance(dataset, Dataset):
        metadata = dataset.metadata
    elif isinstance(dataset, Mapping):
        metadata = dataset
    else:
        metadata = load_metadata(dataset)
    name = metadata.get("name", "dataset")
    lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if lo is None or hi is None:
        raise DatasetError(f"dataset {name!r}: metadata has no 'ref_min_score' and "
                           "'ref_max_score' (mean returns of the random and expert policies), "
                           "so no normalized score")
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not np.isfinite([lo, hi]).all() or hi == lo:
        raise DatasetError(f"dataset {name!r}: reference scores ref_min_score="
                           f"{metadata['ref_min_score']!r}, ref_max_score="
                           f"{metadata['ref_max_score']!r} must be finite numbers that differ")
    score = _score(np.asarray(returns, np.float64), lo, hi)
    return float(score) if score.ndim == 0 else score


def episode_returns(arrays, *, include_unfinished: bool = False) -> np.ndarray:
    """Undiscounted return of each episode, in order, as float64 [num_episodes].

    `arrays`: a Dataset or its arrays dict (rewards, terminals, timeouts). An episode ends at a
    row with terminals | timeouts; rows after the last end (an unfinished episode) are left
    out unless include_unfinished.
    """
    if isinstance(arrays, Dataset):
        arrays = arrays.arrays
    ends = episodes.episode_ends(np.asarray(arrays["terminals"]), np.asarray(arrays["timeouts"]))
    return episodes.episode_returns(arrays["rewards"], ends,
                                    include_unfinished=include_unfinished)
