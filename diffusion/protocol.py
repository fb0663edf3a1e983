"""A diffusion model as an algorithm of `launch.registry`'s protocol.

A model (`Model`) is three choices on top of one raw network F(x_in, c_noise[, label])
(`diffusion.networks`):

    coefficients(config)  sigma -> (c_skip, c_out, c_in, c_noise), so that the model IS the
                          denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)
                          (Karras et al. 2022, Eq. 7; `diffusion.precond`);
    loss(raw_fn, x0, key, config) -> [N]  its training loss from `diffusion.losses`;
    sde(config)           the forward SDE that the `reverse_sde` / `pc` samplers integrate;

plus, optionally, its own sampling grid, DDPM schedule and extra samplers. `bind(model)` gives
the protocol functions a model module exports:

    init(key, config, task) -> State                  `diffusion.training`
    update(state, config, task) -> (State, metrics)    one Adam step and the EMA
    evaluate(state, key, config, task) -> {"sliced_wasserstein"}
    sample(state, key, config, task, n) -> [n, *data_shape]   `diffusion.sampling`
    artifacts(state, config, task, workdir) -> files   `diffusion.report`: sampler table, picture

with `make_task = diffusion.data.make_task` (the task: a `DataTask` of training and held-out
arrays) and `base_config()` as the start of every model's default configuration.
`config_rules(model, own)` gives a model module's CONFIG_RULES (the allowed values of the
fields of `base_config` plus the module's `own`) and `CONFIG_CHECKS` the conditions between
fields (`algorithms.core.config_rules`).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import ml_collections

from algorithms.core import config_rules as rules
from diffusion import report, samplers, sampling, schedules, training


class Model(NamedTuple):
    """One algorithm's choices (module docstring)."""

    name: str
    coefficients: Callable  # config -> (sigma -> precond.Coefficients)
    loss: Callable          # (raw_fn, x0, key, config) -> per-sample loss [N]
    sde: Callable           # config -> diffusion.sde SDE for reverse_sde / pc
    sigma_steps: Callable | None = None  # (config, num_steps) -> grid; None: EDM Eq. 5
    alphas_bar: Callable | None = None   # config -> DDIM / DDPM schedule; None: Ho et al.'s
    extra_samplers: tuple = ()  # ((name, fn(key, denoise_fn, shape, num_steps, config)), ...)


