"""The exact model of a finite MDP, in the sparse form the dynamic-programming code uses.

A `TabularMDP` stores, for every state-action pair, K possible outcomes:

    next_states[s, a, k]  index of the k-th possible next state
    probs[s, a, k]        its probability (sums to 1 over k)
    rewards[s, a]         expected immediate reward r(s, a) = sum_s' p(s'|s,a) r(s,a,s')

A dense MDP is the special case K = S with next_states[s, a, k] = k. Grid worlds have K = |A|
(one outcome per executed action), so a 100x100 grid needs 2.5e5 entries instead of the
5e8 of a dense P[s, a, s'] tensor.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class TabularMDP:
    next_states: jax.Array  # [S, A, K] int32
    probs: jax.Array  # [S, A, K] float
    rewards: jax.Array  # [S, A] float

    @property
    def num_states(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_actions(self) -> int:
        return self.rewards.shape[1]

    def expected_next(self, values: jax.Array) -> jax.Array:
        """E[values(S') | s, a] for every (s, a): shape [S, A]."""
        chex.assert_shape(values, (self.num_states,))
        return jnp.sum(self.probs * values[self.next_states], axis=-1)

    def dense(self) -> tuple[jax.Array, jax.Array]:
        """(P[s, a, s'], R[s, a]) as dense arrays (only for small state spaces)."""
        s, a, k = self.next_states.shape
        p = jnp.zeros((s, a, s), self.probs.dtype)
        rows = jnp.arange(s)[:, None, None]
        cols = jnp.arange(a)[None, :, None]
        p = p.at[rows, cols, self.next_states].add(self.probs)
        return p, self.rewards

    @classmethod
    def from_dense(cls, transition: jax.Array, rewards: jax.Array) -> "TabularMDP":
        """Wraps dense P[s, a, s'] (rows summing to one) and R[s, a]."""
        s, a, s2 = transition.shape
        if s != s2 or rewards.shape != (s, a):
            raise ValueError(
                f"expected P of shape [S, A, S] and R of shape [S, A]; got {transition.shape} "
                f"and {rewards.shape}")
        next_states = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (s, a, s))
        return cls(next_states=next_states, probs=transition, rewards=rewards)


def random_mdp(key: jax.Array, num_states: int, num_actions: int) -> TabularMDP:
    """A random dense MDP (Dirichlet(1) transition rows, N(0, 1) rewards) for solver tests."""
    k_p, k_r = jax.random.split(key)
    transition = jax.random.dirichlet(k_p, jnp.ones(num_states), (num_states, num_actions))
    rewards = jax.random.normal(k_r, (num_states, num_actions))
    return TabularMDP.from_dense(transition, rewards)


@struct.dataclass
class EnvState(environment.EnvState):
    """State of a finite env whose observation is the state index."""
    pos: jax.Array  # int32 state index
    time: jax.Array  # int32 step counter


class IndexedEnv(environment.Environment):
    """gymnax plumbing shared by the finite envs (grid worlds, `envs.mdp.ArrayMDP`): the
    observation is the int32 state index and the exact model is `tabular_mdp(params)`.
    Subclasses define num_states, num_actions, step_env, reset_env and tabular_mdp."""

    def reset_to(self, state_index):
        """(obs, env_state) placed in a given state: for exploring starts and evaluation."""
        pos = jnp.asarray(state_index, jnp.int32)
        return pos, EnvState(pos=pos, time=jnp.int32(0))

    def action_space(self, params=None):
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params=None):
        return spaces.Discrete(self.num_states)

    def state_space(self, params=None):
        return spaces.Dict({"pos": spaces.Discrete(self.num_states),
                            "time": spaces.Discrete(params.max_steps_in_episode)})

    def tabular_model(self, params) -> tuple[jax.Array, jax.Array]:
        """Dense exact model (P[s, a, s'], R[s, a]) (small state spaces only)."""
        return self.tabular_mdp(params).dense()
