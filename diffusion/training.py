"""Training a diffusion model: its State and the protocol's init / update / evaluate.

One update is one Adam step (Kingma & Ba 2015; `algorithms.core.optim.optimizer`, with
global-norm clipping at config.max_grad_norm) on the model's loss over a minibatch drawn with
replacement from task.train, then the EMA of the weights with the warm-up decay
min(ema_decay, (1 + k) / (10 + k)) after k updates. Conditional models (labeled data) drop the
label to a null class with probability config.label_dropout (classifier-free guidance, Ho &
Salimans 2022), so one network is the conditional and the unconditional denoiser.

Evaluation samples with the EMA parameters and the configured sampler (`diffusion.sampling`)
and returns the sliced Wasserstein-2 distance to the held-out set.

The task (`diffusion.data.DataTask`) is an argument, shared by all seeds; a seed's State holds
only parameters, optimizer state, its key and counters.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from algorithms.core import optim
from diffusion import data as data_lib
from diffusion import networks
from diffusion import sampling

if TYPE_CHECKING:
    from diffusion.protocol import Model

Array = jax.Array


@struct.dataclass
class State:
    """One seed of a diffusion model in training."""

    params: Any
    ema_params: Any
    opt_state: Any
    key: jax.Array      # the seed's key; update k uses fold_in(key, k)
    step: jax.Array     # int32, updates done
    hparams: dict       # SWEEPABLE values ("lr") as float32 scalars
    data_shape: tuple = struct.field(pytree_node=False, default=())
    num_classes: int = struct.field(pytree_node=False, default=0)  # 0: unconditional


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with config.adam_* and clipping at config.max_grad_norm (0: none), traced lr."""
    return optim.optimizer(config.lr, b1=config.adam_b1, b2=config.adam_b2,
                           eps=config.adam_eps, max_grad_norm=config.max_grad_norm)


def init(model: Model, key, config, task: data_lib.DataTask) -> State:
    """Parameters (EMA = copy), Adam state, key and counters of one seed."""
    if config.conditional and not task.num_classes:
        raise ValueError(f"config.conditional needs labeled data; {task.name!r} has no labels "
                         "(use --dataset=digits)")
    num_classes = int(task.num_classes) if config.conditional else 0
    data_shape = tuple(int(s) for s in task.train.shape[1:])
    net = networks.make_network(config, num_classes)
    k_param, k_state = jax.random.split(key)
    labels = jnp.zeros((1,), jnp.int32) if num_classes else None
    params = net.init(k_param, jnp.zeros((1,) + data_shape, jnp.float32),
                      jnp.zeros((1,), jnp.float32), labels)
    return State(params=params, ema_params=params, opt_state=make_optimizer(config).init(params),
                 key=k_state, step=jnp.int32(0), hparams={"lr": jnp.float32(config.lr)},
                 data_shape=data_shape, num_classes=num_classes)


def update(model: Model, state: State, config, task: data_lib.DataTask):
    """One Adam step on a minibatch of `config.batch_size` drawn with replacement from
    task.train (labels dropped to the null class with prob. `label_dropout`), then the EMA.

    Metrics: "loss" (the model's loss per data dimension, minibatch mean), "grad_norm", "lr".
    """
    key = jax.random.fold_in(state.key, state.step)
    k_idx, k_drop, k_loss = jax.random.split(key, 3)
    batch = int(config.batch_size)
    idx = jax.random.randint(k_idx, (batch,), 0, task.train.shape[0])
    x0 = task.train[idx]
    labels = None
    if state.num_classes:
        labels = task.train_labels[idx]
        drop = jax.random.bernoulli(k_drop, config.label_dropout, labels.shape)
        labels = jnp.where(drop, state.num_classes, labels)
    net = networks.make_network(config, state.num_classes)
    dim = math.prod(state.data_shape)

    def loss_fn(params):
        per_sample = model.loss(networks.network_fn(net, params, labels), x0, k_loss, config)
        chex.assert_shape(per_sample, (batch,))
        return jnp.mean(per_sample) / dim

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    lr = state.hparams["lr"]
    if config.lr_warmup > 0:
        lr = lr * jnp.minimum(1.0, (state.step + 1).astype(jnp.float32) / config.lr_warmup)
    params, opt_state = optim.apply_updates(make_optimizer(config), state.opt_state,
                                            state.params, grads, learning_rate=lr)
    step = state.step + 1
    decay = jnp.minimum(config.ema_decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
    # ema <- decay ema + (1 - decay) params, i.e. Polyak averaging with the EMA as the first
    # argument: tau = 1 - decay would round the warm-up decay (1 - (1 - d) != d in float32).
    ema = optim.polyak(state.ema_params, params, decay)
    new_state = state.replace(params=params, ema_params=ema, opt_state=opt_state, step=step)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": lr}


def evaluate(model: Model, state: State, key, config,
             task: data_lib.DataTask) -> dict[str, Array]:
    """{"sliced_wasserstein": SW_2} between len(task.heldout) samples (EMA parameters, the
    configured sampler) and the held-out set, with fixed projections
    (`config.eval.projection_seed`). Conditional models sample with the held-out labels and
    guidance `config.eval.guidance`."""
    n = task.heldout.shape[0]
    labels = task.heldout_labels if state.num_classes else None
    x, _ = sampling.draw_samples(model, state, key, config, n, labels=labels,
                                 guidance=config.eval.guidance)
    sw = data_lib.sliced_wasserstein(x, task.heldout,
                                     jax.random.key(int(config.eval.projection_seed)),
                                     int(config.eval.num_projections))
    return {"sliced_wasserstein": sw}
