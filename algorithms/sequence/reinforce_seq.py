r"""REINFORCE with a group baseline for sequences (Williams 1992), the family's plain reference.

G responses per prompt from the current policy; each response's advantage is its reward minus
the mean reward of its group ("mean"), or of the other G - 1 responses ("leave_one_out", which
is RLOO, `rloo.py`); the loss is the sequence-level policy gradient

    L = -1/B sum_i A_i log pi_theta(o_i | q),   log pi_theta(o_i | q) = sum_t log pi_theta(o_it)

(`losses.reinforce_token_loss`, summed over each response and divided by the response budget R,
aggregation "seq_sum_norm"). No ratio, no clipping, no value model. With kl_coef > 0 the reward
is r_i - beta log[pi(o_i|q) / pi_ref(o_i|q)] (`losses.sequence_kl_rewards`). Note that the two
baselines give the same direction: A_loo = G/(G-1) A_mean.

    python -m launch.run --algo=reinforce_seq --num_seeds=5
"""
from __future__ import annotations

from algorithms.core import config_rules as rules
from algorithms.sequence import common, losses

TASK_FLAG = "dataset"
DEFAULT_TASK = "addition"
PRIMARY_METRIC = "eval/accuracy_greedy"
SWEEPABLE = common.SWEEPABLE
BASELINES = {"mean": losses.dr_grpo_advantages, "leave_one_out": losses.rloo_advantages}

CONFIG_RULES = {**common.RULES, "baseline": rules.one_of(*BASELINES)}
CONFIG_CHECKS = common.CHECKS

make_task, init, act, evaluate = common.make_task, common.init, common.act, common.evaluate


def default_config():
    c = common.base_config()
    c.baseline = "mean"  # or "leave_one_out"
    c.kl_coef = 0.0  # beta of the sequence-level KL in the reward
    c.aggregation = "seq_sum_norm"  # sum over each response / R
    return c


def prepare(batch: common.Batch, hparams, config, task) -> common.Batch:
    if config.baseline not in BASELINES:
        raise ValueError(f"config.baseline must be one of {tuple(BASELINES)}, "
                         f"got {config.baseline!r}")
    rewards = losses.sequence_kl_rewards(batch.rewards, batch.old_log_probs, batch.ref_log_probs,
                                         batch.mask, kl_coef=hparams["kl_coef"])
    adv = BASELINES[config.baseline](rewards.reshape(-1, config.group_size)).reshape(-1)
    return batch.replace(advantages=adv[:, None] * batch.mask, baseline=rewards - adv)


def loss_fn(config, task):
    def loss(log_probs, values, mb: common.Batch, hp):
        token_losses = losses.reinforce_token_loss(log_probs, mb.advantages, mb.mask)
        value = losses.aggregate_tokens(token_losses, mb.mask, mode=config.aggregation,
                                        norm_constant=common.norm_constant(config, task))
        return value, {"loss": value}
    return loss


def update(state, config, task):
    return common.policy_update(state, config, task, prepare, loss_fn(config, task))
