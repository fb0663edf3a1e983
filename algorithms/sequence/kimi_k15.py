r"""Kimi k1.5's policy optimisation (Kimi Team 2025, Sec. 2.3.2), an online mirror descent.

Iteration i samples k = G responses per prompt from pi_theta_i and solves the
relative-entropy-regularised problem  max_theta E[r] - tau KL(pi_theta || pi_theta_i), whose
solution pi* = pi_theta_i exp(r / tau) / Z satisfies r - tau log Z = tau log(pi* / pi_theta_i).
The policy regresses onto that identity with the squared loss

    L = 1/k sum_j ( r_j - tau log Z - tau log[pi_theta(y_j|x) / pi_theta_i(y_j|x)] )^2,

tau log Z estimated from the group's rewards (`losses.kimi_log_partition`: the log-mean-exp
of the sample, or its mean as the paper also uses); `losses.kimi_sequence_loss` scales it by
1 / (2 tau), which makes its gradient the paper's. The regulariser is the KL to the sampling
policy of this iteration, not to pi_ref, so kl_ref in the logs is free to grow. The paper's
length penalty and its curriculum / prioritised sampling are not used.

    python -m launch.run --algo=kimi_k15 --num_seeds=5
"""
from __future__ import annotations

from algorithms.core import config_rules as rules
from algorithms.sequence import common, losses

TASK_FLAG = "dataset"
DEFAULT_TASK = "addition"
PRIMARY_METRIC = "eval/accuracy_greedy"
SWEEPABLE = ("lr",)

CONFIG_RULES = {**common.RULES, "tau": rules.positive,  # not Polyak's tau: any tau > 0
                "log_z_estimator": rules.one_of(*losses.KIMI_ESTIMATORS)}
CONFIG_CHECKS = common.CHECKS

make_task, init, act, evaluate = common.make_task, common.init, common.act, common.evaluate


def default_config():
    c = common.base_config()
    c.tau = 1.0  # the regularisation strength and temperature of Z
    c.log_z_estimator = "logmeanexp"  # or "mean"
    del c.aggregation  # one loss per response
    del c.norm_constant
    del c.kl_coef  # the regulariser is tau's, towards the sampler
    return c


def prepare(batch: common.Batch, hparams, config, task) -> common.Batch:
    tau_log_z = losses.kimi_log_partition(common.group_rewards(batch, config), tau=config.tau,
                                          estimator=config.log_z_estimator).reshape(-1)
    return batch.replace(baseline=tau_log_z,
                         advantages=(batch.rewards - tau_log_z)[:, None] * batch.mask)


def loss_fn(config, task):
    def loss(log_probs, values, mb: common.Batch, hp):
        value = losses.kimi_sequence_loss(log_probs, mb.old_log_probs, mb.rewards, mb.baseline,
                                          mb.mask, tau=config.tau).mean()
        return value, {"loss": value}
    return loss


def update(state, config, task):
    return common.policy_update(state, config, task, prepare, loss_fn(config, task))
