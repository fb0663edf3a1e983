r"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, Sec. 4.1, Eq. 3).

No value model: G responses are sampled per prompt from pi_old, each response's advantage is
its group-normalised reward (outcome supervision, Sec. 4.1.2), A_i = (r_i - mean r) / std r,
shared by all its tokens, and the policy maximises

    1/G sum_i 1/|o_i| sum_t { min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i)
                              - beta D_KL[pi_theta || pi_ref] }        (Eq. 3)

with rho_it = pi_theta(o_it) / pi_old(o_it) and the KL estimated per token by k3 (Eq. 4).
`losses.grpo_loss` is that objective; here it trains on the addition task (`common`).
Variants by config: `aggregation` ("seq_mean" as Eq. 3, "token_mean" DAPO, "seq_sum_norm"
Dr. GRPO), `advantage` ("grpo", "dr_grpo", "rloo"), eps_high != eps_low (DAPO clip-higher).
The paper's beta is 0.04 and eps 0.2; lr and batch are sized for the tiny task.

    python -m launch.run --algo=grpo --num_seeds=5
"""
from __future__ import annotations

from algorithms.core import config_rules as rules
from algorithms.sequence import common, losses

TASK_FLAG = "dataset"
DEFAULT_TASK = "addition"
PRIMARY_METRIC = "eval/accuracy_greedy"
SWEEPABLE = common.SWEEPABLE
ADVANTAGES = {"grpo": losses.grpo_advantages, "dr_grpo": losses.dr_grpo_advantages,
              "rloo": losses.rloo_advantages}

CONFIG_RULES = {**common.RULES, "clip_eps_low": rules.in_range(0.0, 1.0, low_open=True),
                "clip_eps_high": rules.positive, "advantage": rules.one_of(*ADVANTAGES)}
CONFIG_CHECKS = common.CHECKS

make_task, init, act, evaluate = common.make_task, common.init, common.act, common.evaluate


def default_config():
    c = common.base_config()
    c.kl_coef = 0.04  # beta (DeepSeekMath Sec. 4.2)
    c.clip_eps_low = 0.2  # eps
    c.clip_eps_high = 0.2  # DAPO's clip-higher sets 0.28
    c.advantage = "grpo"  # "grpo" (r - mean) / std, "dr_grpo" r - mean, "rloo" leave-one-out
    c.aggregation = "seq_mean"  # Eq. 3
    return c


def prepare(batch: common.Batch, hparams, config, task) -> common.Batch:
    """Outcome-supervised advantages: every token of response i gets A_i."""
    if config.advantage not in ADVANTAGES:
        raise ValueError(f"config.advantage must be one of {tuple(ADVANTAGES)}, "
                         f"got {config.advantage!r}")
    rewards = common.group_rewards(batch, config)
    adv = ADVANTAGES[config.advantage](rewards).reshape(-1)
    return batch.replace(advantages=adv[:, None] * batch.mask)


def loss_fn(config, task):
    def loss(log_probs, values, mb: common.Batch, hp):
        kw = dict(eps_low=config.clip_eps_low, eps_high=config.clip_eps_high)
        value = losses.grpo_loss(log_probs, mb.old_log_probs, mb.ref_log_probs, mb.advantages,
                                 mb.mask, kl_coef=hp["kl_coef"], aggregation=config.aggregation,
                                 norm_constant=common.norm_constant(config, task), **kw)
        return value, {"loss": value,
                       "clip_frac": losses.clip_fraction(log_probs, mb.old_log_probs, mb.mask,
                                                         **kw)}
    return loss


def update(state, config, task):
    return common.policy_update(state, config, task, prepare, loss_fn(config, task))
