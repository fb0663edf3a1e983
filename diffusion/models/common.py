"""What every diffusion / flow model shares: raw networks, state, the protocol functions, sampling.

A model (`Model`) is three choices on top of one raw network F(x_in, c_noise[, label]):

    coefficients(config)  sigma -> (c_skip, c_out, c_in, c_noise), so that the model IS the
                          denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)
                          (EDM Eq. 7; `diffusion.precond.make_denoiser`);
    loss(raw_fn, x0, key, config) -> [N]  its training loss from `diffusion.losses`;
    sde(config)           the forward SDE whose reverse-time SDE the `reverse_sde` / `pc`
                          samplers integrate (the score comes from D, `sde.score_from_denoiser`).

Because every model presents the same D(x; sigma), every sampler of `diffusion.samplers`
(Euler, Heun, EDM stochastic, DPM-Solver++(2M), ancestral, DDIM, DDPM, reverse SDE, PC, RK45)
samples every model; see `SAMPLERS` and `run_sampler`.

Training (the algorithm protocol of DESIGN.md; the runner vmaps seeds and scans updates):

    init(model, key, config, task)    -> State (params, EMA params, Adam state, key, step)
    update(model, state, config, task) -> (State, metrics): one Adam step on a minibatch drawn
                                          with replacement from task.train, then the EMA update
    evaluate(model, state, key, config, task) -> {"sliced_wasserstein"}: samples from the EMA
                                          parameters with the configured sampler (default Heun,
                                          18 steps = 35 NFE) against the held-out set
    make_task(dataset, config)        -> DataTask (fixed-seed toy data, or the 8x8 digits)
    sample(model, state, config, key, n, *, sampler, num_steps, labels, guidance)

The task (the data arrays) is an argument closed over by the runner, shared by all seeds; a
seed's State holds only parameters, optimizer state, its key and counters.

Conditional models (`config.conditional`, labeled data: digits) embed the class label and
drop it to a null class with probability `label_dropout` during training, so the same network
is the conditional and the unconditional denoiser; classifier-free guidance (Ho & Salimans
2022) combines them: D_w = (1 + w) D(x; sigma, c) - w D(x; sigma, null)
(`diffusion.inverse.cfg_denoiser`); w = 0 is the plain conditional model.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from diffusion import data as data_lib
from diffusion import inverse
from diffusion import precond as precond_lib
from diffusion import samplers as samplers_lib

Array = jax.Array

DATASETS = tuple(data_lib.TOY_DATASETS) + ("digits",)

# Samplers every model offers (a model may add its own, `Model.extra_samplers`).
SAMPLERS = ("euler", "heun", "edm_stochastic", "dpmpp_2m", "ancestral", "ddim", "ddpm",
            "reverse_sde", "pc", "rk45")
# DDPM / DDIM samplers run on Ho et al.'s discrete schedule (T = 1000, linear betas).
DDPM_TRAIN_STEPS = 1000


# ============================================================================================
# Networks.
# ============================================================================================

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


# ============================================================================================
# Models, data and configuration.
# ============================================================================================

class Model(NamedTuple):
    """One algorithm's choices (see the module docstring)."""

    name: str
    coefficients: Callable  # config -> (sigma -> precond.Coefficients)
    loss: Callable          # (raw_fn, x0, key, config) -> per-sample loss [N]
    sde: Callable           # config -> diffusion.sde SDE for reverse_sde / pc
    sigma_grid: Callable | None = None  # (config, num_steps) -> host grid; None: EDM Eq. 5
    extra_samplers: tuple = ()
    custom_samplers: Callable | None = None  # (name, key, D, shape, num_steps, config) -> out
    alphas_bar: Callable | None = None  # config -> DDIM / DDPM schedule; None: Ho et al.'s

    @property
    def samplers(self) -> tuple[str, ...]:
        return SAMPLERS + tuple(self.extra_samplers)


@struct.dataclass
class DataTask:
    """A dataset as the runner's task: arrays shared by all seeds (closed over, never copied
    into a State). Labels are int32 class indices (zeros for unlabeled toys)."""

    train: Array           # [N, *dims] float32
    train_labels: Array    # [N] int32
    heldout: Array         # [M, *dims] float32: the evaluation reference
    heldout_labels: Array  # [M] int32
    name: str = struct.field(pytree_node=False, default="")
    num_classes: int = struct.field(pytree_node=False, default=0)  # 0: unlabeled


