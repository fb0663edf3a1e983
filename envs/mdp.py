"""A finite MDP given by arrays: `--env=mdp:path.npz`, or `ArrayMDP(P, R)` from Python.

    P[s, a, s']  transition probabilities, shape [S, A, S], every row P[s, a, :] summing to 1
    R[s, a]      expected immediate reward r(s, a), shape [S, A]
    start[s]     optional: the distribution of the first state (default uniform over states)
    terminal[s]  optional bool: reaching such a state ends an episode; the exact model must
                 then keep it absorbing with zero reward (P[s, a, s] = 1, R[s, a] = 0), so that
                 dynamic programming and the sampled episodes describe the same task

This is the book's MDP (S. Zhao, Mathematical Foundations of RL, Ch. 1-2: p(s'|s, a) and the
expected reward r(s, a)) with nothing else assumed, so every dynamic-programming algorithm runs
on it; the sample-based ones run on it too (next states drawn from P[s, a, :], the reward R[s, a]
paid deterministically, observations the int32 state index).

    ArrayMDP(P, R)                       # validated, ValueError naming the first problem
    save("my.npz", P, R)                 # a file `--env=mdp:my.npz` reads (validated first)
    load("my.npz")                       # ArrayMDP from a file

The arrays are kept as float64 numpy and cast to the run's float dtype when the exact model is
built, so `--config.x64=true` solves in float64.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from envs.tabular import EnvState, IndexedEnv, TabularMDP

PREFIX = "mdp:"
# How far a row of P may sum from 1 (float32 files that were normalised in float32 pass).
ROW_SUM_TOL = 1e-5


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 100


def _as_array(name: str, x, source: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {name} is not a numeric array ({e})") from None
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{source}: {name} has a non-finite entry at {bad}: {arr[bad]}")
    return arr


def validate(transition, rewards, start=None, terminal=None, source: str = "ArrayMDP"):
    """(P, R, start, terminal) as float64 / bool numpy arrays, checked; ValueError otherwise."""
    p = _as_array("P", transition, source)
    r = _as_array("R", rewards, source)
    if p.ndim != 3 or p.shape[0] != p.shape[2] or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"{source}: P must have shape [S, A, S] (S, A >= 1); got {p.shape}")
    num_states, num_actions = p.shape[:2]
    if r.shape != (num_states, num_actions):
        raise ValueError(f"{source}: R must have shape [S, A] = {(num_states, num_actions)} to "
                         f"match P {p.shape}; got {r.shape}")
    if np.any(p < 0):
        s, a, s2 = (int(i) for i in np.argwhere(p < 0)[0])
        raise ValueError(f"{source}: P[{s}, {a}, {s2}] = {p[s, a, s2]} is negative; "
                         "probabilities must be >= 0")
    sums = p.sum(axis=-1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if np.any(off):
        s, a = (int(i) for i in np.argwhere(off)[0])
        raise ValueError(f"{source}: row P[{s}, {a}, :] sums to {float(sums[s, a]):.8g}, not 1 "
                         f"({int(off.sum())} rows of {off.size} are off by more than "
                         f"{ROW_SUM_TOL})")
    if start is None:
        start = np.full(num_states, 1.0 / num_states)
    start = _as_array("start", start, source)
    if start.shape != (num_states,) or np.any(start < 0) or abs(start.sum() - 1.0) > ROW_SUM_TOL:
        raise ValueError(f"{source}: start must be a distribution over the {num_states} states "
                         f"(shape [S], >= 0, summing to 1); got shape {start.shape}, sum "
                         f"{float(start.sum()):.8g}")
    if terminal is None:
        terminal = np.zeros(num_states, bool)
    terminal = np.asarray(terminal)
    if terminal.shape != (num_states,) or terminal.dtype.kind not in "bi":
        raise ValueError(f"{source}: terminal must be a bool array of shape [S] = "
                         f"({num_states},); got {terminal.dtype} {terminal.shape}")
    terminal = terminal.astype(bool)
    for s in np.flatnonzero(terminal):
        if not (np.allclose(p[s, :, s], 1.0, atol=ROW_SUM_TOL) and np.all(r[s] == 0)):
            raise ValueError(f"{source}: terminal state {s} must be absorbing with zero reward "
                             f"(P[{s}, a, {s}] = 1 and R[{s}, a] = 0 for every action a)")
    if np.all(start[~terminal] == 0):
        raise ValueError(f"{source}: every state the start distribution can pick is terminal")
    return p, r, start, terminal


class ArrayMDP(IndexedEnv):
    """A finite MDP from arrays (see the module docstring); observations are the state index."""

    def __init__(self, transition, rewards, start=None, terminal=None,
                 source: str = "ArrayMDP"):
        super().__init__()
        self.source = source
        self.transition, self.rewards, self.start, self.terminal = validate(
            transition, rewards, start, terminal, source)
        # Where episodes may start, and the states the agent can be in (every one).
        self.startable = self.start > 0
        self.occupiable = np.ones(self.num_states, bool)

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(self, key, state: EnvState, action, params: EnvParams):
        dtype = jnp.result_type(float)
        probs = jnp.asarray(self.transition, dtype)[state.pos, action]
        next_state = jax.random.choice(key, self.num_states, p=probs).astype(jnp.int32)
        reward = jnp.asarray(self.rewards, dtype)[state.pos, action]
        terminated = jnp.asarray(self.terminal)[next_state]
        new_state = EnvState(pos=next_state, time=(state.time + 1).astype(jnp.int32))
        return next_state, new_state, reward, terminated, {}

    def reset_env(self, key, params: EnvParams):
        pos = jax.random.choice(key, self.num_states, p=jnp.asarray(self.start))
        return self.reset_to(pos)

    def is_terminated(self, state: EnvState, params: EnvParams):
        return jnp.asarray(self.terminal)[state.pos]

    @property
    def name(self) -> str:
        return "ArrayMDP"

    @property
    def num_states(self) -> int:
        return self.transition.shape[0]

    @property
    def num_actions(self) -> int:
        return self.transition.shape[1]

    # ------------------------------------------------------------------ exact model
    def tabular_mdp(self, params: EnvParams) -> TabularMDP:
        """The dense exact model (K = S outcomes per pair) in the run's float dtype."""
        del params
        dtype = jnp.result_type(float)
        return TabularMDP.from_dense(jnp.asarray(self.transition, dtype),
                                     jnp.asarray(self.rewards, dtype))


