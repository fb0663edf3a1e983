"""Data for diffusion experiments: 2-D toys, Gaussian mixtures with their exact denoiser, the
8x8 digits, the training / held-out task of the diffusion models (`DataTask`, `make_task`), and
the sliced Wasserstein distance used as the sample-quality metric.

Nothing is downloaded. Data arrays are float32 [N, *dims] (mixtures follow the default float
dtype, float64 under `jax_enable_x64`).

2-D toys (`make_dataset(name, key, n)`), fixed scales so every run sees the same distribution
(per-coordinate std between ~0.5 and ~0.9, comparable to EDM's sigma_data = 0.5):

    "8gaussians"  8 isotropic Gaussians, std 0.1, means on the unit circle at angles 2 pi k / 8,
                  equal weights; exactly the mixture `eight_gaussians_gmm()`.
    "moons"       two interleaved half circles (the scikit-learn make_moons geometry: outer
                  (cos a, sin a), inner (1 - cos a, 1/2 - sin a), a ~ U(0, pi), each moon with
                  probability 1/2), plus N(0, 0.05^2) noise, shifted by (-1/2, -1/4) to centre it.
    "swissroll"   the 2-D swiss roll r (cos r, sin r) / 10 with r = 1.5 pi (1 + 2u), u ~ U(0, 1),
                  plus N(0, 0.05^2) noise (coordinates within about +-1.5).

Gaussian mixtures p0 = sum_k w_k N(mu_k, diag(s_k^2)) have closed-form noised densities
p_sigma = p0 * N(0, sigma^2 I) = sum_k w_k N(mu_k, diag(s_k^2 + sigma^2)) and posterior mean

    E[x0 | x0 + sigma n = x] = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)),
    r_k(x) = w_k N(x; mu_k, s_k^2 + sigma^2) / p_sigma(x),

the exact denoiser D(x; sigma) that the tests and samplers use instead of a trained network.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array

TOY_DATASETS = ("8gaussians", "moons", "swissroll")
DATASETS = TOY_DATASETS + ("digits",)

_RING_RADIUS = 1.0
_RING_STD = 0.1
_TOY_NOISE = 0.05


# --------------------------------------------------------------------------------------------
# Gaussian mixtures.
# --------------------------------------------------------------------------------------------

class GaussianMixture(NamedTuple):
    """sum_k weights[k] N(means[k], diag(stds[k]^2)); means, stds [K, D], weights [K] (sum 1).

    Build with `make_gmm`, which broadcasts scalar / per-component stds and normalizes weights.
    Methods take x [N, *dims] with prod(dims) = D and sigma [N] or a scalar.
    """

    means: Array
    stds: Array
    weights: Array

    def denoise(self, x: Array, sigma) -> Array:
        """Exact D(x; sigma) = E[x0 | x0 + sigma n = x], x's shape and dtype."""
        return gmm_denoise(self, x, sigma)

    def log_density(self, x: Array, sigma) -> Array:
        """log p_sigma(x) of the noised mixture, [N]."""
        return gmm_log_density(self, x, sigma)

    def score(self, x: Array, sigma) -> Array:
        """grad_x log p_sigma(x) (= (D - x) / sigma^2), x's shape."""
        return gmm_score(self, x, sigma)

    def sample(self, key, n: int) -> Array:
        """n exact samples of p0, [n, D]."""
        return gmm_sample(self, key, n)


