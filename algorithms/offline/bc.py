"""Behaviour cloning: regress the dataset's actions, a = pi(s), by mean squared error.

Pomerleau (1991), "Efficient Training of Artificial Neural Networks for Autonomous Navigation";
the deterministic MSE form used as the offline-RL baseline by Fujimoto & Gu (2021, TD3+BC,
Sec. 5: the actor of TD3+BC with lambda -> 0) and by CORL (Tarasov et al. 2022):

    L(phi) = E_{(s, a) ~ D} || pi_phi(s) - a ||^2,     pi_phi(s) = tanh(MLP(s)) in [-1, 1]^|A|

BC learns no values: it recovers the behaviour policy, so it is strong on expert data and
weak where the data mixes good and bad actions (random, medium-replay).
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import optim
from algorithms.core.networks import DeterministicPolicy
from algorithms.offline import common

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr",)
make_task = common.make_task
CONFIG_RULES = common.CONFIG_RULES


def bc_loss(predicted_actions: jax.Array, dataset_actions: jax.Array) -> jax.Array:
    """Per-sample squared error ||pi(s) - a||^2 summed over action dimensions.

    Args:
      predicted_actions, dataset_actions: [B, A].
    Returns: [B] (mean over the batch at the call site).
    """
    chex.assert_rank([predicted_actions, dataset_actions], 2)
    chex.assert_equal_shape([predicted_actions, dataset_actions])
    return jnp.sum((predicted_actions - dataset_actions) ** 2, axis=-1)


@struct.dataclass
class State:
    actor_params: Any
    actor_opt: Any
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """CORL's BC: 256-256 ReLU MLP, Adam 3e-4, batch 256 (Tarasov et al. 2022)."""
    c = common.offline_config()
    c.lr = 3e-4
    return c


def _actor(config, task):
    return DeterministicPolicy(tuple(config.hidden_sizes), common.action_dim(task))


def init(key, config, task) -> State:
    k_actor, key = jax.random.split(key)
    params = _actor(config, task).init(k_actor, jnp.zeros(common.obs_dim(task)))
    opt = optim.optimizer(config.lr, inject_all=True)
    return State(actor_params=params, actor_opt=opt.init(params),
                 key=key, step=jnp.int32(0), hparams={"lr": jnp.float32(config.lr)})


def update(state: State, config, task):
    actor = _actor(config, task)
    # the rate in state.hparams is written in at each step
    opt = optim.optimizer(config.lr, inject_all=True)

    def gradient_step(state, batch, _key):
        def objective(params):
            return bc_loss(actor.apply(params, batch["obs"]), batch["action"]).mean()

        loss, grads = jax.value_and_grad(objective)(state.actor_params)
        params, opt_state = optim.apply_updates(opt, state.actor_opt, state.actor_params, grads,
                                                state.hparams["lr"])
        return state.replace(actor_params=params, actor_opt=opt_state), {"actor_loss": loss}

    return common.run_gradient_steps(gradient_step, state, config, task)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions of pi(s) at raw observations [B, obs_dim] (deterministic: the key
    is unused)."""
    return common.policy_action(_actor(config, task), state.actor_params, obs, task)


def evaluate(state: State, key, config, task):
    return common.evaluate_policy(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
