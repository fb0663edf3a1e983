"""IDQL: IQL's critic, a diffusion behaviour policy, and actions chosen by resampling.

Hansen-Estruch, Kostrikov, Janner, Kuba, Levine (2023), "IDQL: Implicit Q-Learning as an
Actor-Critic Method with Diffusion Policies", arXiv:2304.10573, Sec. 4-5; details from the
authors' code (github.com/philippe-eecs/IDQL, `jaxrl5/agents/ddpm_iql/ddpm_iql_learner.py`).

IDQL decouples the two halves of offline RL. The critic is IQL's, trained on dataset actions
only (`iql.py`'s losses); the policy is a diffusion model of the behaviour policy mu(a | s),
trained with the denoising loss alone; the critic acts only at evaluation, by reweighting
samples of mu. Per gradient step, on one batch (s, a, r, s', terminal) ~ D:

    value    L_V = E[ L2^tau(min_j Q'_j(s, a) - V(s)) ]                      (IQL Eq. 5)
    critics  L_Q = E[ sum_j (r + gamma (1 - terminal) V(s') - Q_j(s, a))^2 ]  (IQL Eq. 6)
             V(s') from the value net after this step's update, as the authors' code
    policy   L_d = E || eps - eps_theta(sqrt(ab_i) a + sqrt(1 - ab_i) eps, s, i) ||^2
    EMA      theta' <- 0.999 theta' + 0.001 theta every step; targets phi' <- Polyak(tau)

Action selection (Sec. 4.2): the expectile loss makes V the value of an implicit policy
pi_imp(a | s) proportional to mu(a | s) w(s, a) with

    w(s, a) = |tau - 1(Q(s, a) < V(s))| / |Q(s, a) - V(s)|,

so IDQL draws `num_candidates` actions a^(1..K) ~ mu(. | s) from the EMA policy and resamples
one with probabilities proportional to w (`selection="expectile"`; |Q - V| is floored at
1e-6). The authors' evaluation code takes the argmax of Q over the candidates instead
(`selection="argmax"`, the paper's greedy variant), and its resampling routine uses
|tau - 1(Q < V)| without the 1 / |Q - V| factor (`selection="expectile_sign"`).
Q = min_j Q'_j (target critics), V the value net. Without a key, `act` takes the argmax.

The chain is `_diffusion_policy`'s (Diffusion-QL's: x0 estimate clipped to the box, posterior
variance beta_tilde), shared by the three diffusion policies; IDQL's own sampler takes Eq. 1's
variance beta_i and clips the chain's state a_i after every step instead, and embeds the step
with learned Fourier features where this network uses sinusoidal ones.
"""
from __future__ import annotations

import sys
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from algorithms.core import steps as step_axes
from algorithms.core import config_rules as rules
from algorithms.core import optim
from algorithms.core.networks import QEnsemble, ValueNet
from algorithms.offline import _diffusion_policy as dp
from algorithms.offline import common
from algorithms.offline.iql import iql_value_loss, reward_scale

TASK_FLAG = common.TASK_FLAG
DEFAULT_TASK = common.DEFAULT_TASK
PRIMARY_METRIC = common.PRIMARY_METRIC
SWEEPABLE = ("lr", "expectile")
make_task = common.make_task

SELECTIONS = ("expectile", "expectile_sign", "argmax")
CONFIG_RULES = {**dp.RULES,
                "expectile": rules.in_range(0.0, 1.0, low_open=True, high_open=True),
                "selection": rules.one_of(*SELECTIONS),
                "reward_range": rules.non_negative}
CONFIG_CHECKS = dp.CHECKS
# Floor of |Q - V| in the expectile weights (their 1 / |Q - V| is infinite at Q = V).
MIN_ABS_ADVANTAGE = 1e-6


