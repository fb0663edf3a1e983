"""Conservative Q-learning, CQL(H), on SAC: push Q down on sampled actions, up on the data's.

Kumar, Zhou, Tucker, Levine (2020), "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS, arXiv:2006.04779. The critics of SAC (two, clipped double-Q) add to their
Bellman error the CQL(H) regulariser (Eq. 4):

    min_Q  alpha E_{s~D}[ log sum_a exp Q(s, a) - E_{a~pi_beta(.|s)} Q(s, a) ]
           + E_D[ (Q(s, a) - y)^2 ]

so Q is lowered where it is large (the soft maximum over all actions, which the policy would
exploit) and raised on the dataset's actions; the policy's expected Q lower-bounds its value.
The integral over actions is estimated by importance sampling (App. F, the authors' code): per
state, N uniform actions a ~ U[-1, 1]^|A| (log density -|A| log 2), N actions ~ pi(.|s) and N
actions ~ pi(.|s') (both evaluated at s, with their log pi), all 3N in

    log sum_a exp Q(s, a)  ~=  logsumexp_k ( Q(s, a_k) - log mu(a_k) )

(temperature 1; the constant -log 3N is dropped, as in the authors' code, which fixes the
scale of the Lagrange threshold below). The sampled actions are constants (no gradient into
the policy). All 1 + 3N actions per state go through the critic ensemble in ONE call.

Two ways to weight the penalty:
  fixed     alpha = cql_alpha (the default, as in young-geng/CQL's and CORL's Gym runs).
  Lagrange  (`lagrange=True`, App. F / Eq. 30): min_Q max_{alpha' >= 0} alpha' (gap - tau) + ...,
            gap = logsumexp - Q(s, a_data), tau = target_action_gap; log alpha' is trained by
            gradient ascent (`cql_lagrange_loss`), so alpha' grows while the gap exceeds tau and
            shrinks below it. alpha' replaces cql_alpha in the critic loss.

Policy and temperature are SAC's (sac_actor_loss with the minimum of the two critics,
sac_alpha_loss); the backup omits the entropy term by default ("deterministic backup", the
authors' default: "it does not backup entropy in the Q-function, as per Equation 3"). The
shared fused step is sac_n.sac_step with two critics and this penalty as its critic
regulariser.
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules, optim
from algorithms.offline import common, sac_n

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("cql_alpha", "target_action_gap", "actor_lr", "critic_lr")
make_task = common.make_task
CONFIG_RULES = {**sac_n.CONFIG_RULES,
                "cql_alpha": config_rules.non_negative,  # 0: no conservative penalty (SAC-N)
                "cql_n_actions": config_rules.count,
                "target_action_gap": config_rules.finite(),
                "init_alpha_prime": config_rules.positive}  # trained as log alpha'
act = sac_n.act  # the SAC policy: tanh(mean(s)), or a sample with a key
evaluate = sac_n.evaluate

ALPHA_PRIME_MAX = 1e6  # the authors' clip of alpha'


def cql_penalty(q_sampled: jax.Array, log_densities: jax.Array, q_data: jax.Array, *,
                temperature: float = 1.0) -> jax.Array:
    """Per-sample CQL(H) gap  T logsumexp_k((Q(s, a_k) - log mu(a_k)) / T) - Q(s, a_data).

    Eq. 4 of Kumar et al. (2020) with the importance-sampled estimate of log sum_a exp Q(s, a)
    of App. F (temperature T = 1 there). Minimised w.r.t. the critic parameters (through both
    Q terms); the sampled actions and their log-densities are constants.

    Args:
      q_sampled: [num_critics, B, K] Q_i(s_b, a_bk) of K sampled actions per state.
      log_densities: [B, K] log mu(a_bk) of the proposal each action was drawn from
        (-|A| log 2 for uniform actions on [-1, 1]^|A|, log pi(a|.) for policy actions).
      q_data: [num_critics, B] Q_i(s_b, a_b) of the dataset actions.
      temperature: T > 0.
    Returns: [num_critics, B] gaps (alpha * sum over critics, mean over the batch at the call
      site).
    """
    chex.assert_rank([q_sampled, log_densities, q_data], [3, 2, 2])
    chex.assert_equal_shape([q_sampled[0], log_densities])
    chex.assert_equal_shape([q_sampled[..., 0], q_data])
    logits = (q_sampled - jax.lax.stop_gradient(log_densities)[None]) / temperature
    return temperature * jax.nn.logsumexp(logits, axis=-1) - q_data


def cql_lagrange_loss(log_alpha_prime: jax.Array, gaps: jax.Array, *,
                      target_action_gap: jax.Array | float) -> jax.Array:
    """Per-sample dual loss -alpha' (gap - tau), alpha' = clip(exp(log alpha'), 0, 1e6).

    CQL(H) with automatic alpha (Kumar et al. 2020, App. F, Eq. 30): the critic minimises and
    alpha' >= 0 maximises alpha' (E[gap] - tau), so log alpha' descends this loss:
    d/d(log alpha') = -alpha' (gap - tau) < 0 when the gap exceeds tau, i.e. alpha' grows
    and the penalty tightens; it shrinks when the gap is below tau. The gaps are constants here.

    Args:
      log_alpha_prime: scalar, the trained parameter.
      gaps: [B] `cql_penalty` gaps (the mean over the critics, as the authors average the
        two critics' dual losses).
      target_action_gap: tau.
    Returns: [B].
    """
    chex.assert_rank([log_alpha_prime, gaps], [0, 1])
    alpha_prime = jnp.clip(jnp.exp(log_alpha_prime), 0.0, ALPHA_PRIME_MAX)
    return -alpha_prime * jax.lax.stop_gradient(gaps - target_action_gap)


@struct.dataclass
class State(sac_n.State):
    log_alpha_prime: jax.Array  # scalar, Lagrange multiplier (trained if config.lagrange)
    alpha_prime_opt: Any


def default_config():
    """CQL(H) for Gym-MuJoCo after the authors' launcher (aviralkumar2907/CQL,
    `d4rl/examples/cql_mujoco_new.py`): 10 sampled actions per proposal, deterministic backup,
    critic Adam 3e-4, policy (and temperature) Adam 1e-4, tau 5e-3, batch 256, initial alpha 1.
    Penalty weight: fixed alpha = 5.0, the launcher's "set to 5.0 or 10.0 if not using
    lagrange" and young-geng/CQL's JAX reproduction (CORL: 10.0); the launcher itself
    defaults to the Lagrange form with tau = 5.0 (kept here as target_action_gap).
    Not copied: their 40k-step behaviour-cloning warm start of the policy (the authors note
    "not much difference"; CORL's default is 0 steps) and three hidden layers (the project's
    256x256 here; set hidden_sizes=(256, 256, 256) to match)."""
    c = common.offline_config()
    c.num_critics = 2  # clipped double Q
    c.actor_lr = 1e-4  # policy and entropy temperature
    c.critic_lr = 3e-4  # critics and alpha'
    c.tau = 0.005
    c.init_alpha = 1.0
    c.target_entropy = -1.0  # per action dimension
    c.deterministic_backup = True  # no entropy term in the target (authors' default)
    c.cql_alpha = 5.0  # fixed penalty weight (unused when lagrange=True)
    c.cql_n_actions = 10  # N per proposal: 3N sampled actions per state
    c.lagrange = False  # True: alpha' tuned to keep the gap at target_action_gap
    c.target_action_gap = 5.0  # tau (the authors' lagrange_thresh default)
    c.init_alpha_prime = 1.0  # exp(0), the authors' initial log alpha' = 0
    return c


def init(key, config, task) -> State:
    if int(config.cql_n_actions) < 1:
        raise ValueError(f"cql_n_actions must be a positive integer; got {config.cql_n_actions}")
    log_alpha_prime = jnp.log(jnp.float32(config.init_alpha_prime))
    hparams = {name: jnp.float32(config[name]) for name in SWEEPABLE}
    lrs = (config.actor_lr, config.critic_lr, config.actor_lr)  # actor, critics, temperature
    return State(**sac_n.init_fields(key, config, task, lrs), hparams=hparams,
                 log_alpha_prime=log_alpha_prime,
                 alpha_prime_opt=optim.optimizer(config.critic_lr,
                                                 inject_all=True).init(log_alpha_prime))


def update(state: State, config, task):
    actor, critic = sac_n.networks(config, task)
    num, action_dim = int(config.cql_n_actions), common.action_dim(task)
    lagrange = bool(config.lagrange)

    def gradient_step(state, batch, key):
        h = state.hparams
        alpha_prime = jnp.clip(jnp.exp(state.log_alpha_prime), 0.0, ALPHA_PRIME_MAX)
        weight = alpha_prime if lagrange else h["cql_alpha"]

        def conservative_critic(params, batch, key):
            k_uniform, k_pi, k_next = jax.random.split(key, 3)
            obs, data_action = batch["obs"], batch["action"]
            size = obs.shape[0]
            uniform = jax.random.uniform(k_uniform, (size, num, action_dim), minval=-1.0,
                                         maxval=1.0)
            pi_s, logp_s = sac_n.policy_sample(actor, state.actor_params, obs, k_pi, num)
            pi_next, logp_next = sac_n.policy_sample(actor, state.actor_params,
                                                     batch["next_obs"], k_next, num)
            actions = jnp.concatenate([data_action[:, None], uniform, pi_s, pi_next], axis=1)
            k = actions.shape[1]  # 1 + 3N
            q = critic.apply(params, jnp.broadcast_to(obs[:, None], (size, k, obs.shape[1])),
                             jax.lax.stop_gradient(actions))  # [critics, B, 1 + 3N]
            log_mu = jnp.concatenate(
                [jnp.full((size, num), -action_dim * np.log(2.0), jnp.float32), logp_s,
                 logp_next], axis=1)
            gaps = cql_penalty(q[..., 1:], log_mu, q[..., 0])  # [critics, B]
            aux = {"cql_gap": gaps.mean(0), "q_uniform": q[..., 1:1 + num].mean(),
                   "q_policy": q[..., 1 + num:1 + 2 * num].mean()}
            return q[..., 0], weight * gaps.sum(0), aux

        state, metrics, aux = sac_n.sac_step(
            state, batch, key, config, task, lrs=(h["actor_lr"], h["critic_lr"], h["actor_lr"]),
            critic_values=conservative_critic)
        gaps = aux.pop("cql_gap")
        metrics = {**metrics, **aux, "cql_gap": gaps.mean(), "cql_weight": weight}
        if lagrange:
            loss, grad = jax.value_and_grad(lambda la: cql_lagrange_loss(
                la, gaps, target_action_gap=h["target_action_gap"]).mean())(state.log_alpha_prime)
            log_alpha_prime, opt_state = optim.apply_updates(
                optim.optimizer(config.critic_lr, inject_all=True), state.alpha_prime_opt,
                state.log_alpha_prime, grad, h["critic_lr"])
            state = state.replace(log_alpha_prime=log_alpha_prime, alpha_prime_opt=opt_state)
            metrics["alpha_prime_loss"] = loss
        return state, metrics

    return common.run_gradient_steps(gradient_step, state, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
