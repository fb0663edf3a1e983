"""VP: the variance-preserving SDE of Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole,
"Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021
(Eq. 11, beta_min = 0.1, beta_max = 20), in the preconditioned form of EDM Table 1 "VP".

Preconditioning (EDM Table 1, VP; F is an epsilon-predictor of the VP-scaled input):
    c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1), c_noise = (M - 1) t(sigma), M = 1000,
with t(sigma) the VP time of sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1).
Loss: denoising score matching (Song et al. 2021, Eq. 7) with lambda(t) = std(t)^2,
t ~ U(1e-5, 1) (`losses.dsm_loss` with the score (D - x) / sigma^2 in the SDE's scaling), which
equals EDM Table 1's VP loss ||D - x0||^2 / sigma^2. Sampling: Heun on the EDM grid over the
VP range, sigma(1e-3) to sigma(1) (EDM Table 1, VP: eps_s = 1e-3); `reverse_sde` / `pc`
integrate the VP SDE itself. Gradient clipping at norm 1 as Song et al.'s configs.

    python -m launch.run --algo=vp --dataset=moons --num_seeds=4
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
    c.beta_min = 0.1         # Song et al. 2021 / EDM Table 1 (beta_d = beta_max - beta_min = 19.9)
    c.beta_max = 20.0
    c.M = 1000               # c_noise = (M - 1) t (EDM Table 1)
    c.max_grad_norm = 1.0    # Song et al.'s configs clip gradients at norm 1
    c.net.embedding = "positional"  # c_noise in [0, 999]
    c.sampler.sigma_min = float(sde_lib.edm_vp_sigma(1e-3, 19.9, 0.1))
    c.sampler.sigma_max = float(sde_lib.edm_vp_sigma(1.0, 19.9, 0.1))
    return c


def sde(config):
    return sde_lib.VPSDE(beta_min=float(config.beta_min), beta_max=float(config.beta_max))


def coefficients(config):
    s = sde(config)
    return functools.partial(precond.vp_precond, beta_d=s.beta_d, beta_min=s.beta_min,
                             M=int(config.M))


def loss(raw_fn, x0, key, config):
    s = sde(config)
    d = networks.denoiser_from_raw(raw_fn, coefficients(config))
    return losses.dsm_loss(s.score_from_denoiser(d), x0, key, s)


MODEL = protocol.Model("vp", coefficients, loss, sde)
CONFIG_RULES = protocol.config_rules(MODEL, {"beta_min": rules.positive,
                                             "beta_max": rules.positive, "M": rules.count})
CONFIG_CHECKS = protocol.CONFIG_CHECKS + (protocol.ordered("beta_min", "beta_max"),)
make_task = data.make_task
init, update, evaluate, sample, artifacts = protocol.bind(MODEL)


step_counts = step_axes.one_gradient_step  # the logs' env / gradient step axes (launch/registry.py)
