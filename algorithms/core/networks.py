"""Networks shared by the deep-RL algorithms (flax linen).

Linen, not NNX: modules are pure `apply(params, x)` functions, params are plain pytrees, so one
seed's parameters slice out of a vmapped state and `jax.vmap` over seeds needs nothing special.
Policies return distrax distributions. Critic ensembles are one vmapped module (`nn.vmap`),
never N copies.
"""
from __future__ import annotations

from typing import Callable, Sequence

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


# Hidden-layer activations by config name (`config.activation`); the names are the codebase's
# shared choice set (algorithms.core.config_rules.VOCABULARY).
ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu,
                                    "swish": nn.swish, "elu": nn.elu, "mish": jax.nn.mish}


def _orthogonal(scale: float):
    """flax's orthogonal initializer, vmapped as a loop over the batch (same values).

    Under `jax.vmap(init)` over seeds the QR factorisation becomes a batched LAPACK custom call
    that splits its batch over XLA's intra-op thread pool (jax::ParallelBatchMap) and blocks on
    it; two such calls running at once on a 2-thread pool wait for each other forever (seen on
    2-core CPUs with jax 0.10.2: `jit(vmap(init))` hung with all threads idle in
    BlockingCounter::Wait). `sequential_vmap` keeps every QR unbatched.
    """
    base = nn.initializers.orthogonal(scale)

    def init(key, shape, dtype=jnp.float32):
        return jax.custom_batching.sequential_vmap(lambda k: base(k, shape, dtype))(key)

    return init


def _dense(features: int, scale: float = np.sqrt(2.0)) -> nn.Dense:
    """Orthogonal init with gain `scale` and zero bias (Engstrom et al. 2020, PPO details)."""
    return nn.Dense(features, kernel_init=_orthogonal(scale), bias_init=nn.initializers.zeros)


class MLP(nn.Module):
    """Hidden layers of `hidden_sizes` units with `activation`, then a linear output layer."""
    hidden_sizes: Sequence[int]
    out: int
    activation: Callable = nn.tanh
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[:-1] + (-1,)) if x.ndim > 1 else x
        for h in self.hidden_sizes:
            x = self.activation(_dense(h)(x))
        return _dense(self.out, self.out_scale)(x)


def flatten_obs(obs: jax.Array, obs_ndim: int) -> jax.Array:
    """Flattens the trailing `obs_ndim` observation axes (MinAtar images -> vectors)."""
    lead = obs.shape[:obs.ndim - obs_ndim]
    return obs.reshape(lead + (-1,)).astype(jnp.float32)


class CategoricalPolicy(nn.Module):
    """pi(a|s) = softmax(logits(s)) for discrete actions."""
    hidden_sizes: Sequence[int]
    num_actions: int
    activation: Callable = nn.tanh

    @nn.compact
    def __call__(self, obs):
        logits = MLP(self.hidden_sizes, self.num_actions, self.activation, out_scale=0.01)(obs)
        return distrax.Categorical(logits=logits)


