"""Expected Sarsa (S. Zhao, Mathematical Foundations of RL, Ch. 7.2, the Expected Sarsa variant).

Like Sarsa (see `sarsa.py`), but the TD target averages over the next action under the current
epsilon-greedy policy pi_t instead of sampling it:

    q_{t+1}(s_t, a_t) = q_t(s_t, a_t)
        - alpha [ q_t(s_t, a_t) - (r_{t+1} + gamma E_{A ~ pi_t(.|s_{t+1})} q_t(s_{t+1}, A)) ]

i.e. a stochastic-approximation solver of q_pi(s, a) = E[R + gamma v_pi(S') | s, a] with
v_pi(s') = sum_a pi(a|s') q_pi(s', a). Removing the randomness of A_{t+1} lowers the variance of
the target. Behaviour, episode handling and one `update` = `config.steps_per_update` online
steps are those of Sarsa (the shared engine in `sarsa.py`); a terminated step does not
bootstrap, a truncated one does (from the true next state).
"""
from __future__ import annotations

from algorithms.tabular import sarsa

DEFAULT_ENV = "gridworld"
REQUIRES = ("tabular_model",)  # the model is used only for exact evaluation metrics

State = sarsa.State


def default_config():
    return sarsa.online_config()  # alpha 0.1, epsilon 0.1 as in the book's examples


def init(key, config, task) -> State:
    return sarsa.online_init(key, config, task)


def update(state: State, config, task):
    return sarsa.online_update("expected_sarsa", state, config, task)


def evaluate(state: State, key, config, task):
    del key
    return sarsa.control_metrics(state.q, config, task)


def solution(state: State, config, task):
    """(sum_a pi(a|s) q(s, a), the epsilon-greedy policy pi being followed)."""
    return sarsa.solution(state, config, task)
