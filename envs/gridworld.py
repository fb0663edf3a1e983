"""Grid worlds of S. Zhao, "Mathematical Foundations of Reinforcement Learning" (2025), Ch. 1-3.

The book's model, as a gymnax 1.x `Environment` that also exposes its exact model:

* States are the cells, numbered row-major from the top left (state = row * width + col).
* Actions a1..a5 = up, right, down, left, stay (the default action set; see `actions`).
* A move off the grid leaves the agent in place. Forbidden cells can be entered.
* The reward depends on the cell the move *aims at*: off the grid -> r_boundary; into (or
  staying in) a forbidden cell -> r_forbidden; into (or staying on) the target -> r_target;
  anything else -> r_other. The target is not terminal by default (a continuing task).

Options beyond the book's default (all on the command line through `--config.env.*`):

* `layout`: a built-in name (`book`, `book_3x3`...) or a text map, rows separated by newlines
  or '/', with '.' free, '#' forbidden, 'T' target, 'S' start cell (optional; without one,
  episodes start in a uniformly random non-wall cell).
* `walls=True`: forbidden cells become walls: a move into one leaves the agent in place and
  still costs r_forbidden. Wall cells keep their state numbers but are never occupied.
* `terminal_target=True`: reaching the target ends the episode (episodic path finding); in the
  exact model the target is absorbing with reward 0.
* `slip_prob`: with this probability the executed action is drawn uniformly from all |A|
  actions instead of the chosen one (so the chosen one happens with 1 - p + p/|A|).
* `actions`: the action set, comma-separated names from up, right, down, left, stay in the
  order they get their indices (default all five; `left,stay,right` is the three-action 1x2
  example of Ch. 4.2, Fig. 4.3).
* `bump_in_forbidden`: the reward of a move off the grid made from a forbidden cell:
  "boundary" (r_boundary, the rule above) or "boundary+forbidden" (r_boundary + r_forbidden:
  the agent bounces back into the forbidden cell and is charged for both, the rule of the
  book's epsilon-greedy examples, Ch. 5, Figs. 5.6-5.7).

Policies can be written as text, one symbol per cell in the layout's shape (rows separated by
'/' or newlines): '^' up, '>' right, 'v' down, '<' left, 'o' stay (the book's circle; the arrows
and circle as unicode also work); see `GridWorld.policy_from_text`.

One pure function, `GridWorld.outcome(state, action, params)`, gives the deterministic result of
an executed action; `step_env` samples the slip and calls it, and `tabular_mdp` / `tabular_model`
evaluate it for every (state, action) pair. They cannot disagree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from envs.tabular import EnvState, IndexedEnv, TabularMDP

# (d_row, d_col) of up, right, down, left, stay.
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1], [0, 0]], dtype=np.int32)
ACTION_NAMES = ("up", "right", "down", "left", "stay")
# Policy text: the symbols of each action (ASCII first, then the book's arrows and circle).
ACTION_SYMBOLS = {"up": "^\u2191", "right": ">\u2192", "down": "v\u2193", "left": "<\u2190",
                  "stay": "o\u25cb"}
BUMP_RULES = ("boundary", "boundary+forbidden")

LAYOUTS = {
    # The book's 5x5 example (Ch. 2-3, e.g. Fig. 3.4): forbidden (2,2) (2,3) (3,3) (4,2) (4,4)
    # (5,2) and target (4,3), 1-based (row, col).
    "book": ".....\n.##..\n..#..\n.#T#.\n.#...",
    # The 2x2 examples of Chapter 2 (target bottom-right, one forbidden cell).
    "book_2x2": ".#\n.T",
    # A 3x3 variant, handy for quick tests.
    "book_3x3": "...\n.#.\n..T",
}


def parse_layout(layout: str) -> np.ndarray:
    """A layout name or text map -> char array [H, W]; raises ValueError naming the problem."""
    text = LAYOUTS.get(layout, layout)
    rows = [r.strip() for r in text.replace("/", "\n").strip().splitlines() if r.strip()]
    if not rows:
        raise ValueError(f"empty grid layout {layout!r}; give a name from {sorted(LAYOUTS)} "
                         "or a text map such as '...#/.T..'")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError(f"grid layout rows have different lengths: {[len(r) for r in rows]}")
    grid = np.array([list(r) for r in rows])
    bad = sorted(set(grid.ravel()) - set(".#TS"))
    if bad:
        raise ValueError(f"unknown layout characters {bad}; use '.' free, '#' forbidden, "
                         "'T' target, 'S' start (or a layout name from "
                         f"{sorted(LAYOUTS)})")
    if (grid == "S").sum() > 1:
        raise ValueError("a layout may have at most one start cell 'S'")
    return grid


def parse_actions(actions: str) -> tuple[str, ...]:
    """'up,right,...' -> action names in index order; raises ValueError naming the problem."""
    names = tuple(a.strip() for a in str(actions).split(",") if a.strip())
    bad = [a for a in names if a not in ACTION_NAMES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"actions={actions!r} is not an action set: give distinct names from "
                         f"{', '.join(ACTION_NAMES)}, comma-separated (e.g. 'left,stay,right')")
    return names


def open_layout(height: int, width: int) -> str:
    """An obstacle-free height x width grid with the target in the bottom-right corner."""
    rows = ["." * width for _ in range(height)]
    rows[-1] = rows[-1][:-1] + "T"
    return "\n".join(rows)


@struct.dataclass
class EnvParams(environment.EnvParams):
    r_boundary: float = -1.0
    r_forbidden: float = -1.0
    r_target: float = 1.0
    r_other: float = 0.0
    slip_prob: float = 0.0
    max_steps_in_episode: int = 100


class GridWorld(IndexedEnv):
    """The book's grid world; observations are the int32 state index."""

    def __init__(self, layout: str = "book", walls: bool = False,
                 terminal_target: bool = False, actions: str = ",".join(ACTION_NAMES),
                 bump_in_forbidden: str = "boundary"):
        super().__init__()
        grid = parse_layout(layout)
        self.layout = "/".join("".join(r) for r in grid)
        self.height, self.width = grid.shape
        self.walls = bool(walls)
        self.terminal_target = bool(terminal_target)
        self.action_names = parse_actions(actions)
        # (d_row, d_col) of each action index.
        self.moves = MOVES[[ACTION_NAMES.index(a) for a in self.action_names]]
        if bump_in_forbidden not in BUMP_RULES:
            raise ValueError(f"bump_in_forbidden={bump_in_forbidden!r} is not a rule: one of "
                             f"{', '.join(BUMP_RULES)}")
        self.bump_in_forbidden = bump_in_forbidden
        self.forbidden = (grid == "#").ravel()
        self.target = (grid == "T").ravel()
        start = np.flatnonzero(grid.ravel() == "S")
        self.start_state = int(start[0]) if start.size else None
        # Cells an episode may start in: all of them, except walls and a terminal target.
        startable = np.ones(self.num_states, bool)
        if self.walls:
            startable &= ~self.forbidden
        if self.terminal_target:
            startable &= ~self.target
        if not startable.any():
            raise ValueError("the layout leaves no cell to start an episode in")
        self.startable = startable
        # States the agent can ever be in (walls are numbered but never occupied).
        self.occupiable = ~self.forbidden if self.walls else np.ones(self.num_states, bool)

    # ------------------------------------------------------------------ the one transition
    def outcome(self, state: jax.Array, action: jax.Array, params: EnvParams):
        """Deterministic (next_state, reward) of *executing* `action` in `state`."""
        row, col = state // self.width, state % self.width
        move = jnp.asarray(self.moves)[action]
        aim_row, aim_col = row + move[0], col + move[1]
        off_grid = ((aim_row < 0) | (aim_row >= self.height)
                    | (aim_col < 0) | (aim_col >= self.width))
        aim = (jnp.clip(aim_row, 0, self.height - 1) * self.width
               + jnp.clip(aim_col, 0, self.width - 1)).astype(jnp.int32)
        aim_forbidden = jnp.asarray(self.forbidden)[aim] & ~off_grid
        aim_target = jnp.asarray(self.target)[aim] & ~off_grid
        reward = jnp.where(off_grid, params.r_boundary,
                           jnp.where(aim_forbidden, params.r_forbidden,
                                     jnp.where(aim_target, params.r_target, params.r_other)))
        if self.bump_in_forbidden == "boundary+forbidden":  # bounced back into a forbidden cell
            here_forbidden = jnp.asarray(self.forbidden)[state]
            reward = jnp.where(off_grid & here_forbidden, params.r_boundary + params.r_forbidden,
                               reward)
        blocked = off_grid | (aim_forbidden & self.walls)
        next_state = jnp.where(blocked, state, aim).astype(jnp.int32)
        if self.terminal_target:  # the target is absorbing with zero reward
            done_already = jnp.asarray(self.target)[state]
            next_state = jnp.where(done_already, state, next_state)
            reward = jnp.where(done_already, 0.0, reward)
        return next_state, jnp.asarray(reward, dtype=jnp.result_type(float))

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(self, key, state: EnvState, action, params: EnvParams):
        k_slip, k_action = jax.random.split(key)
        slipped = jax.random.uniform(k_slip) < params.slip_prob
        random_action = jax.random.randint(k_action, (), 0, self.num_actions)
        executed = jnp.where(slipped, random_action, action)
        next_state, reward = self.outcome(state.pos, executed, params)
        terminated = jnp.asarray(self.target)[next_state] & self.terminal_target
        new_state = EnvState(pos=next_state, time=(state.time + 1).astype(jnp.int32))
        return next_state, new_state, reward, terminated, {}

    def reset_env(self, key, params: EnvParams):
        if self.start_state is not None:
            pos = jnp.int32(self.start_state)
        else:
            probs = jnp.asarray(self.startable / self.startable.sum())
            pos = jax.random.choice(key, self.num_states, p=probs).astype(jnp.int32)
        return self.reset_to(pos)

    def is_terminated(self, state: EnvState, params: EnvParams):
        return jnp.asarray(self.target)[state.pos] & self.terminal_target

    @property
    def name(self) -> str:
        return "GridWorld"

    @property
    def num_states(self) -> int:
        return self.height * self.width

    @property
    def num_actions(self) -> int:
        return len(self.moves)

    # ------------------------------------------------------------------ exact model
    def tabular_mdp(self, params: EnvParams) -> TabularMDP:
        """Sparse exact model: outcome k of (s, a) is executing action k (slip), K = |A|."""
        states = jnp.arange(self.num_states, dtype=jnp.int32)
        actions = jnp.arange(self.num_actions, dtype=jnp.int32)
        next_exec, reward_exec = jax.vmap(
            lambda s: jax.vmap(lambda b: self.outcome(s, b, params))(actions))(states)  # [S, B]
        n_a = self.num_actions
        probs = ((1.0 - params.slip_prob) * jnp.eye(n_a)
                 + params.slip_prob / n_a)  # [A(chosen), B(executed)]
        probs = jnp.broadcast_to(probs, (self.num_states, n_a, n_a))
        next_states = jnp.broadcast_to(next_exec[:, None, :], (self.num_states, n_a, n_a))
        rewards = jnp.einsum("sab,sb->sa", probs, reward_exec)
        return TabularMDP(next_states=next_states, probs=probs, rewards=rewards)

    # ------------------------------------------------------------------ helpers
    def coords(self, state_index: int) -> tuple[int, int]:
        """1-based (row, col) of a state, as the book writes them."""
        return state_index // self.width + 1, state_index % self.width + 1

    def policy_from_text(self, text: str) -> np.ndarray:
        """A deterministic policy pi [S, A] (one-hot, float64) from one symbol per cell.

        Rows are separated by '/' or newlines, as in layouts; the symbols are those of
        `ACTION_SYMBOLS` ('^' up, '>' right, 'v' down, '<' left, 'o' stay), and each must name
        an action of this env's action set. Wall cells need a symbol too (it is never used).
        """
        rows = [r.strip() for r in str(text).replace("/", "\n").splitlines() if r.strip()]
        symbol_action = {c: i for i, name in enumerate(self.action_names)
                         for c in ACTION_SYMBOLS[name]}
        if len(rows) != self.height or any(len(r) != self.width for r in rows):
            raise ValueError(
                f"policy {text!r} has {len(rows)} rows of lengths {[len(r) for r in rows]}; this "
                f"grid needs {self.height} rows of {self.width} symbols (layout {self.layout})")
        bad = sorted({c for r in rows for c in r if c not in symbol_action})
        if bad:
            valid = ", ".join(f"{ACTION_SYMBOLS[n][0]!r} {n}" for n in self.action_names)
            raise ValueError(f"policy {text!r}: unknown symbols {bad} for this action set; "
                             f"use {valid}")
        actions = [symbol_action[c] for r in rows for c in r]
        return np.eye(self.num_actions)[actions]


