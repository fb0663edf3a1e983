r"""PPO for sequence models: per-token rewards with the KL folded in, GAE from a value head.

The RLHF form of PPO (Ziegler et al. 2019; Ouyang et al. 2022; DeepSeekMath Sec. 4.1, Eq. 1-2):
each response is an episode whose actions are its tokens, with rewards

    r_t = -beta (log pi_old(o_t) - log pi_ref(o_t))  +  [t = last token] r(q, o)      (Eq. 2)

(`losses.kl_shaped_rewards`), advantages by GAE(gamma, lambda) over the tokens from the value
head V(q, o_<t) on the policy's trunk (`losses.sequence_gae`, Schulman et al. 2016, Eq. 16),
whitened over the batch's response tokens, and the loss

    clipped surrogate (Schulman et al. 2017, Eq. 7, per token) + vf_coef * clipped value loss,

both reduced by `aggregation` ("token_mean", the masked token mean of common implementations).
gamma = 1 (the reward is undiscounted), lambda = 0.95, beta = 0.04 (GRPO's, for comparison).

    python -m launch.run --algo=ppo_seq --num_seeds=5
"""
from __future__ import annotations

from algorithms.core import config_rules as rules
from algorithms.sequence import common, losses

TASK_FLAG = "dataset"
DEFAULT_TASK = "addition"
PRIMARY_METRIC = "eval/accuracy_greedy"
SWEEPABLE = common.SWEEPABLE

CONFIG_RULES = {**common.RULES, "clip_eps": rules.in_range(0.0, 1.0, low_open=True)}
CONFIG_CHECKS = common.CHECKS

make_task, init, act, evaluate = common.make_task, common.init, common.act, common.evaluate


def default_config():
    c = common.base_config()
    c.kl_coef = 0.04  # beta of Eq. 2
    c.clip_eps = 0.2  # policy ratio and value clipping range
    c.gamma = 1.0
    c.gae_lambda = 0.95
    c.vf_coef = 0.1
    c.normalize_advantages = True  # whiten the advantages over the batch's response tokens
    c.aggregation = "token_mean"
    return c


def prepare(batch: common.Batch, hparams, config, task) -> common.Batch:
    token_rewards = losses.kl_shaped_rewards(batch.rewards, batch.old_log_probs,
                                             batch.ref_log_probs, batch.mask,
                                             kl_coef=hparams["kl_coef"])
    adv, targets = losses.sequence_gae(token_rewards, batch.old_values, batch.mask,
                                       gamma=config.gamma, lam=config.gae_lambda)
    if config.normalize_advantages:
        adv = losses.masked_whiten(adv, batch.mask)
    return batch.replace(advantages=adv, targets=targets)


def loss_fn(config, task):
    def reduce(token_losses, mask):
        return losses.aggregate_tokens(token_losses, mask, mode=config.aggregation,
                                       norm_constant=common.norm_constant(config, task))

    def loss(log_probs, values, mb: common.Batch, hp):
        eps = config.clip_eps
        policy = reduce(losses.clipped_token_surrogate(log_probs, mb.old_log_probs,
                                                       mb.advantages, mb.mask, eps_low=eps),
                        mb.mask)
        value = reduce(losses.value_token_loss(values, mb.old_values, mb.targets, mb.mask,
                                               clip_eps=eps), mb.mask)
        total = policy + config.vf_coef * value
        return total, {"loss": total, "policy_loss": policy, "value_loss": value,
                       "clip_frac": losses.clip_fraction(log_probs, mb.old_log_probs, mb.mask,
                                                         eps_low=eps)}
    return loss


def update(state, config, task):
    return common.policy_update(state, config, task, prepare, loss_fn(config, task))
