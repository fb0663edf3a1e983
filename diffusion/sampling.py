"""Sampling a trained diffusion model: its denoiser, and every sampler by name.

A model (`diffusion.protocol.Model`) presents one denoiser D(x; sigma) (`denoiser`), so every
sampler of `diffusion.samplers` samples every model. `SAMPLERS` maps a sampler's name to the
public sampler function and the grid it runs on, built from `config.sampler`:

    "sigmas"     the model's noise-level grid (`sigma_steps`: config.sampler.grid of
                 `schedules.SIGMA_GRIDS` on [sigma_min, sigma_max], EDM Eq. 5 with rho by
                 default, unless the model has its own, e.g. DDPM's trained levels)
    "ddpm"       the model's discrete schedule alpha_bar (Ho et al.'s T = 1000 linear betas
                 unless the model has its own) at `schedules.ddpm_timesteps`, through
                 `samplers.eps_from_denoiser`
    "sde"        the model's forward SDE on the times `sde_times` (config.sampler.sde_grid:
                 Song et al.'s uniform times from T to config.sampler.sde_eps, or the times of
                 a sigma grid), through `sde.score_from_denoiser`
    "endpoints"  sigma_max and sigma_min only (the adaptive RK45 picks its own steps)

A model may add samplers of its own (`Model.extra_samplers`, e.g. flow matching's `euler_t`).
`draw_samples` runs one by name on one seed's State and returns (x [n, *data_shape], info).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import jax
import jax.numpy as jnp

from diffusion import inverse
from diffusion import networks
from diffusion import samplers as S
from diffusion import schedules

if TYPE_CHECKING:
    from diffusion.protocol import Model
    from diffusion.training import State

Array = jax.Array

# DDPM / DDIM samplers of models without a discrete schedule use Ho et al.'s (T = 1000).
DDPM_TRAIN_STEPS = 1000


class Sampler(NamedTuple):
    """One entry of `SAMPLERS`: the sampler, its grid kind (module docstring), its options
    from config.sampler, and the number of steps that fits an NFE budget."""

    fn: Callable
    grid: str
    options: Callable = lambda sc: {}             # config.sampler -> keyword arguments
    steps_for_nfe: Callable = lambda nfe, sc: max(1, nfe)


def _two_per_step(nfe, sc):
    return max(1, (nfe + 1) // 2)        # Heun / EDM Alg. 2: 2N - 1 evaluations


def _tolerances(sc):
    return dict(rtol=float(sc.rk45_tol), atol=float(sc.rk45_tol))


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler(S.sample_euler, "sigmas"),
    "heun": Sampler(S.sample_heun, "sigmas", steps_for_nfe=_two_per_step),
    "edm_stochastic": Sampler(
        S.sample_edm_stochastic, "sigmas",
        lambda sc: dict(s_churn=float(sc.s_churn), s_tmin=float(sc.s_tmin),
                        s_tmax=float(sc.s_tmax), s_noise=float(sc.s_noise)),
        _two_per_step),
    "dpmpp_2m": Sampler(S.sample_dpmpp_2m, "sigmas"),
    "ancestral": Sampler(S.sample_ancestral, "sigmas",
                         lambda sc: dict(variance=sc.ancestral_variance)),
    "ddim": Sampler(S.sample_ddim, "ddpm", lambda sc: dict(eta=0.0),
                    lambda nfe, sc: max(1, min(nfe, DDPM_TRAIN_STEPS))),
    "ddpm": Sampler(S.sample_ddpm, "ddpm", lambda sc: dict(variance=sc.ddpm_variance),
                    lambda nfe, sc: max(1, min(nfe, DDPM_TRAIN_STEPS))),
    "reverse_sde": Sampler(S.sample_reverse_sde, "sde",
                           lambda sc: dict(predictor=sc.sde_predictor)),
    "pc": Sampler(S.sample_pc, "sde",
                  lambda sc: dict(snr=float(sc.snr), n_corrector=int(sc.n_corrector),
                                  predictor=sc.sde_predictor),
                  lambda nfe, sc: max(1, nfe // (1 + int(sc.n_corrector)))),
    "rk45": Sampler(S.sample_rk45, "endpoints", _tolerances),
}


def sigma_steps(model: Model, config, num_steps: int):
    """The model's noise-level grid [num_steps + 1] (host float64), ending at 0: its own
    (DDPM's trained levels), else config.sampler.grid on [sigma_min, sigma_max]."""
    if model.sigma_steps is not None:
        return model.sigma_steps(config, num_steps)
    sc = config.sampler
    return schedules.sigma_grid(sc.grid, num_steps, float(sc.sigma_min), float(sc.sigma_max),
                                float(sc.rho))


SDE_GRIDS = ("uniform_t",) + schedules.SIGMA_GRIDS


def sde_times(model: Model, config, num_steps: int):
    """The SDE time grid [num_steps + 1] (host float64) of the reverse-SDE and PC samplers:
    config.sampler.sde_grid "uniform_t" (Song et al. 2021: uniform from T to sde_eps) or a
    sigma grid of `schedules.SIGMA_GRIDS` on [sigma_min, sigma_max] mapped to the model's SDE
    times (`schedules.sde_times_from_sigmas`; it ends at t = 0, a posterior-mean step)."""
    sde = model.sde(config)
    sc = config.sampler
    if sc.sde_grid == "uniform_t":
        return schedules.sde_time_steps(num_steps, sde.T, float(sc.sde_eps))
    grid = schedules.sigma_grid(sc.sde_grid, num_steps, float(sc.sigma_min),
                                float(sc.sigma_max), float(sc.rho))
    return schedules.sde_times_from_sigmas(sde, grid)


def alphas_bar(model: Model, config):
    """The model's DDPM schedule alpha_bar [T] (host float64)."""
    if model.alphas_bar is not None:
        return model.alphas_bar(config)
    return schedules.ddpm_schedule(DDPM_TRAIN_STEPS).alphas_bar


def _run_on_sigmas(spec, model, config, key, denoise_fn, shape, num_steps):
    return spec.fn(key, denoise_fn, shape, sigma_steps(model, config, num_steps),
                   **spec.options(config.sampler))


def _run_on_ddpm_levels(spec, model, config, key, denoise_fn, shape, num_steps):
    ab = alphas_bar(model, config)
    ts = schedules.ddpm_timesteps(len(ab), min(int(num_steps), len(ab)))
    return spec.fn(key, S.eps_from_denoiser(denoise_fn, ab), shape, ab, ts,
                   **spec.options(config.sampler))


def _run_on_sde_times(spec, model, config, key, denoise_fn, shape, num_steps):
    sde = model.sde(config)
    return spec.fn(key, sde.score_from_denoiser(denoise_fn), shape, sde,
                   sde_times(model, config, num_steps), **spec.options(config.sampler))


def _run_between_endpoints(spec, model, config, key, denoise_fn, shape, num_steps):
    sc = config.sampler
    return spec.fn(key, denoise_fn, shape, sigma_min=float(sc.sigma_min),
                   sigma_max=float(sc.sigma_max), **spec.options(sc))


_RUN_ON_GRID = {"sigmas": _run_on_sigmas, "ddpm": _run_on_ddpm_levels,
                "sde": _run_on_sde_times, "endpoints": _run_between_endpoints}


def sampler_names(model: Model) -> tuple[str, ...]:
    """Every sampler the model offers: `SAMPLERS`, then its own."""
    return tuple(SAMPLERS) + tuple(name for name, _ in model.extra_samplers)


def steps_for_nfe(sampler: str, nfe: int, config) -> int:
    """The num_steps giving at most `nfe` denoiser evaluations (Heun and the EDM stochastic
    sampler: 2N - 1; PC: N (1 + M); DDIM / DDPM: at most T; the others: N)."""
    spec = SAMPLERS.get(sampler)
    return spec.steps_for_nfe(nfe, config.sampler) if spec else max(1, nfe)


def run_sampler(model: Model, config, name: str, key, denoise_fn: Callable, shape,
                num_steps: int):
    """Runs sampler `name` (one of `sampler_names(model)`) on the denoiser with
    `config.sampler`'s settings. Returns (x [shape], info) with info["nfe"]."""
    own = dict(model.extra_samplers)
    if name in own:
        return own[name](key, denoise_fn, shape, num_steps, config)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r} for {model.name}; valid choices: "
                         f"{', '.join(sampler_names(model))}")
    spec = SAMPLERS[name]
    return _RUN_ON_GRID[spec.grid](spec, model, config, key, denoise_fn, shape, num_steps)


