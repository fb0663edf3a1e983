"""The sequence family's task and methods: problems, generation, the protocol, a learning run.

Compiles dominate on a loaded 2-core machine, so the protocol checks use a tiny decoder (one
layer, width 32, a 300-step warm start that is right on a few percent of the problems) compiled
at XLA optimization level 0, and compile one update program per distinct loss (dr_grpo and dapo
are grpo's update with other defaults, rloo is reinforce_seq's); the learning test trains GRPO
from the default warm start through the runner.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.core import config_rules
from algorithms.sequence import common, grpo
from launch import registry, runner

MODULES = ("grpo", "dr_grpo", "dapo", "rloo", "reinforce_seq", "ppo_seq", "kimi_k15")
COMPILED = ("grpo", "reinforce_seq", "ppo_seq", "kimi_k15")  # one per update program
_CHUNKS = {}


def _two_update_chunk(name, algo, config, task, state):
    """`algo`'s vmapped chunk of 2 updates, compiled once per module for `state`'s shapes at
    XLA CPU optimization level 0 (about half the compile time of the default level)."""
    if name not in _CHUNKS:
        chunk = jax.jit(lambda s: jax.lax.scan(
            lambda c, _: jax.vmap(lambda x: algo.update(x, config, task))(c), s, None,
            length=2))
        _CHUNKS[name] = chunk.lower(state).compile(
            compiler_options={"xla_backend_optimization_level": 0})
    return _CHUNKS[name](state)


def _tiny(config):
    config.model.d_model, config.model.num_layers, config.model.num_heads = 32, 1, 2
    config.model.mlp_ratio = 2
    config.task.warmstart_steps, config.task.warmstart_batch = 300, 64
    config.task.warmstart_lr = 3e-3
    config.task.test_size = 64
    config.num_prompts, config.group_size = 8, 4
    return config


# ---------------------------------------------------------------------------- problems
def test_addition_problems_are_correct():
    prompts, answers = common.addition_problems(2)
    assert prompts.shape == (10_000, 6) and answers.shape == (10_000, 4)
    assert common.decode(prompts[1234]) + common.decode(answers[1234]) == "12+34=46$_"
    assert common.decode(answers[9999]) == "198$" and common.decode(answers[0]) == "0$__"
    for i in np.random.default_rng(0).choice(10_000, 200, replace=False):
        text = common.decode(prompts[i])
        a, b = int(text[:2]), int(text[3:5])
        assert common.decode(answers[i]).rstrip("_") == f"{a + b}$"


def test_response_mask_and_reward():
    E, P = common.EOS, common.PAD
    response = jnp.array([[4, 2, E, P], [1, 9, 8, E], [3, 3, 3, 3], [E, P, P, P]])
    np.testing.assert_array_equal(common.response_mask(response),
                                  [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]])
    answers = jnp.array([[4, 2, E, P], [1, 9, 8, E], [3, 3, E, P], [0, E, P, P]])
    np.testing.assert_array_equal(common.correct(response, answers), [1, 1, 0, 0])


@pytest.fixture(scope="module")
def tiny():
    config = _tiny(grpo.default_config())
    task = common.make_task("addition", config)
    return config, task


def test_make_task_is_cached_and_split(tiny):
    config, task = tiny
    assert common.make_task("addition", config) is task
    assert task.test_prompts.shape == (64, 6) and task.train_prompts.shape == (10_000 - 64, 6)
    test = {common.decode(p) for p in np.asarray(task.test_prompts)}
    train = {common.decode(p) for p in np.asarray(task.train_prompts)}
    assert not test & train  # held-out problems are never trained on
    assert task.warmstart_size == round(0.3 * (10_000 - 64))
    with pytest.raises(ValueError, match="unknown problem"):
        common.make_task("sorting", config)


def test_generation_greedy_sampled_and_padding(tiny):
    config, task = tiny
    state = grpo.init(jax.random.key(0), config, task)
    prompts = task.test_prompts[:16]
    act = jax.jit(lambda s, p, k: grpo.act(s, p, config, task, k))
    greedy = jax.jit(lambda s, p: grpo.act(s, p, config, task))(state, prompts)
    assert greedy.shape == (16, task.response_len) and greedy.dtype == jnp.int32
    # The greedy response is the argmax of the decoder at every response position.
    model = common.build_model(config, task)
    tokens = jnp.concatenate([prompts, greedy], axis=1)
    logits, _ = common.response_outputs(model, state.params, tokens, task.prompt_len)
    mask = common.response_mask(greedy)
    assert np.all(np.asarray(jnp.argmax(logits, -1) == greedy)[np.asarray(mask)])
    sampled = act(state, prompts, jax.random.key(1))
    assert np.any(np.asarray(sampled != greedy))
    np.testing.assert_array_equal(sampled, act(state, prompts, jax.random.key(1)))
    after_eos = np.asarray(~common.response_mask(sampled))
    assert np.all(np.asarray(sampled)[after_eos] == common.PAD)


# ---------------------------------------------------------------------------- every method
@pytest.mark.parametrize("name", MODULES)
def test_protocol_and_defaults(name, tiny):
    algo = importlib.import_module(f"algorithms.sequence.{name}")
    registry.check_protocol(algo)
    assert algo.TASK_FLAG == "dataset" and algo.DEFAULT_TASK == "addition"
    assert algo.PRIMARY_METRIC == "eval/accuracy_greedy"
    assert set(algo.SWEEPABLE) == ({"lr"} if name == "kimi_k15" else {"lr", "kl_coef"})
    assert config_rules.uncovered(algo.default_config(), algo) == []
    config_rules.check(algo.default_config(), algo)
    config = _tiny(algo.default_config())
    assert common.make_task("addition", config) is tiny[1]  # one warm start for every method
    state = algo.init(jax.random.key(0), config, tiny[1])
    assert float(state.hparams["kl_coef"]) == pytest.approx(config.get("kl_coef", 0.0))
    expected = {"dapo": dict(clip_eps_high=0.28, aggregation="token_mean", kl_coef=0.0),
                "dr_grpo": dict(advantage="dr_grpo", aggregation="seq_sum_norm", kl_coef=0.0),
                "rloo": dict(baseline="leave_one_out", kl_coef=0.04),
                "grpo": dict(advantage="grpo", aggregation="seq_mean", kl_coef=0.04)}
    for field, value in expected.get(name, {}).items():
        assert config[field] == value, (name, field)


@pytest.mark.parametrize("name", COMPILED)
def test_two_updates(name, tiny):
    """Two vmapped updates from pi_ref give finite metrics, the family's logged quantities,
    and move the policy."""
    algo = importlib.import_module(f"algorithms.sequence.{name}")
    config = _tiny(algo.default_config())
    task = tiny[1]
    state = jax.vmap(lambda k: algo.init(k, config, task))(jax.random.split(jax.random.key(0), 2))
    new, metrics = _two_update_chunk(name, algo, config, task, state)
    for key in ("reward", "kl_ref", "response_length", "entropy", "loss", "grad_norm"):
        assert metrics[key].shape == (2, 2) and np.all(np.isfinite(metrics[key])), key
    np.testing.assert_allclose(metrics["kl_ref"][0], 0.0, atol=1e-5)  # sampled from pi_ref
    assert np.all(metrics["uniform_groups"] < 1)  # some groups carry a learning signal
    if name in ("grpo", "ppo_seq"):
        assert np.all(np.isfinite(metrics["clip_frac"]))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)))
    assert moved > 0
    assert np.all(np.asarray(new.step) == 2)


def test_kl_coef_is_a_traced_hyperparameter(tiny):
    """Same key, kl_coef 0.04 vs 5.0 in one vmapped program: different parameters after the
    second update (the first starts at pi_ref, where the KL term has no gradient)."""
    config, task = tiny
    key = jax.random.key(4)
    state = jax.vmap(lambda k: grpo.init(k, config, task))(jnp.stack([key, key]))
    hp = dict(state.hparams)
    hp["kl_coef"] = hp["kl_coef"].at[1].set(5.0)
    twice, _ = _two_update_chunk("grpo", grpo, config, task, state.replace(hparams=hp))
    w = jax.tree.leaves(twice.params)
    assert max(float(jnp.max(jnp.abs(x[0] - x[1]))) for x in w) > 0


def test_bad_options_are_rejected(tiny):
    config, task = tiny
    for name, field, value, words in (("grpo", "group_size", 1, "[2, inf]"),
                                      ("grpo", "aggregation", "sum", "'token_mean'"),
                                      ("kimi_k15", "log_z_estimator", "max", "'logmeanexp'"),
                                      ("ppo_seq", "num_minibatches", 3, "not divisible")):
        algo = importlib.import_module(f"algorithms.sequence.{name}")
        bad = algo.default_config()
        bad[field] = value
        with pytest.raises(ValueError, match="not allowed|not divisible") as error:
            config_rules.check(bad, algo)
        assert words in str(error.value)
    kimi = importlib.import_module("algorithms.sequence.kimi_k15")
    ok = kimi.default_config()
    ok.tau = 5.0  # Kimi's tau is not a Polyak rate: any tau > 0
    config_rules.check(ok, kimi)
    bad = _tiny(grpo.default_config())
    bad.aggregation = "sum"
    with pytest.raises(ValueError, match="aggregation"):
        grpo.init(jax.random.key(0), bad, task)
    bad = _tiny(grpo.default_config())
    bad.num_minibatches = 3
    with pytest.raises(ValueError, match="num_minibatches"):
        grpo.init(jax.random.key(0), bad, task)


# ---------------------------------------------------------------------------- learning
def test_grpo_improves_on_the_warm_start():
    """GRPO from the default warm start, 2 seeds x 60 updates through the runner: held-out
    accuracy rises above pi_ref's on both seeds, greedy and (by more) with one sample."""
    config = grpo.default_config()
    config.num_updates, config.log_every, config.eval_every = 60, 30, 60
    task = grpo.make_task("addition", config)
    state = grpo.init(jax.random.key(0), config, task)
    before = jax.jit(lambda s, k: grpo.evaluate(s, k, config, task))(state, jax.random.key(1))
    result = runner.train(grpo, config, task, num_seeds=2, progress=False)
    greedy = np.asarray(result.final["eval/accuracy_greedy"])
    sampled = np.asarray(result.final["eval/accuracy_sampled"])
    assert 0.3 < float(before["accuracy_greedy"]) < 0.8
    assert np.all(greedy > float(before["accuracy_greedy"])), (before, greedy)
    assert np.all(sampled > float(before["accuracy_sampled"]) + 0.04), (before, sampled)
    assert np.all(np.asarray(result.final["eval/kl_ref"]) > 0)
    assert np.all(np.asarray(result.final["eval/response_length"]) > 2)