def make_gmm(means, stds, weights=None) -> GaussianMixture:
    """A `GaussianMixture` from means [K, D], stds (scalar, [K] isotropic or [K, D] diagonal) and
    weights [K] (normalized here; uniform if None). Arrays are in the default float dtype: float32,
    or float64 under `jax_enable_x64` (for float64 reference computations)."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    means = jnp.asarray(means, dtype)
    chex.assert_rank(means, 2)
    k, d = means.shape
    stds = jnp.asarray(stds, dtype)
    if stds.ndim == 1:
        stds = stds[:, None]
    stds = jnp.broadcast_to(stds, (k, d))
    weights = jnp.ones((k,), dtype) if weights is None else jnp.asarray(weights, dtype)
    chex.assert_shape(weights, (k,))
    return GaussianMixture(means, stds, weights / jnp.sum(weights))


def gmm_denoiser(means, stds, weights=None) -> Callable:
    """denoise_fn(x, sigma) = E[x0 | x] for the mixture (see `make_gmm` for the argument shapes)."""
    return make_gmm(means, stds, weights).denoise


def _flatten(mix: GaussianMixture, x: Array, sigma):
    """x [N, *dims] -> [N, D] and sigma -> [N], in the wider of x's and the mixture's dtypes."""
    n = x.shape[0]
    xf = jnp.reshape(x, (n, -1))
    chex.assert_shape(xf, (n, mix.means.shape[1]))
    dtype = jnp.result_type(x.dtype, mix.means.dtype)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, dtype), (n,))
    return xf.astype(dtype), sigma


def _components(mix: GaussianMixture, x: Array, sigma: Array):
    """var [N, K, D], diff = x - mu [N, K, D], log w_k N(x; mu_k, var_k) [N, K]."""
    var = mix.stds[None] ** 2 + sigma[:, None, None] ** 2
    diff = x[:, None, :] - mix.means[None]
    log_comp = jnp.log(mix.weights) - 0.5 * jnp.sum(
        jnp.log(2.0 * math.pi * var) + diff ** 2 / var, axis=-1)
    return var, diff, log_comp


def gmm_log_density(mix: GaussianMixture, x: Array, sigma) -> Array:
    """log p_sigma(x) = log sum_k w_k N(x; mu_k, diag(s_k^2 + sigma^2)) for x [N, *dims] -> [N]."""
    xf, sigma = _flatten(mix, x, sigma)
    _, _, log_comp = _components(mix, xf, sigma)
    return jax.nn.logsumexp(log_comp, axis=-1)


def gmm_denoise(mix: GaussianMixture, x: Array, sigma) -> Array:
    """The exact posterior mean E[x0 | x0 + sigma n = x] (module docstring), x's shape/dtype."""
    xf, sigma = _flatten(mix, x, sigma)
    var, diff, log_comp = _components(mix, xf, sigma)
    resp = jax.nn.softmax(log_comp, axis=-1)  # r_k(x) [N, K]
    post = mix.means[None] + (mix.stds[None] ** 2 / var) * diff  # E[x0 | x, k] [N, K, D]
    d = jnp.sum(resp[..., None] * post, axis=1)
    return jnp.reshape(d, x.shape).astype(x.dtype)


def gmm_score(mix: GaussianMixture, x: Array, sigma) -> Array:
    """grad_x log p_sigma(x) = -sum_k r_k (x - mu_k) / (s_k^2 + sigma^2), x's shape/dtype."""
    xf, sigma = _flatten(mix, x, sigma)
    var, diff, log_comp = _components(mix, xf, sigma)
    resp = jax.nn.softmax(log_comp, axis=-1)
    s = -jnp.sum(resp[..., None] * diff / var, axis=1)
    return jnp.reshape(s, x.shape).astype(x.dtype)


def gmm_sample(mix: GaussianMixture, key, n: int) -> Array:
    """n samples of p0: component k ~ Categorical(w), x0 = mu_k + s_k * normal; [n, D] in the
    mixture's dtype."""
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.categorical(k_comp, jnp.log(mix.weights), shape=(n,))
    z = jax.random.normal(k_noise, (n, mix.means.shape[1]), mix.means.dtype)
    return mix.means[comp] + mix.stds[comp] * z


def eight_gaussians_gmm() -> GaussianMixture:
    """The "8gaussians" toy as an exact mixture: unit-circle means, std 0.1, equal weights."""
    angles = 2.0 * np.pi * np.arange(8) / 8
    means = _RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return make_gmm(means, _RING_STD)


# --------------------------------------------------------------------------------------------
# 2-D toys.
# --------------------------------------------------------------------------------------------

