"""Flow matching with the linear (optimal-transport / rectified-flow) path: Lipman, Chen,
Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR 2023 (Eq. 23, sigma_min = 0);
Liu, Gong, Liu, "Flow Straight and Fast", ICLR 2023 (Eq. 1).

In the seeds' notes' convention (t = 0 data, t = 1 noise): x_t = (1 - t) x0 + t eps, a velocity
network v(x_t, t) regresses eps - x0 with t ~ U(0, 1) (`losses.flow_matching_loss`); its time
input is c_noise = (M - 1) t, M = 1000, embedded sinusoidally like VP's.

As a denoiser: x_t = (1 - t)(x0 + sigma eps) with sigma = t / (1 - t), and
E[x0 | x_t] = x_t - t v, so with x = x_t / (1 - t) (EDM's s(t) = 1 - t):
    D(x; sigma) = (x - sigma v(x / (1 + sigma), t)) / (1 + sigma),   t = sigma / (1 + sigma),
i.e. c_skip = c_in = 1 / (1 + sigma), c_out = -sigma / (1 + sigma). The flow ODE dx_t/dt = v is
the probability-flow ODE of D in other coordinates; Euler with uniform steps in t (Liu et al.'s
sampler, `euler_t` here, from t = sigma_max / (1 + sigma_max)) equals Euler in sigma on the grid
sigma_i = t_i / (1 - t_i). All other samplers use the EDM grid on [0.002, 80].

    python -m launch.run --algo=flow_matching --dataset=moons --num_seeds=4
"""
from __future__ import annotations

import numpy as np

from diffusion import losses
from diffusion import precond
from diffusion import samplers
from diffusion import sde as sde_lib
from diffusion.models import common

DEFAULT_DATASET = "moons"
DEFAULT_ENV = None
REQUIRES = ()
SWEEPABLE = ("lr",)


def default_config():
    c = common.base_config()
    c.M = 1000               # time input c_noise = (M - 1) t, as VP's
    c.net.embedding = "positional"
    return c


def coefficients(config):
    m = int(config.M)

    def coeff(sigma):
        one_plus = 1.0 + sigma
        return precond.Coefficients(c_skip=1.0 / one_plus, c_out=-sigma / one_plus,
                                    c_in=1.0 / one_plus, c_noise=(m - 1) * sigma / one_plus)

    return coeff


def loss(raw_fn, x0, key, config):
    m = int(config.M)
    return losses.flow_matching_loss(lambda x, t: raw_fn(x, (m - 1) * t), x0, key)


def sde(config):
    return sde_lib.VESDE(sigma_min=float(config.sampler.sigma_min),
                         sigma_max=float(config.sampler.sigma_max))


def uniform_t_grid(num_steps: int, sigma_max: float) -> np.ndarray:
    """sigma_i = t_i / (1 - t_i) for t_i = t_max (1 - i / N), i = 0..N (float64, ends at 0)."""
    t_max = sigma_max / (1.0 + sigma_max)
    t = t_max * (1.0 - np.arange(num_steps + 1, dtype=np.float64) / num_steps)
    return t / (1.0 - t)


def _custom(name, key, denoise_fn, shape, num_steps, config):
    if name == "euler_t":
        grid = uniform_t_grid(int(num_steps), float(config.sampler.sigma_max))
        return samplers.sample_euler(key, denoise_fn, shape, sigmas=grid)
    raise ValueError(name)


MODEL = common.Model("flow_matching", coefficients, loss, sde, extra_samplers=("euler_t",),
                     custom_samplers=_custom)


# The protocol functions (init, update, evaluate, make_task, sample), bound to this model.
init, update, evaluate, make_task, sample = common.protocol(MODEL)