def selection_log_weights(q: jax.Array, v: jax.Array, expectile, selection: str) -> jax.Array:
    """log w(s, a) of the candidates, up to a constant per state (logits for `dp.choose`).

    Args:
      q: [B, K] min_j Q'_j(s, a^(k)) of K candidates per state.
      v: [B] V(s).
      expectile: tau of the value loss.
      selection: "expectile": w = |tau - 1(Q < V)| / max(|Q - V|, 1e-6) (the paper);
        "expectile_sign": w = |tau - 1(Q < V)| (the authors' resampling code);
        "argmax": log w = Q (its argmax is the greedy choice).
    Returns: [B, K].
    """
    chex.assert_rank([q, v], [2, 1])
    if selection == "argmax":
        return q
    advantages = q - v[:, None]
    log_w = jnp.log(jnp.where(advantages < 0, 1.0 - expectile, expectile))
    if selection == "expectile":
        log_w = log_w - jnp.log(jnp.maximum(jnp.abs(advantages), MIN_ABS_ADVANTAGE))
    return log_w


@struct.dataclass
class State:
    actor_params: Any  # the noise network of mu(a | s)
    ema_params: Any  # its EMA (samples the candidates)
    critic_params: Any  # QEnsemble of 2 critics
    target_critic_params: Any
    value_params: Any
    actor_opt: Any
    critic_opt: Any
    value_opt: Any
    reward_scale: jax.Array  # float32 multiplier of the dataset rewards (1 without normalizing)
    key: jax.Array
    step: jax.Array  # int32, runner updates done
    grad_step: jax.Array  # int32, gradient steps done
    hparams: dict  # SWEEPABLE float32 scalars


def default_config():
    """The authors' D4RL locomotion settings (`ddpm_iql_learner.py` defaults and launcher):
    T = 5 levels, the VP schedule, an MLP noise network of 3 x 256 Mish units with a
    64-wide time embedding (the paper's best variant swaps in a LayerNorm ResNet with dropout),
    2 x 256 ReLU critics and value net, Adam 3e-4 for all, the policy's rate on a cosine decay,
    policy EMA rate 0.001 every step, expectile 0.7, tau 0.005, 64 candidates, IQL's reward
    scaling (`iql.reward_scale`)."""
    c = dp.policy_config()
    c.time_dim = 64
    c.critic_hidden_sizes = (256, 256)
    c.critic_activation = "relu"
    c.ema_decay = 0.999
    c.ema_start = 0
    c.ema_every = 1
    c.tau = 0.005
    c.expectile = 0.7
    c.num_candidates = 64
    c.selection = "expectile"
    c.normalize_rewards = True  # IQL's locomotion reward scaling (iql.reward_scale)
    c.reward_range = 0.0  # 0: the dataset's longest episode
    return c


def _nets(config, task):
    hidden = tuple(config.critic_hidden_sizes)
    activation = dp.ACTIVATIONS[config.critic_activation]
    return (dp.noise_net(config, task), QEnsemble(hidden, num=2, activation=activation),
            ValueNet(hidden, activation=activation))


def init(key, config, task) -> State:
    rules.check(config, sys.modules[__name__])
    _, critic, value = _nets(config, task)
    k_actor, k_critic, k_value, key = jax.random.split(key, 4)
    obs, action = jnp.zeros(common.obs_dim(task)), jnp.zeros(common.action_dim(task))
    actor_params = dp.init_noise_net(k_actor, config, task)
    critic_params = critic.init(k_critic, obs, action)
    value_params = value.init(k_value, obs)
    opt = dp.make_optimizer(config)
    scale = (reward_scale(task.data, float(config.reward_range)) if config.normalize_rewards
             else jnp.float32(1.0))
    return State(actor_params=actor_params, ema_params=actor_params, critic_params=critic_params,
                 target_critic_params=critic_params, value_params=value_params,
                 actor_opt=opt.init(actor_params), critic_opt=opt.init(critic_params),
                 value_opt=opt.init(value_params), reward_scale=scale, key=key,
                 step=jnp.int32(0), grad_step=jnp.int32(0),
                 hparams={name: jnp.float32(config[name]) for name in SWEEPABLE})