def _moons(key, n):
    k_a, k_side, k_noise = jax.random.split(key, 3)
    a = jax.random.uniform(k_a, (n,), jnp.float32, 0.0, math.pi)
    inner = jax.random.bernoulli(k_side, 0.5, (n,))
    outer_xy = jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
    inner_xy = jnp.stack([1.0 - jnp.cos(a), 0.5 - jnp.sin(a)], axis=-1)
    x = jnp.where(inner[:, None], inner_xy, outer_xy)
    x = x + _TOY_NOISE * jax.random.normal(k_noise, (n, 2), jnp.float32)
    return x - jnp.array([0.5, 0.25], jnp.float32)


def _swissroll(key, n):
    k_u, k_noise = jax.random.split(key)
    r = 1.5 * math.pi * (1.0 + 2.0 * jax.random.uniform(k_u, (n,), jnp.float32))
    x = jnp.stack([r * jnp.cos(r), r * jnp.sin(r)], axis=-1) / 10.0
    return x + _TOY_NOISE * jax.random.normal(k_noise, (n, 2), jnp.float32)


def make_dataset(name: str, key, n: int) -> Array:
    """n i.i.d. samples of the 2-D toy `name` (see the module docstring), float32 [n, 2]."""
    if name == "8gaussians":
        return gmm_sample(eight_gaussians_gmm(), key, n)
    if name == "moons":
        return _moons(key, n)
    if name == "swissroll":
        return _swissroll(key, n)
    raise ValueError(f"unknown toy dataset {name!r}; valid choices: {', '.join(TOY_DATASETS)}")


# --------------------------------------------------------------------------------------------
# 8x8 digits.
# --------------------------------------------------------------------------------------------