def denoiser(model: Model, state: State, config, *, labels: Array | None = None,
             guidance=0.0, ema: bool = True) -> Callable:
    """D(x, sigma) of one seed's state (EMA parameters unless ema=False).

    Conditional models: `labels` [N] (None: the null class, i.e. the unconditional model) and
    the classifier-free guidance weight `guidance` (Ho & Salimans 2022;
    `inverse.cfg_denoiser`; a Python 0 skips the unconditional pass).
    """
    params = state.ema_params if ema else state.params
    net = networks.make_network(config, state.num_classes)
    coeff = model.coefficients(config)
    cond = networks.denoiser_from_raw(networks.network_fn(net, params, labels), coeff)
    if not state.num_classes or labels is None or (isinstance(guidance, (int, float))
                                                   and guidance == 0):
        return cond
    null = jnp.full(jnp.shape(labels), state.num_classes, jnp.int32)
    uncond = networks.denoiser_from_raw(networks.network_fn(net, params, null), coeff)
    return inverse.cfg_denoiser(cond, uncond, guidance)


def draw_samples(model: Model, state: State, key, config, n: int, *,
                 sampler: str | None = None, num_steps: int | None = None,
                 labels: Array | None = None, guidance=0.0, ema: bool = True):
    """n samples [n, *data_shape] from ONE seed's state: (x, info) with info["nfe"].

    sampler / num_steps default to config.sampler.name / .num_steps. Pure; jit it with the
    sampler name and step count static (e.g. `jax.jit(lambda s, k: draw_samples(...))`).
    Conditional models: `labels` [n] (None: unconditional), CFG weight `guidance`.
    """
    name = sampler or config.sampler.name
    steps = int(num_steps or config.sampler.num_steps)
    d = denoiser(model, state, config, labels=labels, guidance=guidance, ema=ema)
    return run_sampler(model, config, name, key, d, (int(n),) + tuple(state.data_shape), steps)


def seed_state(state: State, i: int) -> State:
    """Seed i's State sliced out of a seed-batched (runner) state."""
    return jax.tree.map(lambda x: x[i], state)