class GaussianPolicy(nn.Module):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2) with a state-independent log std (PPO/TRPO)."""
    hidden_sizes: Sequence[int]
    action_dim: int
    activation: Callable = nn.tanh

    @nn.compact
    def __call__(self, obs):
        mean = MLP(self.hidden_sizes, self.action_dim, self.activation, out_scale=0.01)(obs)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std) * jnp.ones_like(mean))


class ValueNet(nn.Module):
    """v(s) -> scalar."""
    hidden_sizes: Sequence[int]
    activation: Callable = nn.tanh

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden_sizes, 1, self.activation, out_scale=1.0)(obs)[..., 0]


class DiscreteQNet(nn.Module):
    """q(s, .) -> [num_actions] (DQN)."""
    hidden_sizes: Sequence[int]
    num_actions: int
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden_sizes, self.num_actions, self.activation)(obs)


class QNet(nn.Module):
    """q(s, a) -> scalar for continuous actions (DDPG, TD3, SAC)."""
    hidden_sizes: Sequence[int]
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        return MLP(self.hidden_sizes, 1, self.activation)(x)[..., 0]


class QEnsemble(nn.Module):
    """`num` independent q(s, a) critics as one vmapped module: output [num, ...]."""
    hidden_sizes: Sequence[int]
    num: int = 2
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, obs, action):
        ensemble = nn.vmap(QNet, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.num)
        return ensemble(self.hidden_sizes, self.activation)(obs, action)


class DeterministicPolicy(nn.Module):
    """a = max_action * tanh(mu(s)) (DDPG, TD3)."""
    hidden_sizes: Sequence[int]
    action_dim: int
    max_action: float = 1.0
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, obs):
        mu = MLP(self.hidden_sizes, self.action_dim, self.activation)(obs)
        return self.max_action * nn.tanh(mu)


class _DiagonalDistribution(distrax.Distribution):
    """A distribution over vectors [..., A] with independent dimensions, located at `loc`."""

    @property
    def event_shape(self):
        return self.loc.shape[-1:]

    @property
    def batch_shape(self):
        return self.loc.shape[:-1]


class TanhNormal(_DiagonalDistribution):
    """a = max_action * tanh(u), u ~ N(mean, diag(exp(log_std))^2): SAC's squashed Gaussian.

    log pi(a|s) = log N(u) - sum_i log(max_action * (1 - tanh(u_i)^2)) (Haarnoja et al. 2018,
    Eq. 26), with log(1 - tanh(u)^2) written as the stable 2 (log 2 - u - softplus(-2u)).
    mean, log_std: [..., A]; samples [..., A]; log-probs [...].
    """

    def __init__(self, mean: jax.Array, log_std: jax.Array, max_action: float = 1.0):
        self.loc, self.log_std, self.max_action = mean, log_std, max_action

    def _log_prob_of_pre_tanh(self, u: jax.Array, std: jax.Array | None = None) -> jax.Array:
        std = jnp.exp(self.log_std) if std is None else std
        log_normal = distrax.Normal(self.loc, std).log_prob(u).sum(-1)
        log_det = (2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))).sum(-1)
        return log_normal - (log_det + self.loc.shape[-1] * jnp.log(self.max_action))

    def sample_and_log_prob(self, *, seed, sample_shape=()):
        """Reparameterised sample(s) and their log-probs; one draw of shape mean.shape when
        sample_shape is ()."""
        shape = tuple(np.atleast_1d(sample_shape)) if sample_shape != () else ()
        # One exp(log_std), and the log-prob traced before tanh(u): the order in which the
        # gradient contributions are summed then matches the straight-line formula.
        std = jnp.exp(self.log_std)
        u = self.loc + std * jax.random.normal(seed, shape + self.loc.shape)
        log_prob = self._log_prob_of_pre_tanh(u, std)
        return self.max_action * jnp.tanh(u), log_prob

    def _sample_n(self, key, n):
        return self.sample_and_log_prob(seed=key, sample_shape=(n,))[0]

    def log_prob(self, value: jax.Array) -> jax.Array:
        bound = 1.0 - 1e-6  # atanh is infinite at the box edges
        u = jnp.arctanh(jnp.clip(value / self.max_action, -bound, bound))
        return self._log_prob_of_pre_tanh(u)

    def mode(self) -> jax.Array:
        """The deterministic action max_action * tanh(mean) used for evaluation."""
        return self.max_action * jnp.tanh(self.loc)


class DiagGaussian(_DiagonalDistribution):
    """N(mean, diag(exp(log_std))^2) with `gaussian_log_prob`'s density; mean [..., A]."""

    def __init__(self, mean: jax.Array, log_std: jax.Array):
        self.loc, self.log_std = mean, log_std

    def _sample_n(self, key, n):
        noise = jax.random.normal(key, (n,) + self.loc.shape)
        return self.loc + jnp.exp(self.log_std) * noise

    def log_prob(self, value: jax.Array) -> jax.Array:
        return gaussian_log_prob(jnp.broadcast_to(self.loc, value.shape), self.log_std, value)

    def mode(self) -> jax.Array:
        return self.loc


class TanhGaussianPolicy(nn.Module):
    """SAC's actor: a `TanhNormal` with state-dependent mean and log std (Haarnoja et al. 2018,
    App. C), log std clipped to [log_std_min, log_std_max]."""
    hidden_sizes: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, obs) -> TanhNormal:
        out = MLP(self.hidden_sizes, 2 * self.action_dim, self.activation)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return TanhNormal(mean, jnp.clip(log_std, self.log_std_min, self.log_std_max))


class TanhMeanGaussianPolicy(nn.Module):
    """pi(a|s) = N(tanh(MLP(s)), diag(exp(log_std))^2), log_std a state-independent parameter.

    The policy of IQL (Kostrikov et al. 2022) and AWAC as their authors implement it: the mean
    is squashed into [-1, 1], the distribution is not. Returns a `DiagGaussian` with log_std
    [A] clipped to [log_std_min, log_std_max].
    """
    hidden_sizes: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, obs) -> DiagGaussian:
        mean = jnp.tanh(MLP(self.hidden_sizes, self.action_dim, self.activation)(obs))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return DiagGaussian(mean, jnp.clip(log_std, self.log_std_min, self.log_std_max))


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """log N(actions; mean, diag(exp(log_std))^2), summed over action dimensions: [B]."""
    chex.assert_equal_shape([mean, actions])
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z ** 2 - log_std - 0.5 * np.log(2.0 * np.pi), axis=-1)