def load_digits(*, flatten: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, shipped with the package).

    Returns:
      images: float32 [1797, 8, 8, 1] (or [1797, 64] with flatten=True), pixel values 0..16
        mapped linearly to [-1, 1] (x / 8 - 1).
      labels: int32 [1797], the digit 0..9.
    Raises:
      ImportError if scikit-learn is not installed (it is an optional dependency).
    """
    try:
        from sklearn import datasets
    except ImportError as err:
        raise ImportError("the 8x8 digits come with scikit-learn, an optional dependency that "
                          f"could not be imported ({err}): pip install scikit-learn") from err
    digits = datasets.load_digits()
    images = (np.asarray(digits.images, np.float32) / 8.0 - 1.0)
    images = images.reshape(-1, 64) if flatten else images[..., None]
    return images, np.asarray(digits.target, np.int32)


# --------------------------------------------------------------------------------------------
# The diffusion models' task: a training set and a held-out set.
# --------------------------------------------------------------------------------------------

@struct.dataclass
class DataTask:
    """A dataset as the algorithms' task: a pytree whose leaves are the four arrays (the runner
    passes them to its jitted programs as one argument shared by all seeds) and whose name and
    class count are static. Labels are int32 class indices (zeros for unlabeled toys)."""

    train: Array           # [N, *dims] float32
    train_labels: Array    # [N] int32
    heldout: Array         # [M, *dims] float32: the evaluation reference
    heldout_labels: Array  # [M] int32
    name: str = struct.field(pytree_node=False, default="")
    num_classes: int = struct.field(pytree_node=False, default=0)  # 0: unlabeled

    @property
    def is_image(self) -> bool:
        """Images [N, H, W, C] (rather than points [N, D])."""
        return self.train.ndim == 4


def make_task(dataset: str, config) -> DataTask:
    """The training and held-out sets of `dataset` (`DATASETS`).

    Toys ('8gaussians', 'moons', 'swissroll'): `config.data.num_train` and
    `config.data.num_heldout` i.i.d. samples of `make_dataset`, drawn from keys
    fold_in(key(config.data.seed), 0) and (.., 1): the same arrays in every run.
    'digits': scikit-learn's 8x8 digits [1797, 8, 8, 1] in [-1, 1] with labels 0..9, shuffled
    with numpy's default_rng(config.data.seed); the first `config.data.digits_num_heldout`
    images are held out.
    """
    d = config.data
    if dataset in TOY_DATASETS:
        root = jax.random.key(int(d.seed))
        train = make_dataset(dataset, jax.random.fold_in(root, 0), int(d.num_train))
        heldout = make_dataset(dataset, jax.random.fold_in(root, 1), int(d.num_heldout))
        return DataTask(train=jnp.asarray(train, jnp.float32),
                        train_labels=jnp.zeros((train.shape[0],), jnp.int32),
                        heldout=jnp.asarray(heldout, jnp.float32),
                        heldout_labels=jnp.zeros((heldout.shape[0],), jnp.int32),
                        name=dataset, num_classes=0)
    if dataset == "digits":
        images, labels = load_digits()
        perm = np.random.default_rng(int(d.seed)).permutation(images.shape[0])
        images, labels = images[perm], labels[perm]
        m = int(d.digits_num_heldout)
        if not 0 < m < images.shape[0]:
            raise ValueError(f"config.data.digits_num_heldout must be in (0, {images.shape[0]})")
        return DataTask(train=jnp.asarray(images[m:]), train_labels=jnp.asarray(labels[m:]),
                        heldout=jnp.asarray(images[:m]), heldout_labels=jnp.asarray(labels[:m]),
                        name=dataset, num_classes=10)
    raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}")


def reference_set(task: DataTask, n: int, seed: int = 12345) -> np.ndarray | None:
    """An exact sample set of size n to measure the quality floor (its distance to the
    held-out set): n fresh draws of a toy's distribution, or the first n training images
    (digits; None if there are fewer)."""
    if task.name in TOY_DATASETS:
        return np.asarray(make_dataset(task.name, jax.random.key(seed), n))
    if n <= task.train.shape[0]:
        return np.asarray(task.train[:n])
    return None


# --------------------------------------------------------------------------------------------
# Metric.
# --------------------------------------------------------------------------------------------

def sliced_wasserstein(x, y, key, num_projections: int = 256, *, p: int = 2) -> Array:
    """Sliced p-Wasserstein distance between the empirical distributions of x and y.

        SW_p(x, y) = ( mean_l W_p^p(<theta_l, x>, <theta_l, y>) )^(1/p),
        theta_l uniform on the unit sphere (normalized Gaussians from `key`),

    each 1-D W_p from matched quantiles: with equal sizes the sorted projections are paired; with
    sizes N != M both quantile functions are read at the levels (i + 1/2) / max(N, M).
    For y = x + c, SW_2 = sqrt(mean_l <theta_l, c>^2) ~ |c| / sqrt(D).

    Args:
      x: [N, *dims], y: [M, *dims] with the same dims (flattened).
      key: PRNG key for the projections; use the same key to compare distances.
      num_projections: number of random directions L.
      p: the order (default 2).
    Returns:
      scalar float32.
    """
    x = jnp.reshape(jnp.asarray(x, jnp.float32), (np.shape(x)[0], -1))
    y = jnp.reshape(jnp.asarray(y, jnp.float32), (np.shape(y)[0], -1))
    chex.assert_equal_shape_suffix([x, y], 1)
    return _sliced_wasserstein(x, y, key, num_projections, p)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sliced_wasserstein(x, y, key, num_projections, p):
    theta = jax.random.normal(key, (num_projections, x.shape[1]), jnp.float32)
    theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    px, py = jnp.sort(x @ theta.T, axis=0), jnp.sort(y @ theta.T, axis=0)
    n, m = px.shape[0], py.shape[0]
    if n != m:
        levels = (np.arange(max(n, m)) + 0.5) / max(n, m)
        px = px[np.minimum((levels * n).astype(np.int64), n - 1)]
        py = py[np.minimum((levels * m).astype(np.int64), m - 1)]
    return jnp.mean(jnp.abs(px - py) ** p) ** (1.0 / p)