def make_task(dataset: str, config) -> DataTask:
    """The training and held-out sets of `dataset` (`DATASETS`).

    Toys ('8gaussians', 'moons', 'swissroll'): `config.data.num_train` and
    `config.data.num_heldout` i.i.d. samples of `diffusion.data.make_dataset`, drawn from keys
    fold_in(key(config.data.seed), 0) and (.., 1): the same arrays in every run.
    'digits': scikit-learn's 8x8 digits [1797, 8, 8, 1] in [-1, 1] with labels 0..9, shuffled
    with numpy's default_rng(config.data.seed); the first `config.data.digits_num_heldout`
    images are held out.
    """
    d = config.data
    if dataset in data_lib.TOY_DATASETS:
        root = jax.random.key(int(d.seed))
        train = data_lib.make_dataset(dataset, jax.random.fold_in(root, 0), int(d.num_train))
        heldout = data_lib.make_dataset(dataset, jax.random.fold_in(root, 1), int(d.num_heldout))
        return DataTask(train=jnp.asarray(train, jnp.float32),
                        train_labels=jnp.zeros((train.shape[0],), jnp.int32),
                        heldout=jnp.asarray(heldout, jnp.float32),
                        heldout_labels=jnp.zeros((heldout.shape[0],), jnp.int32),
                        name=dataset, num_classes=0)
    if dataset == "digits":
        images, labels = data_lib.load_digits()
        perm = np.random.default_rng(int(d.seed)).permutation(images.shape[0])
        images, labels = images[perm], labels[perm]
        m = int(d.digits_num_heldout)
        if not 0 < m < images.shape[0]:
            raise ValueError(f"config.data.digits_num_heldout must be in (0, {images.shape[0]})")
        return DataTask(train=jnp.asarray(images[m:]), train_labels=jnp.asarray(labels[m:]),
                        heldout=jnp.asarray(images[:m]), heldout_labels=jnp.asarray(labels[:m]),
                        name=dataset, num_classes=10)
    raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}")


def base_config() -> ml_collections.ConfigDict:
    """Fields every model has; the model modules set their papers' values on top.

    Budget: 5k updates of batch 256 with a 3 x 128 MLP train a 2-D toy in a few minutes on a
    loaded 2-core CPU (4 seeds vmapped). For the 8x8 digits pass e.g. `--dataset=digits
    --config.net.width=256 --config.net.depth=4 --config.conditional=True` (see the README).
    """
    c = ml_collections.ConfigDict()
    c.num_updates = 5_000      # Adam steps
    c.log_every = 250          # updates per jitted chunk / log row
    c.eval_every = 1_000       # updates between evaluations (sampling + sliced Wasserstein)
    c.batch_size = 256         # (EDM's CIFAR-10 runs use 512; Karras et al. 2022, Table 7)
    c.lr = 1e-3                # Adam learning rate; traced (SWEEPABLE), --sweep='lr=...'
    c.lr_warmup = 0            # linear warm-up updates (EDM ramps up over 10M images)
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    c.grad_clip = 0.0          # global-norm clipping; 0 = off
    c.ema_decay = 0.999        # EMA of the weights, warmed up as min(decay, (1+k)/(10+k))
    c.net = ml_collections.ConfigDict(dict(
        kind="mlp",            # 'mlp' (any data) or 'conv' (images [N, H, W, C])
        width=128,             # hidden units (mlp) / channels (conv)
        depth=3,               # hidden layers (mlp) / residual blocks (conv)
        embedding="positional",  # noise embedding: 'positional' or 'fourier'
        fourier_scale=16.0,    # std of the Fourier frequencies (Song et al. 2021's NCSN++)
    ))
    c.conditional = False      # class-conditional (labeled data only) with label dropout
    c.label_dropout = 0.1      # P(label -> null class) in training (Ho & Salimans 2022: 0.1)
    c.data = ml_collections.ConfigDict(dict(
        num_train=20_000,      # toy training-set size
        num_heldout=2_000,     # toy held-out set size (= samples drawn per evaluation)
        digits_num_heldout=297,  # digits: held-out images (1500 train)
        seed=0,                # data seed (fixed: every run sees the same arrays)
    ))
    c.sampler = ml_collections.ConfigDict(dict(
        name="heun",           # evaluation sampler; see common.SAMPLERS
        num_steps=18,          # EDM's deterministic sampler at 35 NFE (Karras et al. 2022)
        sigma_min=0.002,       # EDM Eq. 5 grid: sigma_min, sigma_max, rho (Table 1, "ours")
        sigma_max=80.0,
        rho=7.0,
        s_churn=40.0,          # edm_stochastic: EDM Table 5 (ImageNet-64) settings
        s_tmin=0.05,
        s_tmax=50.0,
        s_noise=1.003,
        snr=0.16,              # pc: Langevin corrector signal-to-noise ratio (Song et al. 2021)
        n_corrector=1,
        sde_eps=1e-3,          # reverse_sde / pc end time (Song et al. 2021)
        rk45_tol=1e-4,         # rk45: rtol = atol
    ))
    c.eval = ml_collections.ConfigDict(dict(
        guidance=0.0,          # CFG weight w for conditional models (0: the conditional model)
        num_projections=256,   # sliced Wasserstein directions
        projection_seed=0,     # fixed directions: evaluations compare like with like
    ))
    return c


