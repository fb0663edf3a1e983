"""Diffusion behaviour cloning: Diffusion-QL's policy trained with the denoising loss alone.

Wang, Hunt, Zhou (2023), arXiv:2208.06193: the "Diffusion-BC" baseline of Sec. 5 and the
authors' `agents/bc_diffusion.py`. The policy is the conditional DDPM over actions of
`_diffusion_policy` (N = 5 levels, the VP schedule, clipped reverse chain), trained by

    L_d(theta) = E_{i, eps, (s, a)} || eps - eps_theta(sqrt(ab_i) a + sqrt(1 - ab_i) eps, s, i) ||^2
                                                                                    (Eq. 2)

and acting with one sample of the chain per state. It learns no values: it is behaviour
cloning with a policy class that can represent several modes per state, where a Gaussian or
deterministic BC policy (`bc.py`) averages them.

Kept separate from `diffusion_ql.py` (rather than a flag eta = 0 there) because it has no
critics at all: no critic parameters, no Q evaluations in the step, no candidates to score.
"""
from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim
from algorithms.offline import _diffusion_policy as dp
from algorithms.offline import common

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr",)
make_task = common.make_task
CONFIG_RULES = dp.RULES
CONFIG_CHECKS = dp.CHECKS


@struct.dataclass
class State:
    actor_params: Any  # the noise network
    actor_opt: Any
    key: jax.Array
    step: jax.Array  # int32, runner updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """The authors' Diffusion-BC: the policy of Diffusion-QL (N = 5, VP schedule, 3 x 256 Mish),
    Adam 3e-4 at a constant rate, no gradient clipping, no EMA, batch 256."""
    c = dp.policy_config()
    c.lr_schedule = "constant"
    for unused in ("ema_decay", "ema_start", "ema_every", "num_candidates"):
        del c[unused]
    return c


def init(key, config, task) -> State:
    rules.check(config, sys.modules[__name__])
    k_actor, key = jax.random.split(key)
    params = dp.init_noise_net(k_actor, config, task)
    return State(actor_params=params, actor_opt=dp.make_optimizer(config).init(params), key=key,
                 step=jnp.int32(0), hparams={"lr": jnp.float32(config.lr)})


def update(state: State, config, task):
    net = dp.noise_net(config, task)
    opt = dp.make_optimizer(config)
    lr = dp.scheduled_lr(config, state.hparams["lr"], state.step)

    def gradient_step(state, batch, key):
        def objective(params):
            return dp.denoising_loss(net, params, batch["obs"], batch["action"], key,
                                     config).mean()

        loss, grads = jax.value_and_grad(objective)(state.actor_params)
        params, opt_state = optim.apply_updates(opt, state.actor_opt, state.actor_params, grads,
                                                lr)
        return state.replace(actor_params=params, actor_opt=opt_state), {"bc_loss": loss}

    return common.run_gradient_steps(gradient_step, state, config, task)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim]: one sample of the diffusion policy
    per state (with a fixed noise draw without a key, so a deterministic function of s)."""
    states, key = dp.states_and_key(obs, task, key)
    actions = dp.sample_actions(dp.noise_net(config, task), state.actor_params, states, key,
                                config)
    return dp.to_env(actions, task)


def evaluate(state: State, key, config, task):
    return dp.evaluate_sampling(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
