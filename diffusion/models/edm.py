"""EDM: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS 2022.

Preconditioning (Table 1 "ours", Eq. 7) with sd = sigma_data = 0.5:
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4;
loss (Eq. 2 / Eq. 8): lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2 with ln sigma ~
N(P_mean = -1.2, P_std = 1.2) and lambda = (sigma^2 + sd^2) / (sigma sd)^2 (`losses.edm_loss`).
Sampling: Heun (Alg. 1) on the time steps of Eq. 5 (sigma_min 0.002, sigma_max 80, rho 7),
18 steps = 35 NFE; `reverse_sde` / `pc` view the model as the VE SDE with sigma(t) on
[0.002, 80]. Adam lr 1e-3 as EDM's CIFAR-10 runs (Table 7). The network embeds c_noise
sinusoidally, as EDM's DDPM++ networks do (`--config.net.embedding=fourier` for NCSN++'s
Fourier features).

    python -m launch.run --algo=edm --dataset=moons --num_seeds=4
"""
from __future__ import annotations

import functools

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from diffusion import data, losses, networks, precond, protocol
from diffusion import sde as sde_lib

TASK_FLAG = "dataset"
DEFAULT_TASK = "moons"
PRIMARY_METRIC = "eval/sliced_wasserstein"
SWEEPABLE = ("lr",)


def default_config():
    c = protocol.base_config()
    c.sigma_data = 0.5       # EDM Table 1 (data std; the toys' per-coordinate std is 0.5-0.9)
    c.p_mean = -1.2          # ln sigma ~ N(P_mean, P_std^2) in training (Table 1)
    c.p_std = 1.2
    return c


def coefficients(config):
    return functools.partial(precond.edm_precond, sigma_data=float(config.sigma_data))


def loss(raw_fn, x0, key, config):
    d = networks.denoiser_from_raw(raw_fn, coefficients(config))
    return losses.edm_loss(d, x0, key, p_mean=float(config.p_mean), p_std=float(config.p_std),
                           sigma_data=float(config.sigma_data))


def sde(config):
    return sde_lib.VESDE(sigma_min=float(config.sampler.sigma_min),
                         sigma_max=float(config.sampler.sigma_max))


MODEL = protocol.Model("edm", coefficients, loss, sde)
CONFIG_RULES = protocol.config_rules(MODEL, {"sigma_data": rules.positive,
                                             "p_mean": rules.finite(), "p_std": rules.positive})
CONFIG_CHECKS = protocol.CONFIG_CHECKS
make_task = data.make_task
init, update, evaluate, sample, artifacts = protocol.bind(MODEL)


step_counts = step_axes.one_gradient_step  # the logs' env / gradient step axes (launch/registry.py)
