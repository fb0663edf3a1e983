"""VE: the variance-exploding SDE of Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole,
"Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021
(Eq. 9; continuous SMLD / NCSN), in the preconditioned form of EDM Table 1 "VE".

Preconditioning (EDM Table 1, VE; F = sigma * score): c_skip = 1, c_out = sigma, c_in = 1,
c_noise = ln(sigma / 2), embedded sinusoidally (Song et al.'s NCSN++ uses Fourier features
of log sigma with scale 16: `--config.net.embedding=fourier`).
Loss: denoising score matching (Song et al. 2021, Eq. 7) on the VE SDE with sigma_min = 0.01,
sigma_max = 50 (Song et al.'s CIFAR-10 values), t ~ U(1e-5, 1), lambda(t) = std(t)^2
(`losses.dsm_loss`), i.e. EDM Table 1's VE loss ||D - x0||^2 / sigma^2 with ln sigma roughly
uniform on [ln 0.01, ln 50]. Sampling: Heun on the EDM grid over [0.01, 50]; `reverse_sde` /
`pc` integrate the VE SDE (PC with snr 0.16, Song et al.'s VE setting). Gradient clipping at
norm 1 as Song et al.'s configs.

    python -m launch.run --algo=ve --dataset=moons --num_seeds=4
"""
from __future__ import annotations

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
    c.sde_sigma_min = 0.01   # VE SDE noise range (Song et al. 2021)
    c.sde_sigma_max = 50.0
    c.max_grad_norm = 1.0    # Song et al.'s configs clip gradients at norm 1
    c.sampler.sigma_min = 0.01
    c.sampler.sigma_max = 50.0
    return c


def coefficients(config):
    return precond.ve_precond


def sde(config):
    return sde_lib.VESDE(sigma_min=float(config.sde_sigma_min),
                         sigma_max=float(config.sde_sigma_max))


def loss(raw_fn, x0, key, config):
    s = sde(config)
    d = networks.denoiser_from_raw(raw_fn, coefficients(config))
    return losses.dsm_loss(s.score_from_denoiser(d), x0, key, s)


MODEL = protocol.Model("ve", coefficients, loss, sde)
CONFIG_RULES = protocol.config_rules(MODEL, {"sde_sigma_min": rules.positive,
                                             "sde_sigma_max": rules.positive})
CONFIG_CHECKS = protocol.CONFIG_CHECKS + (protocol.ordered("sde_sigma_min", "sde_sigma_max"),)
make_task = data.make_task
init, update, evaluate, sample, artifacts = protocol.bind(MODEL)


step_counts = step_axes.one_gradient_step  # the logs' env / gradient step axes (launch/registry.py)