# ============================================================================================
# State and the protocol functions.
# ============================================================================================

@struct.dataclass
class State:
    params: Any
    ema_params: Any
    opt_state: Any
    key: jax.Array      # the seed's key; step k uses fold_in(key, k)
    step: jax.Array     # int32, updates done
    hparams: dict       # SWEEPABLE values ("lr") as float32 scalars
    data_shape: tuple = struct.field(pytree_node=False, default=())
    num_classes: int = struct.field(pytree_node=False, default=0)  # 0: unconditional


def _optimizer(config):
    def make(learning_rate):
        adam = optax.adam(learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
        if config.grad_clip > 0:
            return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam)
        return adam
    return optax.inject_hyperparams(make)(learning_rate=config.lr)


def init(model: Model, key, config, task: DataTask) -> State:
    """Parameters (EMA = copy), Adam state, key and counters of one seed."""
    if config.conditional and not task.num_classes:
        raise ValueError(f"config.conditional needs labeled data; {task.name!r} has no labels "
                         "(use --dataset=digits)")
    num_classes = int(task.num_classes) if config.conditional else 0
    data_shape = tuple(int(s) for s in task.train.shape[1:])
    net = make_network(config, num_classes)
    k_param, k_state = jax.random.split(key)
    labels = jnp.zeros((1,), jnp.int32) if num_classes else None
    params = net.init(k_param, jnp.zeros((1,) + data_shape, jnp.float32),
                      jnp.zeros((1,), jnp.float32), labels)
    return State(params=params, ema_params=params, opt_state=_optimizer(config).init(params),
                 key=k_state, step=jnp.int32(0), hparams={"lr": jnp.float32(config.lr)},
                 data_shape=data_shape, num_classes=num_classes)


