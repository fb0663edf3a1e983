"""DDPM: Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.

A network eps_theta(x_t, t) trained with the simple loss (Eq. 14, Algorithm 1)
    || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t) ||^2,  t ~ U{1..T},
on the linear schedule beta_1 = 1e-4 ... beta_T = 0.02, T = 1000 (Sec. 4), `losses.ddpm_eps_loss`.
Its step index (0-based, embedded sinusoidally as in the paper) is the network's c_noise.

As a denoiser (EDM Table 1's VP column with a discrete c_noise): x = x0 + sigma n with
sigma_t = sqrt((1 - ab_t) / ab_t) is x_t / sqrt(ab_t), so
    D(x; sigma) = x - sigma eps_theta(x / sqrt(1 + sigma^2), t(sigma)),
with t(sigma) the index of the nearest trained level (in log sigma). Exact on the trained
levels, where `ddpm` (Algorithm 2) and `ddim` (Song, Meng & Ermon 2021) sample it as the
paper does; Euler / Heun / DPM-Solver++ run on the trained levels at the DDIM time steps
(`schedules.ddpm_sigma_steps`; DDIM with eta = 0 equals Euler there). Ho et al. clip gradients
at norm 1; lr, batch and EMA are the common toy values (`protocol.base_config`).

    python -m launch.run --algo=ddpm --dataset=moons --num_seeds=4
"""
from __future__ import annotations

import numpy as np

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from diffusion import data, losses, precond, protocol, schedules
from diffusion import sde as sde_lib

TASK_FLAG = "dataset"
DEFAULT_TASK = "moons"
PRIMARY_METRIC = "eval/sliced_wasserstein"
SWEEPABLE = ("lr",)


def _alphas_bar(T=1000, beta_1=1e-4, beta_T=0.02) -> np.ndarray:
    return schedules.ddpm_schedule(int(T), float(beta_1), float(beta_T)).alphas_bar


def default_config():
    c = protocol.base_config()
    c.T = 1000               # Ho et al. 2020, Sec. 4
    c.beta_1 = 1e-4
    c.beta_T = 0.02
    c.max_grad_norm = 1.0    # Ho et al.'s training code clips at 1
    c.net.embedding = "positional"  # the step index 0..T-1 (Ho et al.'s Transformer embedding)
    sig = np.sqrt((1.0 - _alphas_bar()) / _alphas_bar())
    c.sampler.sigma_min = float(sig[0])   # the trained levels: 0.0100 ... 157
    c.sampler.sigma_max = float(sig[-1])
    return c


def alphas_bar(config) -> np.ndarray:
    """ab_t, float64 [T] (index i is the paper's t = i + 1)."""
    return _alphas_bar(config.T, config.beta_1, config.beta_T)


def level_sigmas(config) -> np.ndarray:
    """sigma_t = sqrt((1 - ab_t) / ab_t) of the trained levels, increasing, float64 [T]."""
    ab = alphas_bar(config)
    return np.sqrt((1.0 - ab) / ab)


def coefficients(config):
    """VP preconditioning with c_noise the nearest trained level's index
    (`precond.discrete_vp_precond`)."""
    return precond.discrete_vp_precond(level_sigmas(config))


def loss(raw_fn, x0, key, config):
    def eps_fn(x_t, t_idx):
        return raw_fn(x_t, t_idx.astype(x_t.dtype))
    return losses.ddpm_eps_loss(eps_fn, x0, key, alphas_bar(config))


def sde(config):
    """The continuous limit of the linear schedule: VP with beta(t) T in [T beta_1, T beta_T]."""
    return sde_lib.VPSDE(beta_min=float(config.T * config.beta_1),
                         beta_max=float(config.T * config.beta_T))


def sigma_steps(config, num_steps):
    """The trained levels at the DDIM time steps (`schedules.ddpm_timesteps`), then 0."""
    ts = schedules.ddpm_timesteps(int(config.T), min(int(num_steps), int(config.T)))
    return schedules.ddpm_sigma_steps(alphas_bar(config), ts)


MODEL = protocol.Model("ddpm", coefficients, loss, sde, sigma_steps=sigma_steps,
                       alphas_bar=alphas_bar)
_BETA = rules.in_range(0.0, 1.0, low_open=True, high_open=True)
CONFIG_RULES = protocol.config_rules(MODEL, {"T": rules.count, "beta_1": _BETA,
                                             "beta_T": _BETA})
CONFIG_CHECKS = protocol.CONFIG_CHECKS + (protocol.ordered("beta_1", "beta_T"),)
make_task = data.make_task
init, update, evaluate, sample, artifacts = protocol.bind(MODEL)


step_counts = step_axes.one_gradient_step  # the logs' env / gradient step axes (launch/registry.py)