def update(state: State, config, task):
    net, critic, value = _nets(config, task)
    opt = dp.make_optimizer(config)
    actor_lr = dp.scheduled_lr(config, state.hparams["lr"], state.step)

    def gradient_step(state, batch, key):
        hp = state.hparams
        obs, actions = batch["obs"], batch["action"]

        # Value (IQL Eq. 5) against the target critics' minimum at the dataset action.
        target_q = critic.apply(state.target_critic_params, obs, actions)

        def value_objective(params):
            v = value.apply(params, obs)
            return iql_value_loss(target_q, v, hp["expectile"]).mean(), v

        (value_loss, v), grads = jax.value_and_grad(value_objective, has_aux=True)(
            state.value_params)
        value_params, value_opt = optim.apply_updates(opt, state.value_opt, state.value_params,
                                                      grads, hp["lr"])

        # Critics (IQL Eq. 6) towards r + gamma (1 - terminal) V(s'), the updated V.
        next_v = value.apply(value_params, batch["next_obs"])
        critic_params, critic_opt, critic_loss, q = dp.critic_step(
            critic, opt, state.critic_params, state.critic_opt, batch, next_v,
            state.reward_scale * batch["reward"], config, hp["lr"])

        # Behaviour policy: the denoising loss alone.
        bc_loss, grads = jax.value_and_grad(
            lambda p: dp.denoising_loss(net, p, obs, actions, key, config).mean())(
            state.actor_params)
        actor_params, actor_opt = optim.apply_updates(opt, state.actor_opt, state.actor_params,
                                                      grads, actor_lr)

        ema_params, target_critic_params = dp.moving_averages(state, actor_params,
                                                              critic_params, config)
        metrics = {"critic_loss": critic_loss, "value_loss": value_loss, "bc_loss": bc_loss,
                   "q_mean": q.mean(), "v_mean": v.mean()}
        return state.replace(actor_params=actor_params, ema_params=ema_params,
                             critic_params=critic_params,
                             target_critic_params=target_critic_params,
                             value_params=value_params, actor_opt=actor_opt,
                             critic_opt=critic_opt, value_opt=value_opt,
                             grad_step=state.grad_step + 1), metrics

    return common.run_gradient_steps(gradient_step, state, config, task)


def select_action(state: State, obs: jax.Array, config, task, key=None,
                  selection: str | None = None) -> jax.Array:
    """Actions in [-1, 1]^|A| at raw observations [B, obs_dim]: `num_candidates` samples of the
    EMA behaviour policy per state, resampled with `selection_log_weights` (with a key) or the
    argmax of Q (without one, or with selection="argmax")."""
    selection = config.selection if selection is None else selection
    net, critic, value = _nets(config, task)
    states, k_sample = dp.states_and_key(obs, task, key)
    k_candidates, k_choose = jax.random.split(k_sample)
    num = int(config.num_candidates)
    actions, rep = dp.candidates(net, state.ema_params, states, k_candidates, config, num)
    q = critic.apply(state.target_critic_params, rep, actions.reshape(rep.shape[0], -1))
    q = q.min(axis=0).reshape(states.shape[0], num)
    if key is None or selection == "argmax":
        return dp.choose(None, actions, q)
    v = value.apply(state.value_params, states)
    logits = selection_log_weights(q, v, state.hparams["expectile"], selection)
    return dp.choose(k_choose, actions, logits)


def act(state: State, obs: jax.Array, config, task, key=None) -> jax.Array:
    """Environment actions at raw observations [B, obs_dim] (`select_action`, mapped to the
    box): the argmax-Q candidate without a key, the configured resampling with one."""
    return dp.to_env(select_action(state, obs, config, task, key), task)


def evaluate(state: State, key, config, task):
    return dp.evaluate_sampling(act, state, key, config, task)


step_counts = step_axes.offline  # the logs' env / gradient step axes (launch/registry.py)