def plot_values_and_policy(env: GridWorld, values, policy, path, title: str = ""):
    """Draws the grid with v(s) in each cell and arrows for pi(a|s) (a circle for 'stay')."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float).reshape(env.height, env.width)
    policy = np.asarray(policy, dtype=float).reshape(env.height, env.width, env.num_actions)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * env.width, 0.6 + 0.9 * env.height))
    colors = np.ones((env.height, env.width, 3))
    colors[env.forbidden.reshape(env.height, env.width)] = (1.0, 0.75, 0.2)
    colors[env.target.reshape(env.height, env.width)] = (0.3, 0.8, 0.95)
    ax.imshow(colors, origin="upper")
    arrow = 0.32
    for r in range(env.height):
        for c in range(env.width):
            ax.text(c, r + 0.3, f"{values[r, c]:.2f}", ha="center", va="center", fontsize=8)
            for a, (dr, dc) in enumerate(env.moves):
                p = policy[r, c, a]
                if p < 1e-3:
                    continue
                if dr == 0 and dc == 0:  # stay
                    ax.add_patch(plt.Circle((c, r - 0.05), 0.1 * p + 0.04, fill=False,
                                            color="green", lw=1.5))
                else:
                    ax.arrow(c, r - 0.05, dc * arrow * p, dr * arrow * p, head_width=0.08,
                             length_includes_head=True, color="green")
    ax.set_xticks(np.arange(env.width))
    ax.set_xticklabels(np.arange(1, env.width + 1))
    ax.set_yticks(np.arange(env.height))
    ax.set_yticklabels(np.arange(1, env.height + 1))
    ax.set_xticks(np.arange(-0.5, env.width), minor=True)
    ax.set_yticks(np.arange(-0.5, env.height), minor=True)
    ax.grid(which="minor", color="k", lw=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
