"""Config rules of the tabular algorithms (algorithms/core/config_rules.py with each module's
CONFIG_RULES): every default field is covered and allowed, and impossible values are refused
before anything is compiled, with one line naming the field, the value and what is allowed.
"""
import importlib

import pytest

from algorithms.core import config_rules

TABULAR = ["policy_evaluation", "value_iteration", "policy_iteration",
           "truncated_policy_iteration", "epsilon_greedy_policy_iteration", "mc_basic",
           "mc_exploring_starts", "mc_epsilon_greedy", "robbins_monro", "sgd_mean_estimation",
           "td_zero", "sarsa", "expected_sarsa", "n_step_sarsa", "q_learning",
           "q_learning_off_policy", "td_linear"]


def module(name):
    return importlib.import_module(f"algorithms.tabular.{name}")


@pytest.mark.parametrize("name", TABULAR)
def test_every_default_field_is_covered_and_allowed(name):
    algo = module(name)
    config = algo.default_config()
    assert config_rules.uncovered(config, algo) == []
    config_rules.check(config, algo)


# (module, field, bad value, words the message must contain besides the field and value)
BAD = [
    ("value_iteration", "gamma", 1.0, ["[0.0, 1.0)", "finite only for gamma < 1"]),
    ("policy_iteration", "gamma", 1.5, ["[0.0, 1.0)"]),
    ("policy_evaluation", "gamma", -0.1, ["[0.0, 1.0)"]),
    ("truncated_policy_iteration", "gamma", 1.0, ["singular at gamma = 1"]),
    ("epsilon_greedy_policy_iteration", "gamma", 1.0, ["[0.0, 1.0)"]),
    ("td_zero", "gamma", 1.0, ["[0.0, 1.0)"]),
    ("sarsa", "gamma", float("nan"), ["[0.0, 1.0)"]),
    ("policy_evaluation", "epsilon", -1.0, ["[0.0, 1.0]"]),
    ("td_zero", "epsilon", 1.5, ["[0.0, 1.0]"]),
    ("mc_epsilon_greedy", "epsilon", -1.0, ["[0.0, 1.0]"]),
    ("sarsa", "epsilon", -1.0, ["[0.0, 1.0]"]),
    ("epsilon_greedy_policy_iteration", "epsilon", 2.0, ["[0.0, 1.0]"]),
    ("q_learning_off_policy", "behavior_epsilon", -0.5, ["[0.0, 1.0]"]),
    ("sarsa", "alpha", 0.0, ["(0.0, 1.0]", "0 never learns"]),
    ("expected_sarsa", "alpha", 0.0, ["(0.0, 1.0]"]),
    ("q_learning", "alpha", 2.0, ["(0.0, 1.0]"]),
    ("n_step_sarsa", "alpha", -0.1, ["(0.0, 1.0]"]),
    ("q_learning_off_policy", "alpha", 0.0, ["(0.0, 1.0]"]),
    ("td_zero", "alpha", 0.0, ["(0.0, 1.0]"]),
    ("td_linear", "alpha", 0.0, ["(0.0, 1.0]"]),
    ("td_zero", "alpha_power", 0.4, ["(0.5, 1.0]", "Robbins-Monro"]),
    ("td_zero", "alpha_tau", 0.0, ["(0.0, inf]"]),
    ("td_zero", "step_size", "harmonic", ["'constant', 'decaying'"]),
    ("td_zero", "num_steps", 0, ["an integer in [1, inf]"]),
    ("td_zero", "policy", "greedy", ["uniform, optimal", "'^' up"]),
    ("policy_evaluation", "policy", "nofile.npy", ["an existing file"]),
    ("policy_evaluation", "method", "monte_carlo", ["'closed_form', 'iterative'"]),
    ("truncated_policy_iteration", "eval_sweeps", 0, ["an integer in [1, inf]"]),
    ("mc_basic", "episode_length", 0, ["an integer in [1, inf]"]),
    ("mc_basic", "episodes_per_pair", 0, ["an integer in [1, inf]"]),
    ("mc_exploring_starts", "episodes_per_update", 0, ["an integer in [1, inf]"]),
    ("mc_epsilon_greedy", "episodes_per_update", -3, ["an integer in [1, inf]"]),
    ("n_step_sarsa", "n", 0, ["an integer in [1, inf]"]),
    ("q_learning_off_policy", "behavior_policy", "greedy", ["'uniform', 'epsilon_optimal'"]),
    ("td_linear", "features", "rbf", ["'polynomial', 'fourier'"]),
    ("td_linear", "order", -1, ["an integer in [0, inf]"]),
    ("robbins_monro", "problem", "cubic", ["'tanh', 'mean'"]),
    ("robbins_monro", "noise_std", -1.0, ["[0.0, inf]"]),
    ("robbins_monro", "step_scale", 0.0, ["(0.0, inf]"]),
    ("robbins_monro", "steps_per_update", 0, ["an integer in [1, inf]"]),
    ("sgd_mean_estimation", "method", "adam", ["'sgd', 'mbgd', 'bgd'"]),
    ("sgd_mean_estimation", "sampling", "shuffle", ["'random', 'sequential'"]),
    ("sgd_mean_estimation", "batch_size", 0, ["an integer in [1, inf]"]),
    ("sgd_mean_estimation", "num_samples", 0, ["an integer in [1, inf]"]),
    ("sgd_mean_estimation", "w0", float("inf"), ["a number in [-inf, inf]"]),
    ("value_iteration", "num_updates", 0, ["an integer in [1, inf]"]),
]


@pytest.mark.parametrize("name,field,value,words", BAD,
                         ids=[f"{b[0]}.{b[1]}={b[2]}" for b in BAD])
def test_bad_values_are_refused_with_the_allowed_values(name, field, value, words):
    algo = module(name)
    config = algo.default_config()
    config[field] = value
    with pytest.raises(ValueError) as err:
        config_rules.check(config, algo)
    message = str(err.value)
    assert message.startswith(f"config.{field}={value!r} is not allowed: it must be "), message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("name", ["policy_evaluation", "td_zero", "td_linear"])
@pytest.mark.parametrize("policy", ["uniform", "optimal", ">>>>v/^^>>v/^<v>v/^>o<v/^>^<<",
                                    "0,1,2", "\u2191\u2192/\u25cbo"])
def test_policy_specs_are_allowed(name, policy):
    algo = module(name)
    config = algo.default_config()
    config.policy = policy
    config_rules.check(config, algo)


def test_boundary_values_are_allowed():
    """gamma = 0 (the book's Fig. 3.4c), epsilon 0 and 1, alpha = 1, power = 1."""
    for name, field, value in [("value_iteration", "gamma", 0.0), ("sarsa", "epsilon", 1.0),
                               ("policy_evaluation", "epsilon", 0.0), ("sarsa", "alpha", 1.0),
                               ("td_zero", "alpha_power", 1.0),
                               ("robbins_monro", "step_power", 0.0)]:
        algo = module(name)
        config = algo.default_config()
        config[field] = value
        config_rules.check(config, algo)
