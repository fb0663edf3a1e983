"""EDAC: SAC-N plus a penalty that diversifies the critics' action gradients.

An, Moon, Kim, Song (2021), "Uncertainty-Based Offline Reinforcement Learning with Diversified
Q-Ensemble", NeurIPS, arXiv:2110.01548, Sec. 4 (Ensemble-Diversified Actor Critic). SAC-N
(sac_n.py) needs many critics because they tend to share their gradients w.r.t. the action:
then their minimum barely penalises actions just off the data (Sec. 4.1). EDAC adds to the
critics' Bellman errors eta times the sum of the cosine similarities of the N action gradients
at the dataset's (s, a) over all ordered pairs i != j, divided by N - 1 (the paper's
reduction): N times their mean pairwise cosine similarity, between -N / (N - 1) and N:

    min_phi E_D[ sum_j (Q_j(s, a) - y)^2
                 + eta / (N - 1) sum_{1<=i!=j<=N} <u_i(s, a), u_j(s, a)> ],                (Eq. 6-7)
    u_i = grad_a Q_i(s, a) / ||grad_a Q_i(s, a)||

(the unit gradients as in the authors' code; the paper writes the inner products of the
gradients and motivates them by the variance of the unit gradients, App. A.2). Minimising it
makes the gradients point apart, so the ensemble disagrees, and the minimum falls, quickly
away from the data: a handful of critics does what SAC-N needs hundreds for. Actor,
temperature and targets are SAC-N's.

With one action dimension the unit gradients are +-1: the penalty only counts sign
disagreements and its derivative w.r.t. the gradients vanishes (up to eps), so EDAC trains
exactly like SAC-N (e.g. on Pendulum); it needs |A| >= 2 to act.

Implementation: `ensemble_action_gradients` evaluates every member at the batch and
differentiates it w.r.t. the action in one vmapped pass that also yields the Q-values of the
Bellman error; the parameter gradient of the penalty is a second-order derivative (reverse
over reverse). The authors' code keeps min(N, |A|) randomly chosen critics in the penalty;
CORL and this file use all N, as Eq. 6-7 write it.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from algorithms.core import steps as step_axes
from algorithms.core import config_rules
from algorithms.core.networks import QEnsemble, QNet
from algorithms.offline import common, sac_n

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("eta", "lr")
make_task = common.make_task
CONFIG_RULES = {**sac_n.CONFIG_RULES,
                "eta": config_rules.non_negative}  # 0: SAC-N
State = sac_n.State
act = sac_n.act
evaluate = sac_n.evaluate


def edac_diversity_loss(action_grads: jax.Array, *, eps: float = 1e-10) -> jax.Array:
    """Per-sample ensemble similarity 1/(N-1) sum_{i != j} <u_i, u_j>, u_i = g_i / (||g_i|| + eps).

    EDAC's penalty (An et al. 2021, Eq. 6-7, with the authors' normalised gradients): the sum
    runs over the N (N - 1) ordered pairs (each unordered pair counts twice), so the loss is
    N times the mean pairwise cosine similarity: it lies in [-N/(N-1), N] and is N when all
    gradients are parallel, 0 when they are pairwise orthogonal. Computed as
    ||sum_i u_i||^2 - sum_i ||u_i||^2 (O(N |A|), no N x N Gram matrix). A zero gradient counts
    as a zero vector (finite derivative). With N = 1 there are no pairs: the loss is 0.
    Minimised w.r.t. the critic parameters through `action_grads`.

    Args:
      action_grads: [N, B, A] grad_a Q_i(s_b, a_b) of each critic i at each sample b.
      eps: added to the norms (the authors' 1e-10).
    Returns: [B] (eta * mean over the batch at the call site).
    """
    chex.assert_rank(action_grads, 3)
    num = action_grads.shape[0]
    if num == 1:
        return jnp.zeros(action_grads.shape[1], action_grads.dtype)
    sq = jnp.sum(action_grads ** 2, axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    unit = action_grads / (norm + eps)
    total = jnp.sum(jnp.sum(unit, axis=0) ** 2, axis=-1)
    return (total - jnp.sum(unit ** 2, axis=(0, 2))) / (num - 1)


def ensemble_action_gradients(critic: QEnsemble, params, obs: jax.Array, actions: jax.Array):
    """Q_i(s, a) [N, B] and grad_a Q_i(s, a) [N, B, A] of every member of `critic`.

    One pass vmapped over the members' stacked parameters (the same batched matmuls as
    `critic.apply`); each member's Q-values of the batch are summed before differentiating,
    which gives the per-sample gradients because sample b's value depends on a_b only.
    """
    members = params["params"]
    if len(members) != 1:
        raise ValueError(f"expected the parameters of one QEnsemble (one vmapped QNet); got "
                         f"submodules {sorted(members)}")
    (stacked,) = members.values()
    net = QNet(critic.hidden_sizes, critic.activation)

    def one_member(member_params):
        def total(a):
            q = net.apply({"params": member_params}, obs, a)
            return q.sum(), q

        grads, q = jax.grad(total, has_aux=True)(actions)
        return q, grads

    return jax.vmap(one_member)(stacked)


def default_config():
    """SAC-N's defaults (sac_n.default_config: N = 10, Adam 3e-4, tau 5e-3) plus eta = 1.0:
    CORL's EDAC (`algorithms/offline/edac.py`) defaults, the authors' halfcheetah setting."""
    c = sac_n.default_config()
    c.eta = 1.0  # weight of the gradient-diversity penalty
    return c


def init(key, config, task) -> State:
    return State(**sac_n.init_fields(key, config, task, (config.lr,) * 3),
                 hparams={"lr": jnp.float32(config.lr), "eta": jnp.float32(config.eta)})


def update(state: State, config, task):
    _, critic = sac_n.networks(config, task)
    lr, eta = state.hparams["lr"], state.hparams["eta"]

    def diversified_critic(params, batch, _key):
        q, grads = ensemble_action_gradients(critic, params, batch["obs"], batch["action"])
        diversity = edac_diversity_loss(grads)
        return q, eta * diversity, {"diversity_loss": diversity.mean()}

    def gradient_step(state, batch, key):
        state, metrics, aux = sac_n.sac_step(state, batch, key, config, task, lrs=(lr, lr, lr),
                                             critic_values=diversified_critic)
        return state, {**metrics, **aux}

    return common.run_gradient_steps(gradient_step, state, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
