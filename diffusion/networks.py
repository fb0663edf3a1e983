"""Raw networks F(x_in, c_noise[, labels]) of the diffusion models and their denoiser view.

A model wraps its raw network into the denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)
(Karras et al. 2022, Eq. 7; `diffusion.precond`). The networks here are small: an MLP for flat
data and a residual conv net for 8x8 images, both conditioned on an embedding of c_noise (and
of a class label, for classifier-free guidance) and both with a zero-initialised output layer.
Shapes: x_in [N, *dims], c_noise [N], labels int32 [N] or None; output x_in's shape.
"""
from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffusion import precond as precond_lib

Array = jax.Array

__all__ = ["PositionalEmbedding", "FourierEmbedding", "Conditioning", "MLP", "ConvNet",
           "make_network", "network_fn", "denoiser_from_raw"]


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar (Vaswani et al. 2017; the time embedding of DDPM, Ho et
    al. 2020): [cos(c f_k), sin(c f_k)], f_k = max_positions^(-k / (dim / 2)), k < dim / 2.
    Suited to c_noise in [0, 1000) (VP's (M - 1) t, DDPM's step index)."""

    dim: int
    max_positions: float = 10_000.0

    @nn.compact
    def __call__(self, c: Array) -> Array:
        half = self.dim // 2
        freqs = (1.0 / self.max_positions) ** (jnp.arange(half, dtype=jnp.float32) / half)
        angle = c.astype(jnp.float32)[:, None] * freqs
        return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar, fixed frequencies f_k ~ N(0, scale^2): [cos(2 pi c
    f_k), sin(2 pi c f_k)] (Tancik et al. 2020; Song et al. 2021's NCSN++ embeds log sigma
    this way with scale 16, as EDM's NCSN++ does with its c_noise). Suited to c_noise ~ log sigma.

    The frequencies are a parameter behind `stop_gradient`: their gradient is 0, so Adam and
    the EMA leave them at their initial values; they live in `params` only so that one seed's
    parameters are the whole model."""

    dim: int
    scale: float = 16.0

    @nn.compact
    def __call__(self, c: Array) -> Array:
        freqs = self.param("freqs", nn.initializers.normal(self.scale), (self.dim // 2,))
        angle = 2.0 * math.pi * c.astype(jnp.float32)[:, None] * jax.lax.stop_gradient(freqs)
        return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


class Conditioning(nn.Module):
    """Noise-level (and class) embedding: embed(c_noise) -> Dense -> SiLU -> Dense, plus a
    learned class embedding (class `num_classes` is the null class of classifier-free
    guidance), then SiLU. labels=None in a conditional net means the null class."""

    width: int
    embedding: str = "positional"
    fourier_scale: float = 16.0
    num_classes: int = 0

    @nn.compact
    def __call__(self, c_noise: Array, labels: Array | None = None) -> Array:
        if self.embedding == "positional":
            e = PositionalEmbedding(self.width)(c_noise)
        elif self.embedding == "fourier":
            e = FourierEmbedding(self.width, self.fourier_scale)(c_noise)
        else:
            raise ValueError(f"unknown embedding {self.embedding!r}; valid: positional, fourier")
        e = nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(e)))
        if self.num_classes:
            if labels is None:
                labels = jnp.full(c_noise.shape, self.num_classes, jnp.int32)
            e = e + nn.Embed(self.num_classes + 1, self.width)(labels)
        return nn.silu(e)


class MLP(nn.Module):
    """F(x_in, c_noise[, labels]) for flat or small data: `depth` hidden layers of `width` SiLU
    units, each adding a projection of the noise / class embedding; a zero-initialised linear
    output (EDM's networks initialise their output layers near zero, so D starts at c_skip x).
    x [N, *dims] -> [N, *dims] (flattened inside)."""

    width: int = 128
    depth: int = 3
    embedding: str = "positional"
    fourier_scale: float = 16.0
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: Array, c_noise: Array, labels: Array | None = None) -> Array:
        n = x.shape[0]
        h = jnp.reshape(x, (n, -1))
        emb = Conditioning(self.width, self.embedding, self.fourier_scale,
                           self.num_classes)(c_noise, labels)
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h) + nn.Dense(self.width)(emb))
        out = nn.Dense(math.prod(x.shape[1:]), kernel_init=nn.initializers.zeros)(h)
        return jnp.reshape(out, x.shape)


class ConvNet(nn.Module):
    """F for small images [N, H, W, C]: a 3x3 conv stem, `depth` residual blocks (GroupNorm,
    SiLU, 3x3 conv, + per-channel projection of the noise / class embedding, GroupNorm, SiLU,
    3x3 conv), a zero-initialised 3x3 conv output. No down-sampling (8x8 inputs)."""

    width: int = 64
    depth: int = 2
    embedding: str = "positional"
    fourier_scale: float = 16.0
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: Array, c_noise: Array, labels: Array | None = None) -> Array:
        if x.ndim != 4:
            raise ValueError(f"ConvNet takes images [N, H, W, C], got shape {x.shape}")
        emb = Conditioning(self.width, self.embedding, self.fourier_scale,
                           self.num_classes)(c_noise, labels)
        groups = math.gcd(8, self.width)
        h = nn.Conv(self.width, (3, 3))(x)
        for _ in range(self.depth):
            r = nn.Conv(self.width, (3, 3))(nn.silu(nn.GroupNorm(groups)(h)))
            r = r + nn.Dense(self.width)(emb)[:, None, None, :]
            r = nn.Conv(self.width, (3, 3))(nn.silu(nn.GroupNorm(groups)(r)))
            h = h + r
        h = nn.silu(nn.GroupNorm(groups)(h))
        return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)


def make_network(config, num_classes: int = 0) -> nn.Module:
    """The raw network of `config.net` (kind 'mlp' or 'conv')."""
    net = config.net
    kwargs = dict(width=int(net.width), depth=int(net.depth), embedding=net.embedding,
                  fourier_scale=float(net.fourier_scale), num_classes=int(num_classes))
    if net.kind == "mlp":
        return MLP(**kwargs)
    if net.kind == "conv":
        return ConvNet(**kwargs)
    raise ValueError(f"unknown config.net.kind {net.kind!r}; valid: mlp, conv")


def network_fn(net: nn.Module, params, labels: Array | None = None) -> Callable:
    """The raw network as raw_fn(x_in, c_noise) -> F, with parameters and labels bound."""
    return lambda x_in, c_noise: net.apply(params, x_in, c_noise, labels)


def denoiser_from_raw(raw_fn: Callable, coefficients: Callable) -> Callable:
    """D(x, sigma) = c_skip x + c_out raw_fn(c_in x, c_noise) (`precond.make_denoiser`)."""
    return precond_lib.make_denoiser(lambda _, x_in, c_noise: raw_fn(x_in, c_noise), None,
                                     coefficients)