def path_of(name: str) -> str:
    """The file of an env name 'mdp:path.npz'."""
    return name[len(PREFIX):]


def load(path: str) -> ArrayMDP:
    """ArrayMDP from an .npz with arrays P, R (and optionally start, terminal)."""
    source = f"mdp file {path!r}"
    if not path:
        raise ValueError("--env=mdp:PATH needs the path of an .npz file with arrays P[s, a, s'] "
                         "and R[s, a], e.g. --env=mdp:my_mdp.npz")
    if not os.path.isfile(path):
        raise ValueError(f"{source}: no such file (give an .npz with arrays P[s, a, s'] and "
                         "R[s, a]; envs.mdp.save writes one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # a zip / npy decoding error of any kind
        raise ValueError(f"{source}: not a readable .npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("P", "R") if k not in arrays]
    unknown = sorted(set(arrays) - {"P", "R", "start", "terminal"})
    if missing or unknown:
        raise ValueError(f"{source}: needs arrays P and R (optional: start, terminal); "
                         f"missing {missing}, unknown {unknown}, found {sorted(arrays)}")
    return ArrayMDP(arrays["P"], arrays["R"], arrays.get("start"), arrays.get("terminal"),
                    source=source)


def save(path: str, transition, rewards, start=None, terminal=None) -> None:
    """Validates and writes an .npz that `--env=mdp:path` reads."""
    p, r, start, terminal = validate(transition, rewards, start, terminal, f"save({path!r})")
    np.savez(path, P=p, R=r, start=start, terminal=terminal)
