r"""The verifiable-reward task, the decoder, generation and the update loop of the sequence family.

The task ("addition"): prompts "a+b=" with two `num_digits`-digit operands written with leading
zeros (fixed prompt length P = 2 num_digits + 2), answers the digits of a + b without leading
zeros followed by EOS, within a response budget of R = num_digits + 2 tokens. The reward is 1 for
a response equal to the answer (EOS included) and 0 otherwise. All (a, b) pairs are split once
into a held-out test set (`test_size` problems, for evaluation) and a training set (RL prompts
are drawn from it). The reference policy pi_ref is a small decoder-only transformer trained by
teacher forcing on a fraction of the training problems for a few hundred steps, so that RL
starts from a policy that is right sometimes. `make_task` trains it once per process and task
configuration (jitted, a fixed seed) and every seed and method starts from it.

Generation is a jitted `lax.scan` over the R response positions; each step runs the decoder on
the whole fixed-length buffer (P + R tokens; no KV cache at this length) and samples (or takes
the argmax of) the next token. After EOS a response is padded with PAD, and its mask is True
up to and including the EOS.

One `update` of every method: N prompts from the training set, G responses to each sampled
from the current policy (the rollout), log-probabilities of the sampled tokens under the
sampling policy and pi_ref, then `num_epochs` passes of `num_minibatches` Adam steps on the
method's loss (`optimise`). A method module supplies the advantages and the loss.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from algorithms.core import config_rules as rules
from algorithms.core import optim
from algorithms.sequence import losses

DIGITS = 10
PLUS, EQUALS, EOS, PAD = 10, 11, 12, 13
VOCAB_SIZE = 14
PROBLEMS = ("addition",)
SYMBOLS = "0123456789+=$_"  # token id -> character, EOS "$", PAD "_"


# ---------------------------------------------------------------------------- config
def base_config() -> ml_collections.ConfigDict:
    """The fields every method of the family shares; a method overrides its own."""
    c = ml_collections.ConfigDict()
    c.num_updates = 300
    c.log_every = 10  # updates per jitted chunk
    c.eval_every = 30
    c.num_prompts = 16  # N prompts per update
    c.group_size = 8  # G responses per prompt
    c.temperature = 1.0  # sampling temperature of the rollouts
    c.lr = 1e-4  # Adam step size
    c.max_grad_norm = 1.0
    c.num_epochs = 1  # passes over each batch
    c.num_minibatches = 2  # Adam steps per pass
    c.kl_coef = 0.0  # beta of the KL to pi_ref
    c.aggregation = "seq_mean"  # losses.AGGREGATIONS
    c.norm_constant = 0.0  # C of "seq_sum_norm"; 0 = the response budget R
    c.task = ml_collections.ConfigDict()
    c.task.num_digits = 2  # operand digits
    c.task.test_size = 512  # held-out problems for evaluation
    c.task.split_seed = 0
    c.task.warmstart_fraction = 0.3  # share of the training problems pi_ref is fitted on
    c.task.warmstart_steps = 250
    c.task.warmstart_batch = 128
    c.task.warmstart_lr = 1e-3
    c.task.warmstart_seed = 0
    c.model = ml_collections.ConfigDict()
    c.model.d_model = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.mlp_ratio = 4
    return c


# Allowed values of the shared fields (algorithms/core/config_rules.py; `num_*`, `lr`,
# `kl_coef`, `*_every` and `max_grad_norm` are covered by the shared vocabulary).
RULES = {
    "group_size": rules.in_range(2, integer=True),
    "temperature": rules.positive,
    "aggregation": rules.one_of(*losses.AGGREGATIONS),
    "norm_constant": rules.non_negative,
    "task.num_digits": rules.in_range(1, 3, integer=True),
    "task.test_size": rules.count,
    "task.split_seed": rules.non_negative_count,
    "task.warmstart_fraction": rules.in_range(0.0, 1.0, low_open=True),
    "task.warmstart_steps": rules.count,
    "task.warmstart_batch": rules.count,
    "task.warmstart_lr": rules.positive,
    "task.warmstart_seed": rules.non_negative_count,
    "model.d_model": rules.count,
    "model.mlp_ratio": rules.count,
}


def _minibatches_divide_batch(config) -> str | None:
    batch = config.num_prompts * config.group_size
    if batch % config.num_minibatches:
        return (f"num_prompts * group_size = {batch} is not divisible by "
                f"num_minibatches = {config.num_minibatches}")
    return None


def _heads_divide_width(config) -> str | None:
    if config.model.d_model % config.model.num_heads:
        return (f"model.d_model = {config.model.d_model} is not divisible by "
                f"model.num_heads = {config.model.num_heads}")
    return None


def _test_set_leaves_training_problems(config) -> str | None:
    problems = 100 ** config.task.num_digits
    if config.task.test_size >= problems:
        return (f"task.test_size = {config.task.test_size} leaves no training problems "
                f"(there are {problems})")
    return None


CHECKS = (_minibatches_divide_batch, _heads_divide_width, _test_set_leaves_training_problems)


# ---------------------------------------------------------------------------- problems
def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """[N] non-negative ints -> [N, width] digit tokens, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    return (values[:, None] // powers) % 10


def addition_problems(num_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """Every "a+b=" with a, b < 10^num_digits: prompts [N, 2d+2] and answers [N, d+2] (the sum's
    digits without leading zeros, EOS, PAD), N = 10^(2d), int32."""
    n = 10 ** num_digits
    a, b = (x.reshape(-1) for x in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    prompts = np.concatenate([_digits(a, num_digits), np.full((n * n, 1), PLUS),
                              _digits(b, num_digits), np.full((n * n, 1), EQUALS)], axis=1)
    total = a + b
    width = num_digits + 1
    length = np.maximum(1, np.floor(np.log10(np.maximum(total, 1))).astype(int) + 1)
    digits = _digits(total, width)
    answers = np.full((n * n, width + 1), PAD)
    for i in range(n * n):  # left-align the digits of the sum
        answers[i, :length[i]] = digits[i, width - length[i]:]
        answers[i, length[i]] = EOS
    return prompts.astype(np.int32), answers.astype(np.int32)


def decode(tokens) -> str:
    """Token ids -> text, e.g. "07+35=42$__" ($ = EOS, _ = PAD)."""
    return "".join(SYMBOLS[int(t)] for t in np.asarray(tokens).reshape(-1))


# ---------------------------------------------------------------------------- the decoder
class Decoder(nn.Module):
    """Decoder-only transformer (pre-LayerNorm, learned positions) with a value head.

    tokens [B, L] int -> (logits [B, L, vocab] for the next token, values [B, L]), position l
    seeing tokens 0..l only. The value head (zero-initialised) is trained by PPO alone.
    """
    vocab_size: int
    max_len: int
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        length = tokens.shape[-1]
        x = nn.Embed(self.vocab_size, self.d_model)(tokens)
        positions = self.param("positions", nn.initializers.normal(0.02),
                               (self.max_len, self.d_model))
        x = x + positions[:length]
        causal = nn.make_causal_mask(tokens)
        for _ in range(self.num_layers):
            h = nn.LayerNorm()(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                                    qkv_features=self.d_model)(h, h, mask=causal)
            h = nn.LayerNorm()(x)
            x = x + nn.Dense(self.d_model)(nn.gelu(nn.Dense(self.mlp_ratio * self.d_model)(h)))
        x = nn.LayerNorm()(x)
        logits = nn.Dense(self.vocab_size)(x)
        values = nn.Dense(1, kernel_init=nn.initializers.zeros)(x)[..., 0]
        return logits, values


def _decoder(model_config, max_len: int) -> Decoder:
    m = model_config
    return Decoder(VOCAB_SIZE, max_len, int(m.d_model), int(m.num_layers), int(m.num_heads),
                   int(m.mlp_ratio))


def build_model(config, task) -> Decoder:
    """The policy network of config.model for the task's sequence length."""
    return _decoder(config.model, task.prompt_len + task.response_len)


def response_outputs(model: Decoder, params, tokens: jax.Array, prompt_len: int):
    """(logits [B, R, V], values [B, R]) at the positions that predict the R response tokens
    of tokens [B, P + R]: the distribution of response token t and V(prompt, o_<t)."""
    logits, values = model.apply(params, tokens)
    return logits[:, prompt_len - 1:-1], values[:, prompt_len - 1:-1]


def response_mask(response: jax.Array) -> jax.Array:
    """[B, R] bool: True up to and including the first EOS (everything without an EOS)."""
    eos_before = jnp.cumsum(response == EOS, axis=1) - (response == EOS)
    return eos_before == 0


def generate(model: Decoder, params, prompts: jax.Array, response_len: int,
             key: jax.Array | None = None, temperature: float = 1.0) -> jax.Array:
    """Responses [B, R] int32 to prompts [B, P]: sampled at `temperature` with a key, greedy
    (argmax) without. Tokens after the first EOS are PAD."""
    batch, prompt_len = prompts.shape
    buffer = jnp.concatenate(
        [prompts.astype(jnp.int32), jnp.full((batch, response_len), PAD, jnp.int32)], axis=1)
    keys = (jax.random.split(key, response_len) if key is not None
            else jnp.zeros((response_len,), jnp.uint32))  # greedy: scanned over, never read

    def step(carry, inputs):
        buffer, done = carry
        t, step_key = inputs
        logits, _ = model.apply(params, buffer)
        logits = jax.lax.dynamic_index_in_dim(logits, prompt_len - 1 + t, axis=1,
                                              keepdims=False)
        if key is None:
            token = jnp.argmax(logits, axis=-1)
        else:
            token = jax.random.categorical(step_key, logits / temperature, axis=-1)
        token = jnp.where(done, PAD, token).astype(jnp.int32)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, token, prompt_len + t, axis=1)
        return (buffer, done | (token == EOS)), None

    (buffer, _), _ = jax.lax.scan(step, (buffer, jnp.zeros((batch,), bool)),
                                  (jnp.arange(response_len), keys))
    return buffer[:, prompt_len:]


def correct(response: jax.Array, answers: jax.Array) -> jax.Array:
    """[B] float32: 1 where the response equals the answer token for token (EOS, PAD after)."""
    return jnp.all(response == answers, axis=1).astype(jnp.float32)


# ---------------------------------------------------------------------------- the task
@struct.dataclass
class Task:
    """Problems and the reference policy; arrays are shared by all seeds (one copy)."""
    ref_params: Any  # pi_ref, the supervised warm start
    train_prompts: jax.Array  # [N_train, P] int32
    train_answers: jax.Array  # [N_train, R] int32
    test_prompts: jax.Array  # [N_test, P]
    test_answers: jax.Array  # [N_test, R]
    name: str = struct.field(pytree_node=False, default="addition")
    prompt_len: int = struct.field(pytree_node=False, default=6)
    response_len: int = struct.field(pytree_node=False, default=4)
    warmstart_size: int = struct.field(pytree_node=False, default=0)


def _warm_start(model: Decoder, prompts: np.ndarray, answers: np.ndarray, task_config):
    """pi_ref: Adam on the teacher-forced cross-entropy of the answers (EOS included)."""
    tc = task_config
    prompts, answers = jnp.asarray(prompts), jnp.asarray(answers)
    tokens = jnp.concatenate([prompts, answers], axis=1)
    mask = response_mask(answers)
    prompt_len = prompts.shape[1]
    init_key, data_key = jax.random.split(jax.random.key(int(tc.warmstart_seed)))
    params = model.init(init_key, tokens[:1])
    opt = optax.adam(float(tc.warmstart_lr))

    def loss_fn(params, idx):
        logits, _ = response_outputs(model, params, tokens[idx], prompt_len)
        nll = -losses.token_log_probs(logits, answers[idx])
        return losses.masked_mean(nll, mask[idx])

    def step(carry, key):
        params, opt_state = carry
        idx = jax.random.randint(key, (int(tc.warmstart_batch),), 0, tokens.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(params, idx)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def train(params, key):
        carry, loss = jax.lax.scan(step, (params, opt.init(params)),
                                   jax.random.split(key, int(tc.warmstart_steps)))
        return carry[0], loss

    params, _ = train(params, data_key)
    return params


@functools.lru_cache(maxsize=4)
def _cached_task(name: str, task_json: str, model_json: str) -> Task:
    tc = ml_collections.ConfigDict(json.loads(task_json))
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem family {name!r}; valid: {', '.join(PROBLEMS)}")
    prompts, answers = addition_problems(int(tc.num_digits))
    order = np.random.default_rng(int(tc.split_seed)).permutation(len(prompts))
    test, train = order[:int(tc.test_size)], order[int(tc.test_size):]
    warm = train[:max(1, int(round(float(tc.warmstart_fraction) * len(train))))]
    model = _decoder(ml_collections.ConfigDict(json.loads(model_json)),
                     prompts.shape[1] + answers.shape[1])
    ref_params = _warm_start(model, prompts[warm], answers[warm], tc)
    return Task(ref_params=ref_params, train_prompts=jnp.asarray(prompts[train]),
                train_answers=jnp.asarray(answers[train]), test_prompts=jnp.asarray(prompts[test]),
                test_answers=jnp.asarray(answers[test]), name=name,
                prompt_len=prompts.shape[1], response_len=answers.shape[1],
                warmstart_size=len(warm))


def make_task(name: str | None, config) -> Task:
    """The problem family `name` ("addition") with its reference policy, built once per process
    for a given config.task / config.model (all seeds and methods share it)."""
    return _cached_task(name or PROBLEMS[0], config.task.to_json(sort_keys=True),
                        config.model.to_json(sort_keys=True))


# ---------------------------------------------------------------------------- state
@struct.dataclass
class State:
    params: Any  # the policy (and PPO's value head), initialised to pi_ref
    opt_state: Any
    key: jax.Array
    step: jax.Array  # int32, updates done
    hparams: dict  # lr and kl_coef (0 where a method has none) as float32 scalars


SWEEPABLE = ("lr", "kl_coef")


def _optimizer(config) -> optax.GradientTransformation:
    return optim.optimizer(config.lr, max_grad_norm=config.max_grad_norm)


def init(key, config, task: Task) -> State:
    """One seed's State: the policy starts as pi_ref (a copy of the task's parameters)."""
    params = jax.tree.map(jnp.array, task.ref_params)
    message = _minibatches_divide_batch(config)
    if message:
        raise ValueError(message)
    if config.get("aggregation", "seq_mean") not in losses.AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {losses.AGGREGATIONS}, "
                         f"got {config.aggregation!r}")
    return State(params=params, opt_state=_optimizer(config).init(params), key=key,
                 step=jnp.int32(0), hparams={name: jnp.float32(config.get(name, 0.0))
                                             for name in SWEEPABLE})


# ---------------------------------------------------------------------------- rollouts
class Batch(struct.PyTreeNode):
    """One update's responses, [B = num_prompts * group_size, ...], prompt-major."""
    tokens: jax.Array  # [B, P + R] prompt and response
    mask: jax.Array  # [B, R] bool, the response tokens up to EOS
    rewards: jax.Array  # [B]
    old_log_probs: jax.Array  # [B, R] under the sampling policy
    ref_log_probs: jax.Array  # [B, R] under pi_ref
    old_values: jax.Array  # [B, R] the sampling policy's value head
    advantages: jax.Array  # [B, R], filled in by the method
    targets: jax.Array  # [B, R] value targets (PPO), zeros otherwise
    baseline: jax.Array  # [B] the method's per-response baseline (metrics; Kimi's tau log Z)


def rollout(state: State, key: jax.Array, config, task: Task) -> tuple[Batch, dict]:
    """G sampled responses to each of N random training prompts, scored; (batch, metrics)."""
    model = build_model(config, task)
    k_prompts, k_sample = jax.random.split(key)
    idx = jax.random.randint(k_prompts, (config.num_prompts,), 0, task.train_prompts.shape[0])
    idx = jnp.repeat(idx, config.group_size)
    prompts = task.train_prompts[idx]
    response = generate(model, state.params, prompts, task.response_len, k_sample,
                        config.temperature)
    tokens = jnp.concatenate([prompts, response], axis=1)
    mask = response_mask(response)
    logits, values = response_outputs(model, state.params, tokens, task.prompt_len)
    old_log_probs = losses.token_log_probs(logits, response)
    ref_logits, _ = response_outputs(model, task.ref_params, tokens, task.prompt_len)
    ref_log_probs = losses.token_log_probs(ref_logits, response)
    rewards = correct(response, task.train_answers[idx])
    zeros = jnp.zeros_like(old_log_probs)
    batch = Batch(tokens=tokens, mask=mask, rewards=rewards, old_log_probs=old_log_probs,
                  ref_log_probs=ref_log_probs, old_values=values, advantages=zeros,
                  targets=zeros, baseline=jnp.zeros_like(rewards))
    groups = rewards.reshape(-1, config.group_size)
    kl = losses.kl_k3(old_log_probs, ref_log_probs)
    metrics = {
        "reward": rewards.mean(),
        "kl_ref": jnp.mean(jnp.sum(jnp.where(mask, kl, 0.0), axis=1)),  # nats per response
        "response_length": jnp.mean(jnp.sum(mask, axis=1).astype(jnp.float32)),
        "entropy": losses.masked_mean(losses.token_entropy(logits), mask),  # nats per token
        "uniform_groups": jnp.mean(jnp.all(groups == groups[:, :1], axis=1)
                                   .astype(jnp.float32)),  # groups with zero advantage
    }
    return batch, metrics


def group_rewards(batch: Batch, config) -> jax.Array:
    """The batch's rewards as [num_prompts, group_size]."""
    return batch.rewards.reshape(-1, config.group_size)


def norm_constant(config, task: Task) -> float:
    return float(config.norm_constant) or float(task.response_len)


LossFn = Callable[[jax.Array, jax.Array, Batch, dict], tuple[jax.Array, dict]]


def optimise(state: State, batch: Batch, loss_fn: LossFn, config, task: Task,
             key: jax.Array) -> tuple[State, dict]:
    """`num_epochs` x `num_minibatches` Adam steps on loss_fn(log_probs, values, minibatch,
    hparams) -> (loss, aux); minibatches are random splits of the batch's responses."""
    model = build_model(config, task)
    response = batch.tokens[:, task.prompt_len:]
    size = batch.rewards.shape[0]
    mb_size = size // config.num_minibatches
    tx = _optimizer(config)

    def objective(params, mb: Batch, mb_response):
        logits, values = response_outputs(model, params, mb.tokens, task.prompt_len)
        return loss_fn(losses.token_log_probs(logits, mb_response), values, mb, state.hparams)

    grad_fn = jax.grad(objective, has_aux=True)

    def minibatch_step(carry, mb):
        params, opt_state = carry
        grads, aux = grad_fn(params, *mb)
        aux["grad_norm"] = optax.tree.norm(grads)
        params, opt_state = optim.apply_updates(tx, opt_state, params, grads,
                                                learning_rate=state.hparams["lr"])
        return (params, opt_state), aux

    def epoch(carry, epoch_key):
        perm = jax.random.permutation(epoch_key, size)
        mbs = jax.tree.map(lambda x: x[perm].reshape((config.num_minibatches, mb_size)
                                                     + x.shape[1:]), (batch, response))
        return jax.lax.scan(minibatch_step, carry, mbs)

    (params, opt_state), aux = jax.lax.scan(epoch, (state.params, state.opt_state),
                                            jax.random.split(key, config.num_epochs))
    state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return state, {k: v.mean() for k, v in aux.items()}


def policy_update(state: State, config, task: Task,
                  prepare: Callable[[Batch, dict, Any, Task], Batch], loss_fn: LossFn):
    """One update: rollout, prepare(batch, hparams, config, task) (fills in the advantages and
    the method's other fields), `optimise`."""
    key, k_roll, k_opt = jax.random.split(state.key, 3)
    batch, metrics = rollout(state, k_roll, config, task)
    batch = prepare(batch, state.hparams, config, task)
    state, aux = optimise(state.replace(key=key), batch, loss_fn, config, task, k_opt)
    metrics.update(aux)
    return state, metrics


# ---------------------------------------------------------------------------- acting & evaluation
def act(state: State, obs: jax.Array, config, task: Task, key=None) -> jax.Array:
    """Responses [B, R] to prompts obs [B, P] (int tokens): greedy without a key, sampled at
    `config.temperature` with one."""
    return generate(build_model(config, task), state.params, obs, task.response_len, key,
                    config.temperature)


def evaluate(state: State, key, config, task: Task) -> dict:
    """Accuracy on the held-out problems, greedy and with one sample each; the sampled
    responses' KL to pi_ref (k3 summed over tokens, nats per response) and lengths."""
    model = build_model(config, task)
    greedy = act(state, task.test_prompts, config, task)
    sampled = act(state, task.test_prompts, config, task, key)
    tokens = jnp.concatenate([task.test_prompts, sampled], axis=1)
    logits, _ = response_outputs(model, state.params, tokens, task.prompt_len)
    ref_logits, _ = response_outputs(model, task.ref_params, tokens, task.prompt_len)
    mask = response_mask(sampled)
    kl = losses.kl_k3(losses.token_log_probs(logits, sampled),
                      losses.token_log_probs(ref_logits, sampled))
    return {"accuracy_greedy": correct(greedy, task.test_answers).mean(),
            "accuracy_sampled": correct(sampled, task.test_answers).mean(),
            "kl_ref": jnp.mean(jnp.sum(jnp.where(mask, kl, 0.0), axis=1)),
            "response_length": jnp.mean(jnp.sum(mask, axis=1).astype(jnp.float32))}