def update(model: Model, state: State, config, task: DataTask):
    """One Adam step on a minibatch of `config.batch_size` drawn with replacement from
    task.train (labels dropped to the null class with prob. `label_dropout`), then the EMA.

    Metrics: "loss" (the model's loss per data dimension, minibatch mean), "grad_norm", "lr".
    """
    key = jax.random.fold_in(state.key, state.step)
    k_idx, k_drop, k_loss = jax.random.split(key, 3)
    batch = int(config.batch_size)
    idx = jax.random.randint(k_idx, (batch,), 0, task.train.shape[0])
    x0 = task.train[idx]
    labels = None
    if state.num_classes:
        labels = task.train_labels[idx]
        drop = jax.random.bernoulli(k_drop, config.label_dropout, labels.shape)
        labels = jnp.where(drop, state.num_classes, labels)
    net = make_network(config, state.num_classes)
    dim = math.prod(state.data_shape)

    def loss_fn(params):
        per_sample = model.loss(network_fn(net, params, labels), x0, k_loss, config)
        chex.assert_shape(per_sample, (batch,))
        return jnp.mean(per_sample) / dim

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    lr = state.hparams["lr"]
    if config.lr_warmup > 0:
        lr = lr * jnp.minimum(1.0, (state.step + 1).astype(jnp.float32) / config.lr_warmup)
    opt_state = state.opt_state._replace(
        hyperparams={**state.opt_state.hyperparams, "learning_rate": lr})
    updates, opt_state = _optimizer(config).update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    decay = jnp.minimum(config.ema_decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    new_state = state.replace(params=params, ema_params=ema, opt_state=opt_state, step=step)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": lr}


def evaluate(model: Model, state: State, key, config, task: DataTask) -> dict[str, Array]:
    """Sliced Wasserstein-2 between len(task.heldout) samples (EMA parameters, the configured
    sampler) and the held-out set, with fixed projections (`config.eval.projection_seed`).
    Conditional models sample with the held-out labels and guidance `config.eval.guidance`."""
    n = task.heldout.shape[0]
    labels = task.heldout_labels if state.num_classes else None
    x, _ = sample(model, state, config, key, n, labels=labels, guidance=config.eval.guidance)
    sw = data_lib.sliced_wasserstein(x, task.heldout,
                                     jax.random.key(int(config.eval.projection_seed)),
                                     int(config.eval.num_projections))
    return {"sliced_wasserstein": sw}


# ============================================================================================
# Sampling.
# ============================================================================================

def denoiser(model: Model, state: State, config, *, labels: Array | None = None, guidance=0.0,
             ema: bool = True) -> Callable:
    """D(x, sigma) of one seed's state (EMA parameters unless ema=False).

    Conditional models: `labels` [N] (None: the null class, i.e. the unconditional model) and
    classifier-free guidance weight `guidance` (a Python 0 skips the unconditional pass).
    """
    params = state.ema_params if ema else state.params
    net = make_network(config, state.num_classes)
    coeff = model.coefficients(config)
    cond = denoiser_from_raw(network_fn(net, params, labels), coeff)
    if not state.num_classes or labels is None or (isinstance(guidance, (int, float))
                                                   and guidance == 0):
        return cond
    null = jnp.full(jnp.shape(labels), state.num_classes, jnp.int32)
    uncond = denoiser_from_raw(network_fn(net, params, null), coeff)
    return inverse.cfg_denoiser(cond, uncond, guidance)


def steps_for_nfe(sampler: str, nfe: int, config=None) -> int:
    """The num_steps giving at most `nfe` denoiser evaluations (Heun and the EDM stochastic
    sampler: 2N - 1; PC: N (1 + M); the others: N)."""
    if sampler in ("heun", "edm_stochastic"):
        return max(1, (nfe + 1) // 2)
    if sampler == "pc":
        m = 1 if config is None else int(config.sampler.n_corrector)
        return max(1, nfe // (1 + m))
    if sampler in ("ddim", "ddpm"):
        return max(1, min(nfe, DDPM_TRAIN_STEPS))
    return max(1, nfe)


def run_sampler(model: Model, config, name: str, key, denoise_fn: Callable, shape,
                num_steps: int):
    """Runs sampler `name` (one of `model.samplers`) on D with `config.sampler`'s settings.

    Sigma-space samplers use the model's grid (`model.sigma_grid`, e.g. DDPM's discrete
    levels) or EDM Eq. 5 on [sigma_min, sigma_max] with rho; DDIM / DDPM use the model's
    discrete schedule (default Ho et al.'s T = 1000) through `samplers.eps_from_denoiser`;
    reverse_sde / pc integrate `model.sde(config)`. Returns (x [shape], info) with info["nfe"].
    """
    sc = config.sampler
    s = samplers_lib
    grid = model.sigma_grid(config, num_steps) if model.sigma_grid is not None else None
    edm_kw = dict(num_steps=num_steps, sigma_min=float(sc.sigma_min),
                  sigma_max=float(sc.sigma_max), rho=float(sc.rho), sigmas=grid)
    if name == "euler":
        return s.sample_euler(key, denoise_fn, shape, **edm_kw)
    if name == "heun":
        return s.sample_heun(key, denoise_fn, shape, **edm_kw)
    if name == "edm_stochastic":
        return s.sample_edm_stochastic(key, denoise_fn, shape, s_churn=float(sc.s_churn),
                                       s_tmin=float(sc.s_tmin), s_tmax=float(sc.s_tmax),
                                       s_noise=float(sc.s_noise), **edm_kw)
    if name == "dpmpp_2m":
        return s.sample_dpmpp_2m(key, denoise_fn, shape, **edm_kw)
    if name == "ancestral":
        return s.sample_ancestral(key, denoise_fn, shape, **edm_kw)
    if name == "rk45":
        tol = float(sc.rk45_tol)
        return s.sample_rk45(key, denoise_fn, shape, sigma_min=float(sc.sigma_min),
                             sigma_max=float(sc.sigma_max), rtol=tol, atol=tol)
    if name in ("ddim", "ddpm"):
        ab = (model.alphas_bar(config) if model.alphas_bar is not None
              else s.ddpm_alphas_bar(DDPM_TRAIN_STEPS))
        eps_fn = s.eps_from_denoiser(denoise_fn, ab)
        steps = min(int(num_steps), len(ab))
        if name == "ddim":
            return s.sample_ddim(key, eps_fn, shape, alphas_bar=ab, num_steps=steps, eta=0.0)
        return s.sample_ddpm(key, eps_fn, shape, alphas_bar=ab, num_steps=steps)
    if name in ("reverse_sde", "pc"):
        sde = model.sde(config)
        score_fn = sde.score_from_denoiser(denoise_fn)
        if name == "reverse_sde":
            return s.sample_reverse_sde(key, score_fn, shape, sde=sde, num_steps=num_steps,
                                        eps=float(sc.sde_eps))
        return s.sample_pc(key, score_fn, shape, sde=sde, num_steps=num_steps,
                           snr=float(sc.snr), n_corrector=int(sc.n_corrector),
                           eps=float(sc.sde_eps))
    if name in model.extra_samplers and model.custom_samplers is not None:
        return model.custom_samplers(name, key, denoise_fn, shape, num_steps, config)
    raise ValueError(f"unknown sampler {name!r} for {model.name}; valid choices: "
                     f"{', '.join(model.samplers)}")


def sample(model: Model, state: State, config, key, n: int, *, sampler: str | None = None,
           num_steps: int | None = None, labels: Array | None = None, guidance=0.0,
           ema: bool = True):
    """n samples [n, *data_shape] from ONE seed's state: (x, info) with info["nfe"].

    sampler / num_steps default to config.sampler.name / .num_steps. Pure; jit it with the
    sampler name and step count static (e.g. `jax.jit(lambda s, k: sample(...))`).
    Conditional models: `labels` [n] (None: unconditional), CFG weight `guidance`.
    """
    name = sampler or config.sampler.name
    steps = int(num_steps or config.sampler.num_steps)
    d = denoiser(model, state, config, labels=labels, guidance=guidance, ema=ema)
    return run_sampler(model, config, name, key, d, (int(n),) + tuple(state.data_shape), steps)


def seed_state(state: State, i: int) -> State:
    """Seed i's State sliced out of a vmapped (runner) state."""
    return jax.tree.map(lambda x: x[i], state)


def reference_set(task: DataTask, n: int, seed: int = 12345) -> np.ndarray | None:
    """An exact sample set of size n to measure the quality floor (its distance to the
    held-out set): n fresh draws of a toy's distribution, or the first n training images
    (digits; None if there are fewer)."""
    if task.name in data_lib.TOY_DATASETS:
        return np.asarray(data_lib.make_dataset(task.name, jax.random.key(seed), n))
    if n <= task.train.shape[0]:
        return np.asarray(task.train[:n])
    return None


def protocol(model: "Model"):
    """The algorithm-protocol functions of one model, as the model modules export them:
    (init, update, evaluate, make_task, sample) with `model` bound."""

    def init_fn(key, config, task):
        return init(model, key, config, task)

    def update_fn(state, config, task):
        return update(model, state, config, task)

    def evaluate_fn(state, key, config, task):
        return evaluate(model, state, key, config, task)

    def sample_fn(state, config, key, n, **kwargs):
        """n samples from one seed's state; see `common.sample`."""
        return sample(model, state, config, key, n, **kwargs)

    return init_fn, update_fn, evaluate_fn, make_task, sample_fn
