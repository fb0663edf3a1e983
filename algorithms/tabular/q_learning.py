"""Q-learning, on-policy version (S. Zhao, Mathematical Foundations of RL, Ch. 7.4 "TD learning
of optimal action values: Q-learning", Algorithm 7.2).

    q_{t+1}(s_t, a_t) = q_t(s_t, a_t)
                        - alpha [ q_t(s_t, a_t) - (r_{t+1} + gamma max_a q_t(s_{t+1}, a)) ]

Q-learning solves the Bellman optimality equation q(s, a) = E[R + gamma max_a' q(S', a') | s, a]
(Ch. 7.4) by stochastic approximation, so its estimate aims at q* whatever policy generated the
data (it is off-policy by nature). In this variant the data come from the epsilon-greedy policy
of the current q (behaviour = target's epsilon-greedy version, updated every step), as in
Algorithm 7.2; `q_learning_off_policy.py` is Algorithm 7.3 with a fixed behaviour policy.

Behaviour, episode handling (terminated -> no bootstrap; truncated -> bootstrap from the true
next state) and one `update` = `config.num_steps` steps come from the engine in `sarsa.py`.
"""
from __future__ import annotations

from algorithms.tabular import common, sarsa

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = sarsa.CONFIG_RULES

State = sarsa.State
default_config = sarsa.default_config  # alpha 0.1, epsilon 0.1 as in the book's examples
init = sarsa.init


def update(state: State, config, task):
    return sarsa.online_update("q_learning", state, config, task)


def evaluate(state: State, key, config, task):
    """Greedy-policy quality, epsilon-greedy behaviour value and max |q - q*|."""
    del key
    metrics = sarsa.control_metrics(state.q, config, task)
    metrics["q_error"] = sarsa.q_error(state.q, config, task)
    return metrics


solution = common.greedy_solution  # (max_a q(s, a), greedy policy): estimates of v*, pi*
act = common.act_epsilon_greedy
artifacts = common.artifacts_from(solution, __name__)
