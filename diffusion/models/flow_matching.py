"""Flow matching with the linear (optimal-transport / rectified-flow) path: Lipman, Chen,
Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR 2023 (Eq. 23, sigma_min = 0);
Liu, Gong, Liu, "Flow Straight and Fast", ICLR 2023 (Eq. 1).

With t = 0 data and t = 1 noise: x_t = (1 - t) x0 + t eps, a velocity network v(x_t, t)
regresses eps - x0 with t ~ U(0, 1) (`losses.flow_matching_loss`); its time input is
c_noise = (M - 1) t, M = 1000, embedded sinusoidally like VP's.

As a denoiser: x_t = (1 - t)(x0 + sigma eps) with sigma = t / (1 - t), and
E[x0 | x_t] = x_t - t v, so with x = x_t / (1 - t) (EDM's s(t) = 1 - t):
    D(x; sigma) = (x - sigma v(x / (1 + sigma), t)) / (1 + sigma),   t = sigma / (1 + sigma),
i.e. c_skip = c_in = 1 / (1 + sigma), c_out = -sigma / (1 + sigma). The flow ODE dx_t/dt = v is
the probability-flow ODE of D in other coordinates; Euler with uniform steps in t (Liu et al.'s
sampler, `euler_t` here, from t = sigma_max / (1 + sigma_max)) equals Euler in sigma on the grid
`schedules.flow_sigma_steps`. All other samplers use the EDM grid on [0.002, 80].

    python -m launch.run --algo=flow_matching --dataset=moons --num_seeds=4
"""
from __future__ import annotations

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from diffusion import data, losses, precond, protocol, samplers, schedules
from diffusion import sde as sde_lib

TASK_FLAG = "dataset"
DEFAULT_TASK = "moons"
PRIMARY_METRIC = "eval/sliced_wasserstein"
SWEEPABLE = ("lr",)


def default_config():
    c = protocol.base_config()
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


def sample_euler_t(key, denoise_fn, shape, num_steps, config):
    """Euler with `num_steps` uniform steps in t (Liu et al. 2023): `samplers.sample_euler` on
    `schedules.flow_sigma_steps(num_steps, config.sampler.sigma_max)`."""
    grid = schedules.flow_sigma_steps(int(num_steps), float(config.sampler.sigma_max))
    return samplers.sample_euler(key, denoise_fn, shape, grid)


MODEL = protocol.Model("flow_matching", coefficients, loss, sde,
                       extra_samplers=(("euler_t", sample_euler_t),))
CONFIG_RULES = protocol.config_rules(MODEL, {"M": rules.count})
CONFIG_CHECKS = protocol.CONFIG_CHECKS
make_task = data.make_task
init, update, evaluate, sample, artifacts = protocol.bind(MODEL)


step_counts = step_axes.one_gradient_step  # the logs' env / gradient step axes (launch/registry.py)
