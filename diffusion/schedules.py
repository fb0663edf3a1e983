"""Discretisation schedules: the grids the samplers of `diffusion.samplers` step along.

Every schedule is a pure host function returning float64 numpy arrays (samplers turn them into
per-step constants of the sample dtype; see `diffusion.samplers`). Noise-level grids
("sigma steps") are descending, length num_steps + 1, and end at sigma = 0, the clean data.

    edm_sigma_steps    EDM's rho-schedule, Karras et al. 2022 Eq. 5 (Table 1 "ours")
    logsnr_sigma_steps uniform in log-SNR, i.e. log-uniform in sigma (Lu et al. 2022's
                       DPM-Solver "logSNR" steps)
    time_uniform_sigma_steps  uniform in the time of the linear-beta VP SDE (DPM-Solver's
                       "time_uniform" steps) between two noise levels
    sigma_grid         one of the three above by name (`SIGMA_GRIDS`)
    vp_sigma_steps     EDM Table 1, VP column: sigma(t_i), t_i uniform from 1 to eps_s
    ve_sigma_steps     EDM Table 1, VE column: geometric in sigma from sigma_max to sigma_min
    flow_sigma_steps   uniform steps in the flow-matching time t, as sigma = t / (1 - t)
    ddpm_schedule      Ho et al. 2020's linear betas and alpha_bar (Sec. 4)
    ddpm_timesteps     a strided descending sub-sequence of DDPM's T indices (DDIM's "tau")
    ddpm_sigma_steps   the noise levels sigma_t = sqrt((1 - ab_t) / ab_t) at those indices
    sde_time_steps     uniform SDE times from T down to eps (Song et al. 2021's samplers)
    sde_times_from_sigmas  the SDE times of a noise-level grid (a sigma grid for the reverse-SDE
                       and predictor-corrector samplers; level 0 becomes time 0)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from diffusion import sde as sde_lib

__all__ = ["edm_sigma_steps", "logsnr_sigma_steps", "time_uniform_sigma_steps", "SIGMA_GRIDS",
           "sigma_grid", "vp_sigma_steps", "ve_sigma_steps", "flow_sigma_steps",
           "DDPMSchedule", "ddpm_schedule", "ddpm_timesteps", "ddpm_sigma_steps",
           "sde_time_steps", "sde_times_from_sigmas"]


def _check_num_steps(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


def _descending_to_zero(levels: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(levels, np.float64), [0.0]])


def _uniform_fraction(num_steps: int) -> np.ndarray:
    """i / (N - 1) for i = 0 .. N - 1 (just [0] for N = 1), float64."""
    if num_steps == 1:
        return np.zeros(1)
    return np.arange(num_steps, dtype=np.float64) / (num_steps - 1)


def edm_sigma_steps(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> np.ndarray:
    """EDM time steps (Karras et al. 2022, Eq. 5) with sigma_N = 0 appended:

        sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
        i = 0 .. N - 1.

    Returns float64 [num_steps + 1], from sigma_max down to sigma_min, then 0;
    num_steps = 1 gives [sigma_max, 0].
    """
    _check_num_steps(num_steps)
    i = np.arange(num_steps, dtype=np.float64)
    if num_steps == 1:
        t = np.array([sigma_max], dtype=np.float64)
    else:
        a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
        t = (a + i / (num_steps - 1) * (b - a)) ** rho
    return _descending_to_zero(t)


def logsnr_sigma_steps(num_steps: int, sigma_min: float = 0.002,
                       sigma_max: float = 80.0) -> np.ndarray:
    """Steps uniform in log-SNR (Lu et al. 2022, DPM-Solver, Sec. 3.3 "logSNR"): with EDM's
    alpha = 1, lambda = -log sigma, so sigma_i = sigma_max (sigma_min / sigma_max)^(i / (N - 1)),
    i = 0 .. N - 1 (geometric), then 0. float64 [num_steps + 1]; the limit rho -> inf of
    `edm_sigma_steps`."""
    _check_num_steps(num_steps)
    levels = sigma_max * (sigma_min / sigma_max) ** _uniform_fraction(num_steps)
    if num_steps > 1:
        levels[-1] = sigma_min                # the end point exactly, not round-tripped
    return _descending_to_zero(levels)


def time_uniform_sigma_steps(num_steps: int, sigma_min: float = 0.002,
                             sigma_max: float = 80.0, beta_d: float = 19.9,
                             beta_min: float = 0.1) -> np.ndarray:
    """Steps uniform in the time of the linear-beta VP SDE (Lu et al. 2022, DPM-Solver's
    "time_uniform"; EDM Table 1's VP steps): t_i from t(sigma_max) to t(sigma_min) in equal
    steps, sigma_i = sigma_VP(t_i) = sqrt(exp(beta_d t_i^2 / 2 + beta_min t_i) - 1), then 0.
    float64 [num_steps + 1]. `vp_sigma_steps` is the range sigma_VP(eps_s) .. sigma_VP(1)."""
    _check_num_steps(num_steps)
    t_hi = sde_lib.edm_vp_sigma_inv(float(sigma_max), beta_d, beta_min)
    t_lo = sde_lib.edm_vp_sigma_inv(float(sigma_min), beta_d, beta_min)
    t = t_hi + _uniform_fraction(num_steps) * (t_lo - t_hi)
    levels = sde_lib.edm_vp_sigma(t, beta_d, beta_min)
    levels[-1] = sigma_min                    # the end points exactly, not round-tripped
    levels[0] = sigma_max
    return _descending_to_zero(levels)


SIGMA_GRIDS = ("edm", "logsnr", "time_uniform")


def sigma_grid(name: str, num_steps: int, sigma_min: float, sigma_max: float,
               rho: float = 7.0) -> np.ndarray:
    """The noise-level grid `name` of `SIGMA_GRIDS` on [sigma_min, sigma_max], ending at 0:
    "edm" (`edm_sigma_steps` with rho), "logsnr" (`logsnr_sigma_steps`), "time_uniform"
    (`time_uniform_sigma_steps`). float64 [num_steps + 1]."""
    if name == "edm":
        return edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)
    if name == "logsnr":
        return logsnr_sigma_steps(num_steps, sigma_min, sigma_max)
    if name == "time_uniform":
        return time_uniform_sigma_steps(num_steps, sigma_min, sigma_max)
    raise ValueError(f"unknown sigma grid {name!r}; valid choices: {', '.join(SIGMA_GRIDS)}")


def vp_sigma_steps(num_steps: int, beta_d: float = 19.9, beta_min: float = 0.1,
                   eps_s: float = 1e-3) -> np.ndarray:
    """EDM Table 1, VP time steps: t_i = 1 + i / (N - 1) (eps_s - 1), sigma_i = sigma_VP(t_i)
    = sqrt(exp(beta_d t_i^2 / 2 + beta_min t_i) - 1) (Song et al. 2021's uniform VP times in
    the sigma view), then 0. float64 [num_steps + 1]."""
    _check_num_steps(num_steps)
    t = 1.0 + _uniform_fraction(num_steps) * (eps_s - 1.0)
    return _descending_to_zero(sde_lib.edm_vp_sigma(t, beta_d, beta_min))


def ve_sigma_steps(num_steps: int, sigma_min: float = 0.02,
                   sigma_max: float = 100.0) -> np.ndarray:
    """EDM Table 1, VE time steps: t_i = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i / (N - 1))
    with sigma(t) = sqrt(t), i.e. sigma_i = sigma_max (sigma_min / sigma_max)^(i / (N - 1))
    (geometric, Song et al. 2021's SMLD levels), then 0. float64 [num_steps + 1]."""
    _check_num_steps(num_steps)
    t = sigma_max ** 2 * (sigma_min ** 2 / sigma_max ** 2) ** _uniform_fraction(num_steps)
    return _descending_to_zero(sde_lib.edm_ve_sigma(t))


def flow_sigma_steps(num_steps: int, sigma_max: float) -> np.ndarray:
    """Uniform steps in flow-matching time, t_i = t_max (1 - i / N), i = 0 .. N, with
    t_max = sigma_max / (1 + sigma_max), as noise levels sigma_i = t_i / (1 - t_i) (ends at 0).

    x_t = (1 - t) x0 + t eps is (1 - t)(x0 + sigma eps), so Euler in sigma on this grid is
    Euler in t with uniform steps (Liu et al. 2023's rectified-flow sampler). float64 [N + 1].
    """
    _check_num_steps(num_steps)
    t_max = sigma_max / (1.0 + sigma_max)
    t = t_max * (1.0 - np.arange(num_steps + 1, dtype=np.float64) / num_steps)
    return t / (1.0 - t)


class DDPMSchedule(NamedTuple):
    """Discrete DDPM schedule, float64 numpy arrays [T]; index i is the paper's t = i + 1."""

    betas: np.ndarray
    alphas: np.ndarray
    alphas_bar: np.ndarray


def ddpm_schedule(num_steps: int = 1000, beta_1: float = 1e-4,
                  beta_T: float = 0.02) -> DDPMSchedule:
    """Ho et al. 2020 (Sec. 4): linear betas from beta_1 to beta_T over T = num_steps levels,
    alpha_t = 1 - beta_t, alpha_bar_t = prod_{s <= t} alpha_s; float64 [T] each."""
    betas = np.linspace(beta_1, beta_T, num_steps, dtype=np.float64)
    alphas = 1.0 - betas
    return DDPMSchedule(betas, alphas, np.cumprod(alphas))


def ddpm_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """`num_steps` level indices descending from T - 1 to 0 (both included, evenly spaced and
    rounded; Song, Meng & Ermon 2021's sub-sequence tau), int64 [num_steps].
    num_steps = T gives every index."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"need 1 <= num_steps <= {num_train_steps}, got {num_steps}")
    if num_steps == 1:
        return np.array([num_train_steps - 1])
    ts = np.round(np.linspace(num_train_steps - 1, 0, num_steps)).astype(np.int64)
    if len(np.unique(ts)) != num_steps:
        raise ValueError("timesteps are not distinct")
    return ts


def ddpm_sigma_steps(alphas_bar, timesteps) -> np.ndarray:
    """The levels of DDPM indices in the sigma view, sigma_t = sqrt((1 - ab_t) / ab_t)
    (x_t / sqrt(ab_t) = x0 + sigma_t eps), at `timesteps`, then 0. float64 [len + 1]."""
    ab = np.asarray(alphas_bar, np.float64)
    return _descending_to_zero(np.sqrt((1.0 - ab) / ab)[np.asarray(timesteps)])


def sde_time_steps(num_steps: int, T: float = 1.0, eps: float = 1e-3) -> np.ndarray:
    """Uniform SDE times t_i = T - i (T - eps) / N, i = 0 .. N (Song et al. 2021's
    Euler-Maruyama and predictor-corrector grids). float64 [num_steps + 1], from T to eps."""
    _check_num_steps(num_steps)
    return np.linspace(float(T), float(eps), num_steps + 1, dtype=np.float64)


def sde_times_from_sigmas(sde, sigmas) -> np.ndarray:
    """The SDE times t_i = sde.t_of_sigma(sigma_i) of a descending noise-level grid (e.g.
    `edm_sigma_steps` on the SDE's range): the grid the reverse-SDE and predictor-corrector
    samplers step along when they follow a sigma schedule instead of Song et al.'s uniform
    times. A final level 0 becomes t = 0 exactly, where those samplers take the posterior
    mean (their step to the clean data). float64 [len(sigmas)]."""
    s = np.asarray(sigmas, dtype=np.float64)
    t = np.zeros_like(s)
    positive = s > 0
    t[positive] = np.asarray(sde.t_of_sigma(s[positive]), np.float64)
    return t