def base_config() -> ml_collections.ConfigDict:
    """Fields every model has; the model modules set their papers' values on top.

    For the 8x8 digits pass e.g. `--dataset=digits --config.net.width=256
    --config.net.depth=4 --config.conditional=True`.
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
    c.max_grad_norm = 0.0      # global-norm clipping; 0 = off
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
        name="heun",           # evaluation sampler; see diffusion.sampling.SAMPLERS
        num_steps=18,          # EDM's deterministic sampler at 35 NFE (Karras et al. 2022)
        grid="edm",            # sigma grid: 'edm' (Eq. 5), 'logsnr', 'time_uniform'
        sigma_min=0.002,       # EDM Eq. 5 grid: sigma_min, sigma_max, rho (Table 1, "ours")
        sigma_max=80.0,
        rho=7.0,
        s_churn=40.0,          # edm_stochastic: EDM Table 5 (ImageNet-64) settings
        s_tmin=0.05,
        s_tmax=50.0,
        s_noise=1.003,
        ancestral_variance="beta_tilde",  # ancestral: 'beta_tilde' (posterior) or 'beta'
        ddpm_variance="beta",  # ddpm: Ho et al.'s 'beta' or 'beta_tilde'
        snr=0.16,              # pc: Langevin corrector signal-to-noise ratio (Song et al. 2021)
        n_corrector=1,
        sde_predictor="reverse_diffusion",  # reverse_sde / pc step, or 'euler_maruyama'
        sde_grid="uniform_t",  # reverse_sde / pc times: 'uniform_t' (Song et al.) or a sigma grid
        sde_eps=1e-3,          # reverse_sde / pc end time of 'uniform_t' (Song et al. 2021)
        rk45_tol=1e-4,         # rk45: rtol = atol
    ))
    c.eval = ml_collections.ConfigDict(dict(
        guidance=0.0,          # CFG weight w for conditional models (0: the conditional model)
        num_projections=256,   # sliced Wasserstein directions
        projection_seed=0,     # fixed directions: evaluations compare like with like
    ))
    return c


def _non_negative_or_inf(x):
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 and not math.isnan(x)
    return None if ok else "a number >= 0 (inf allowed)"


_VARIANCES = rules.one_of("beta_tilde", "beta")

# The fields of `base_config` that the shared vocabulary does not cover (or covers too
# loosely), by dotted path.
BASE_RULES = {
    "lr_warmup": rules.non_negative_count,
    "adam_b1": rules.in_range(0.0, 1.0, high_open=True),
    "adam_b2": rules.in_range(0.0, 1.0, high_open=True),
    "adam_eps": rules.positive,
    "ema_decay": rules.probability,
    "net.kind": rules.one_of("mlp", "conv"),
    "net.width": rules.count,
    "net.depth": rules.count,
    "net.embedding": rules.one_of("positional", "fourier"),
    "net.fourier_scale": rules.positive,
    "label_dropout": rules.probability,
    "data.digits_num_heldout": rules.count,
    "sampler.grid": rules.one_of(*schedules.SIGMA_GRIDS),
    "sampler.sigma_min": rules.positive,
    "sampler.sigma_max": rules.positive,
    "sampler.rho": rules.positive,
    "sampler.s_churn": rules.non_negative,
    "sampler.s_tmin": rules.non_negative,
    "sampler.s_tmax": _non_negative_or_inf,
    "sampler.s_noise": rules.positive,
    "sampler.ancestral_variance": _VARIANCES,
    "sampler.ddpm_variance": _VARIANCES,
    "sampler.snr": rules.positive,
    "sampler.n_corrector": rules.non_negative_count,
    "sampler.sde_predictor": rules.one_of(*samplers.PREDICTORS),
    "sampler.sde_grid": rules.one_of(*sampling.SDE_GRIDS),
    "sampler.sde_eps": rules.in_range(0.0, 1.0, low_open=True, high_open=True),
    "sampler.rk45_tol": rules.positive,
    "eval.guidance": rules.finite(),
    "eval.projection_seed": rules.non_negative_count,
}


def config_rules(model: Model, own: dict | None = None) -> dict:
    """A model module's CONFIG_RULES: `BASE_RULES`, sampler.name one of the model's samplers,
    and the module's own fields."""
    return {**BASE_RULES, "sampler.name": rules.one_of(*sampling.sampler_names(model)),
            **(own or {})}


def _sigma_range(config):
    sc = config.sampler
    if not sc.sigma_min < sc.sigma_max:
        return (f"config.sampler.sigma_min={sc.sigma_min!r} must be below "
                f"config.sampler.sigma_max={sc.sigma_max!r}")
    return None


def _churn_range(config):
    sc = config.sampler
    if not sc.s_tmin <= sc.s_tmax:
        return (f"config.sampler.s_tmin={sc.s_tmin!r} must not exceed "
                f"config.sampler.s_tmax={sc.s_tmax!r}")
    return None


CONFIG_CHECKS = (_sigma_range, _churn_range)


def ordered(low: str, high: str) -> Callable:
    """A CONFIG_CHECKS condition: config[low] < config[high] (top-level fields)."""
    def check(config):
        if not config[low] < config[high]:
            return (f"config.{low}={config[low]!r} must be below "
                    f"config.{high}={config[high]!r}")
        return None
    return check


def bind(model: Model):
    """The protocol functions of one model: (init, update, evaluate, sample, artifacts)."""

    def init(key, config, task):
        """One seed's State: parameters (EMA = copy), Adam state, key, counters."""
        return training.init(model, key, config, task)

    def update(state, config, task):
        """One Adam step on a minibatch of task.train, then the EMA of the weights."""
        return training.update(model, state, config, task)

    def evaluate(state, key, config, task):
        """{"sliced_wasserstein"}: samples of the configured sampler vs task.heldout."""
        return training.evaluate(model, state, key, config, task)

    def sample(state, key, config, task, n, **options):
        """n samples [n, *data_shape] from one seed's EMA parameters; `options` as
        `diffusion.sampling.draw_samples` (sampler, num_steps, labels, guidance, ema)."""
        return sampling.draw_samples(model, state, key, config, n, **options)[0]

    def artifacts(state, config, task, workdir, **options):
        """Every sampler at NFE 10 / 35 / 100 from seed 0 of the seed-batched state into
        workdir's sampler_table.json and samples.png; `options` as
        `diffusion.report.sampler_report`. Returns the file names written."""
        return report.sampler_report(model, state, config, task, workdir, **options)

    return init, update, evaluate, sample, artifacts
