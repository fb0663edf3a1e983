"""Expected Sarsa (S. Zhao, Mathematical Foundations of RL, Ch. 7.2, the Expected Sarsa variant).

Like Sarsa (see `sarsa.py`), but the TD target averages over the next action under the current
epsilon-greedy policy pi_t instead of sampling it:

    q_{t+1}(s_t, a_t) = q_t(s_t, a_t)
        - alpha [ q_t(s_t, a_t) - (r_{t+1} + gamma E_{A ~ pi_t(.|s_{t+1})} q_t(s_{t+1}, A)) ]

i.e. a stochastic-approximation solver of q_pi(s, a) = E[R + gamma v_pi(S') | s, a] with
v_pi(s') = sum_a pi(a|s') q_pi(s', a). Removing the randomness of A_{t+1} lowers the variance of
the target. Behaviour, episode handling and one `update` = `config.num_steps` online
steps are those of Sarsa (the shared engine in `sarsa.py`); a terminated step does not
bootstrap, a truncated one does (from the true next state).
"""
from __future__ import annotations

from algorithms.tabular import common, sarsa

TASK_FLAG, DEFAULT_TASK, PRIMARY_METRIC = "env", "gridworld", "eval/policy_value"
make_task = common.make_task
CONFIG_RULES = sarsa.CONFIG_RULES

State = sarsa.State
default_config = sarsa.default_config  # alpha 0.1, epsilon 0.1 as in the book's examples
init = sarsa.init
evaluate = sarsa.evaluate  # exact quality of the greedy and the followed policy


def update(state: State, config, task):
    return sarsa.online_update("expected_sarsa", state, config, task)


solution = sarsa.solution  # (sum_a pi(a|s) q(s, a), the epsilon-greedy policy followed)
act = common.act_epsilon_greedy
artifacts = common.artifacts_from(solution, __name__)
