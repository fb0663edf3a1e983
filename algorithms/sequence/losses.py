r"""Policy-optimisation losses for sequence models, as pure functions over plain arrays.

Nothing here knows about a model: every function takes token log-probabilities that some model
produced, rewards and a response mask, so it drops into any JAX language-model trainer.

Conventions (all functions):
  * `log_probs`, `old_log_probs`, `ref_log_probs`: [B, T] log pi(o_t | q, o_<t) of the tokens
    that were sampled, under the policy being trained (pi_theta), the policy that sampled them
    (pi_theta_old) and the frozen reference policy (pi_ref). Row b is one response.
  * `mask`: [B, T], bool or 0/1; True on the response tokens that count (prompt tokens and the
    padding after the end of a response are False). Every per-token function replaces the
    values under a False mask by zeros BEFORE computing anything, so what stands there
    (padding garbage, even inf or NaN) changes neither the value nor the gradient.
  * Group functions take rewards [..., G]: the last axis holds the G responses to one prompt.
    A flat batch of N prompts x G samples, prompt-major, is `rewards.reshape(N, G)`.
  * Losses are returned as quantities to MINIMISE (negated objectives); per-token losses are
    [B, T] with zeros under the mask, reduced by `aggregate_tokens`.
  * Hyperparameters are keyword-only and may be traced scalars. float32 and float64 inputs
    keep their dtype. None of the functions is jitted: the caller jits, vmaps and grads.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from algorithms.core.returns import gae

AGGREGATIONS = ("seq_mean", "token_mean", "seq_sum_norm")
KIMI_ESTIMATORS = ("logmeanexp", "mean")


# ---------------------------------------------------------------------------- masks
def _bool_mask(mask: jax.Array) -> jax.Array:
    return mask if mask.dtype == jnp.bool_ else mask != 0


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
    """x with zeros under the mask (the mask broadcast to x's shape)."""
    return jnp.where(_bool_mask(mask), x, jnp.zeros_like(x))


def _check_tokens(mask: jax.Array, *arrays: jax.Array) -> None:
    chex.assert_rank(mask, 2)
    chex.assert_rank(list(arrays), 2)
    chex.assert_equal_shape([mask, *arrays])


def _token_advantages(advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """Sequence advantages [B] broadcast over the tokens, or token advantages [B, T] as given."""
    chex.assert_rank(advantages, {1, 2})
    if advantages.ndim == 1:
        chex.assert_axis_dimension(advantages, 0, mask.shape[0])
        return jnp.broadcast_to(advantages[:, None], mask.shape)
    chex.assert_equal_shape([advantages, mask])
    return advantages


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x over the True entries of mask (0 when there are none). Scalar."""
    chex.assert_equal_shape([x, mask])
    count = jnp.sum(_bool_mask(mask))
    return jnp.sum(_masked(x, mask)) / jnp.maximum(count, 1).astype(x.dtype)


def masked_whiten(x: jax.Array, mask: jax.Array, *, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / (std + eps) with the statistics over the True entries; zeros elsewhere.

    The per-batch advantage normalisation of PPO implementations, restricted to response tokens.
    """
    x = _masked(x, mask)
    mean = masked_mean(x, mask)
    centred = _masked(x - mean, mask)
    std = jnp.sqrt(masked_mean(jnp.square(centred), mask))
    return centred / (std + eps)


# ---------------------------------------------------------------------------- group baselines
def _group_size(rewards: jax.Array) -> int:
    chex.assert_rank(rewards, {1, 2, 3})
    return rewards.shape[-1]


def _group_centred(rewards: jax.Array) -> jax.Array:
    """r - mean(r) within each group, exactly 0 where a group's rewards are all equal.

    The mean is taken of the deviations from the group's first reward: when all rewards are
    equal those deviations are exactly 0, and so is everything computed from them. (A plain
    r - mean(r) is not: the float mean of G copies of 0.1 need not round to 0.1.)
    """
    shifted = rewards - rewards[..., :1]
    return shifted - jnp.mean(shifted, axis=-1, keepdims=True)


def grpo_advantages(rewards: jax.Array, *, eps: float = 1e-4, ddof: int = 0) -> jax.Array:
    """Group-normalised advantages of GRPO's outcome supervision (Shao et al. 2024, DeepSeekMath,
    Sec. 4.1.2):  A_i = (r_i - mean(r)) / (std(r) + eps)  within each group of G responses.

    Args:
      rewards: [..., G] one scalar reward per response, groups on the last axis.
      eps: added to the standard deviation (keyword-only).
      ddof: 0 for the population standard deviation of the G rewards, 1 for the sample one.
    Returns: [..., G], the same advantage for every token of response i. A group whose rewards
      are all equal gets exactly 0 (for any reward value and dtype).
    """
    g = _group_size(rewards)
    if g - ddof < 1:
        raise ValueError(f"a group of {g} rewards has no standard deviation with ddof={ddof}")
    centred = _group_centred(rewards)
    std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=-1, keepdims=True) / (g - ddof))
    return centred / (std + eps)


def rloo_advantages(rewards: jax.Array) -> jax.Array:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, "Back to Basics", after Kool
    et al. 2019):  A_i = r_i - 1/(G-1) sum_{j != i} r_j  =  G/(G-1) (r_i - mean(r)).

    The baseline of sample i uses only the other G-1 samples, so the gradient estimate stays
    unbiased. rewards: [..., G] with G >= 2. Returns [..., G]; exactly 0 for equal rewards.
    """
    g = _group_size(rewards)
    if g < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per group")
    return _group_centred(rewards) * (g / (g - 1))


def dr_grpo_advantages(rewards: jax.Array) -> jax.Array:
    """Mean-centred group advantages of Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like
    Training"):  A_i = r_i - mean(r), without GRPO's division by std(r), which weights prompts
    by how consistent their rewards are. rewards: [..., G]. Returns [..., G]; exactly 0 for
    equal rewards.
    """
    _group_size(rewards)
    return _group_centred(rewards)


# ---------------------------------------------------------------------------- KL estimators
# Schulman (2020), "Approximating KL divergence": samples x ~ p, estimates of KL[p || q] from
# log p(x) and log q(x). k1 is unbiased with high variance and can be negative; k2 is biased,
# low-variance, >= 0; k3 is unbiased, >= 0 and low-variance. With p = pi_theta and q = pi_ref
# they estimate KL[pi_theta || pi_ref] per token, the direction of DeepSeekMath Eq. 4.
def kl_k1(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """k1 = log p - log q (elementwise, any shape; samples from p). Unbiased for KL[p || q]."""
    chex.assert_equal_shape([log_p, log_q])
    return log_p - log_q


def kl_k2(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """k2 = (log p - log q)^2 / 2 (elementwise; samples from p). Biased for KL[p || q], >= 0."""
    chex.assert_equal_shape([log_p, log_q])
    return 0.5 * jnp.square(log_p - log_q)


def kl_k3(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """k3 = q/p - log(q/p) - 1 = exp(log q - log p) - (log q - log p) - 1 (elementwise; samples
    from p). Unbiased for KL[p || q] and >= 0 sample by sample; the estimator GRPO uses for
    D_KL[pi_theta || pi_ref] (DeepSeekMath Eq. 4, p = pi_theta, q = pi_ref).

    d k3 / d log p = 1 - q/p: the penalty pulls log p down where p > q and up where p < q.
    """
    chex.assert_equal_shape([log_p, log_q])
    log_ratio = log_q - log_p
    return jnp.expm1(log_ratio) - log_ratio


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


# ---------------------------------------------------------------------------- aggregation
def aggregate_tokens(token_losses: jax.Array, mask: jax.Array, *, mode: str = "seq_mean",
                     norm_constant: float | None = None) -> jax.Array:
    """Reduces per-token losses [B, T] to a scalar, the way the papers differ on:

        "seq_mean"     1/B sum_i 1/|o_i| sum_t l_it   mean over each response, then over the
                       batch (GRPO, DeepSeekMath Eq. 3)
        "token_mean"   1/sum_i |o_i| sum_i sum_t l_it  every token weighs the same (DAPO, Yu et
                       al. 2025, Sec. 3.3)
        "seq_sum_norm" 1/B sum_i 1/C sum_t l_it   sum over each response divided by a constant C,
                       `norm_constant` (default T, the generation budget), removing the length
                       bias of 1/|o_i| (Dr. GRPO, Liu et al. 2025)

    |o_i| is the number of True mask entries of row i; rows with none count as length 1 in
    "seq_mean" (and contribute 0). Returns a scalar of token_losses' dtype.
    """
    _check_tokens(mask, token_losses)
    losses = _masked(token_losses, mask)
    lengths = jnp.sum(_bool_mask(mask), axis=1).astype(losses.dtype)
    if mode == "seq_mean":
        return jnp.mean(jnp.sum(losses, axis=1) / jnp.maximum(lengths, 1.0))
    if mode == "token_mean":
        return jnp.sum(losses) / jnp.maximum(jnp.sum(lengths), 1.0)
    if mode == "seq_sum_norm":
        constant = losses.shape[1] if norm_constant is None else norm_constant
        return jnp.mean(jnp.sum(losses, axis=1)) / constant
    raise ValueError(f"aggregation mode must be one of {AGGREGATIONS}, got {mode!r}")


# ---------------------------------------------------------------------------- surrogates
def clipped_token_surrogate(log_probs: jax.Array, old_log_probs: jax.Array,
                            advantages: jax.Array, mask: jax.Array, *, eps_low: float = 0.2,
                            eps_high: float | None = None) -> jax.Array:
    """Negated clipped surrogate per token, with DAPO's decoupled clip range.

        rho_t = pi_theta(o_t) / pi_old(o_t) = exp(log_probs - old_log_probs)
        l_t = -min(rho_t A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) A_t)

    PPO's clipped objective (Schulman et al. 2017, Eq. 7) per token as in GRPO (DeepSeekMath
    Eq. 3); eps_high > eps_low is DAPO's "clip-higher" (Yu et al. 2025, Sec. 3.1), which leaves
    low-probability tokens with A > 0 more room to grow. eps_high=None means eps_high = eps_low.

    Args:
      log_probs: [B, T] under pi_theta (differentiated); old_log_probs: [B, T] under pi_old.
      advantages: [B] per response (broadcast over its tokens) or [B, T] per token; constants.
      mask: [B, T].
    Returns: [B, T] losses, 0 under the mask.
    """
    _check_tokens(mask, log_probs, old_log_probs)
    adv = _masked(_token_advantages(advantages, mask), mask)
    ratio = jnp.exp(_masked(log_probs, mask) - _masked(old_log_probs, mask))
    eps_high = eps_low if eps_high is None else eps_high
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return _masked(-jnp.minimum(ratio * adv, clipped * adv), mask)


def clip_fraction(log_probs: jax.Array, old_log_probs: jax.Array, mask: jax.Array, *,
                  eps_low: float = 0.2, eps_high: float | None = None) -> jax.Array:
    """Fraction of the response tokens whose ratio lies outside [1 - eps_low, 1 + eps_high]."""
    _check_tokens(mask, log_probs, old_log_probs)
    ratio = jnp.exp(_masked(log_probs, mask) - _masked(old_log_probs, mask))
    eps_high = eps_low if eps_high is None else eps_high
    outside = (ratio < 1.0 - eps_low) | (ratio > 1.0 + eps_high)
    return masked_mean(outside.astype(log_probs.dtype), mask)


def grpo_token_loss(log_probs: jax.Array, old_log_probs: jax.Array, ref_log_probs: jax.Array,
                    advantages: jax.Array, mask: jax.Array, *, eps_low: float = 0.2,
                    eps_high: float | None = None, kl_coef: float = 0.04) -> jax.Array:
    """Per-token GRPO loss, the negated summand of DeepSeekMath Eq. 3 (Shao et al. 2024):

        l_it = -[ min(rho_it A_it, clip(rho_it, 1 - eps_low, 1 + eps_high) A_it)
                  - beta * k3(pi_theta, pi_ref)_it ]

    with the KL to the reference as a loss term, estimated per token by k3 (Eq. 4). beta =
    `kl_coef` (the paper: 0.04); kl_coef=0 drops the term (DAPO, Dr. GRPO). Shapes as in
    `clipped_token_surrogate`; ref_log_probs [B, T] (constants). Returns [B, T], 0 under the mask.
    """
    _check_tokens(mask, log_probs, old_log_probs, ref_log_probs)
    surrogate = clipped_token_surrogate(log_probs, old_log_probs, advantages, mask,
                                        eps_low=eps_low, eps_high=eps_high)
    kl = kl_k3(_masked(log_probs, mask), _masked(ref_log_probs, mask))
    return surrogate + kl_coef * _masked(kl, mask)


def grpo_loss(log_probs: jax.Array, old_log_probs: jax.Array, ref_log_probs: jax.Array,
              advantages: jax.Array, mask: jax.Array, *, eps_low: float = 0.2,
              eps_high: float | None = None, kl_coef: float = 0.04,
              aggregation: str = "seq_mean", norm_constant: float | None = None) -> jax.Array:
    """The GRPO objective (DeepSeekMath Eq. 3), negated, as a scalar loss.

    `grpo_token_loss` reduced by `aggregate_tokens(mode=aggregation)`: "seq_mean" is Eq. 3 as
    written (1/G sum_i 1/|o_i| sum_t); "token_mean" with eps_high=0.28 and kl_coef=0 is DAPO's
    objective; "seq_sum_norm" with `dr_grpo_advantages` and kl_coef=0 is Dr. GRPO's.
    advantages: [B] (outcome supervision: `grpo_advantages(rewards).reshape(-1)`) or [B, T].
    """
    token_losses = grpo_token_loss(log_probs, old_log_probs, ref_log_probs, advantages, mask,
                                   eps_low=eps_low, eps_high=eps_high, kl_coef=kl_coef)
    return aggregate_tokens(token_losses, mask, mode=aggregation, norm_constant=norm_constant)


def reinforce_token_loss(log_probs: jax.Array, advantages: jax.Array,
                         mask: jax.Array) -> jax.Array:
    """REINFORCE per token (Williams 1992):  l_t = -A * log pi_theta(o_t | q, o_<t).

    With a group baseline (A_i = r_i - mean(r), `dr_grpo_advantages`, or the leave-one-out
    A_i = `rloo_advantages`, Ahmadian et al. 2024) and aggregate_tokens(mode="seq_sum_norm",
    norm_constant=1) this is the sequence-level estimator -A_i log pi_theta(o_i | q), whose
    gradient is the policy gradient of E[r] for responses sampled from pi_theta itself (no
    ratio, no clipping: on-policy, one gradient step per batch). advantages: [B] or [B, T];
    log_probs, mask: [B, T]. Returns [B, T], 0 under the mask.
    """
    _check_tokens(mask, log_probs)
    adv = _masked(_token_advantages(advantages, mask), mask)
    return -adv * _masked(log_probs, mask)


# ---------------------------------------------------------------------------- PPO for sequences
def kl_shaped_rewards(rewards: jax.Array, log_probs: jax.Array, ref_log_probs: jax.Array,
                      mask: jax.Array, *, kl_coef: float) -> jax.Array:
    """Per-token rewards of PPO for language models, the KL to the reference folded in
    (DeepSeekMath Eq. 2; Ziegler et al. 2019; Ouyang et al. 2022):

        r_t = -beta (log pi_old(o_t) - log pi_ref(o_t))  +  [t is the response's last token] r

    Args:
      rewards: [B] the outcome reward of each response.
      log_probs: [B, T] of the policy that sampled the response; ref_log_probs: [B, T].
      mask: [B, T]; the last True entry of each row receives the outcome reward (a row without
        any gets none).
      kl_coef: beta (keyword-only).
    Returns: [B, T] rewards, 0 under the mask.
    """
    _check_tokens(mask, log_probs, ref_log_probs)
    chex.assert_shape(rewards, (mask.shape[0],))
    kl = kl_k1(_masked(log_probs, mask), _masked(ref_log_probs, mask))
    token_rewards = -kl_coef * kl + last_token_mask(mask).astype(kl.dtype) * rewards[:, None]
    return _masked(token_rewards, mask)


def sequence_kl_rewards(rewards: jax.Array, log_probs: jax.Array, ref_log_probs: jax.Array,
                        mask: jax.Array, *, kl_coef: float) -> jax.Array:
    """Sequence-level KL-regularised rewards of RLHF with REINFORCE (Ahmadian et al. 2024;
    Ziegler et al. 2019):  R_i = r_i - beta log[pi(o_i|q) / pi_ref(o_i|q)], the log-ratio the
    sum of the per-token k1 over the response. rewards: [B]; log_probs (the sampling policy),
    ref_log_probs, mask: [B, T]. Returns [B].
    """
    _check_tokens(mask, log_probs, ref_log_probs)
    chex.assert_shape(rewards, (mask.shape[0],))
    log_ratio = jnp.sum(kl_k1(_masked(log_probs, mask), _masked(ref_log_probs, mask)), axis=1)
    return rewards - kl_coef * log_ratio


def last_token_mask(mask: jax.Array) -> jax.Array:
    """[B, T] bool, True at the last True entry of each row of mask (nowhere for an empty row)."""
    chex.assert_rank(mask, 2)
    valid = _bool_mask(mask)
    later = jnp.flip(jnp.cumsum(jnp.flip(valid, axis=1), axis=1), axis=1)  # valid at >= t
    return valid & (later == 1)


def sequence_gae(token_rewards: jax.Array, values: jax.Array, mask: jax.Array, *,
                 gamma: float = 1.0, lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
    """GAE over the tokens of each response (Schulman et al. 2016, Eq. 16), one episode per row.

        delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1},

    with V = 0 after the last response token (the episode terminates there) and under the
    mask. `algorithms.core.returns.gae` on the transposed arrays.

    Args:
      token_rewards: [B, T], e.g. `kl_shaped_rewards`; values: [B, T] V(q, o_<t) of the value
        head before token t; mask: [B, T] (a contiguous run of True per row).
    Returns: (advantages [B, T], value targets A + V [B, T]), both 0 under the mask.
    """
    _check_tokens(mask, token_rewards, values)
    rewards = _masked(token_rewards, mask)
    values = _masked(values, mask)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    end = last_token_mask(mask).astype(values.dtype)
    adv, targets = gae(rewards.T, values.T, next_values.T, end.T, end.T, gamma, lam)
    return _masked(adv.T, mask), _masked(targets.T, mask)


def value_token_loss(values: jax.Array, old_values: jax.Array, targets: jax.Array,
                     mask: jax.Array, *, clip_eps: float | None = None) -> jax.Array:
    """Squared-error loss of a per-token value head (PPO Eq. 9's L^VF), 0.5 (V - V^targ)^2, or
    with `clip_eps` the clipped form 0.5 max((V - V^targ)^2, (V_old + clip(V - V_old, +-eps)
    - V^targ)^2) of PPO implementations. All [B, T]; returns [B, T], 0 under the mask.
    """
    _check_tokens(mask, values, old_values, targets)
    v, v_old, target = (_masked(x, mask) for x in (values, old_values, targets))
    error = jnp.square(v - target)
    if clip_eps is not None:
        v_clipped = v_old + jnp.clip(v - v_old, -clip_eps, clip_eps)
        error = jnp.maximum(error, jnp.square(v_clipped - target))
    return _masked(0.5 * error, mask)


# ---------------------------------------------------------------------------- Kimi k1.5
def kimi_log_partition(rewards: jax.Array, *, tau: float,
                       estimator: str = "logmeanexp") -> jax.Array:
    """tau log Z of Kimi k1.5's closed-form policy (Kimi Team 2025, Sec. 2.3.2), from the
    group's rewards r_1..r_k sampled from pi_theta_i:

        "logmeanexp"  tau log( 1/k sum_j exp(r_j / tau) )   (the sample estimate of Z)
        "mean"        1/k sum_j r_j                         (the empirical mean the paper
                                                             reports works well in practice)

    rewards: [..., G]. Returns [..., G], the group's value repeated for each member; equal to
    each reward exactly when a group's rewards are all equal.
    """
    _group_size(rewards)
    if estimator == "logmeanexp":
        top = jnp.max(rewards, axis=-1, keepdims=True)
        value = top + tau * jnp.log(jnp.mean(jnp.exp((rewards - top) / tau), axis=-1,
                                             keepdims=True))
    elif estimator == "mean":
        value = rewards[..., :1] + jnp.mean(rewards - rewards[..., :1], axis=-1, keepdims=True)
    else:
        raise ValueError(f"estimator must be one of {KIMI_ESTIMATORS}, got {estimator!r}")
    return jnp.broadcast_to(value, rewards.shape)


def kimi_sequence_loss(log_probs: jax.Array, sampler_log_probs: jax.Array, rewards: jax.Array,
                       tau_log_z: jax.Array, mask: jax.Array, *, tau: float) -> jax.Array:
    """Kimi k1.5's squared-loss surrogate (Kimi Team 2025, Sec. 2.3.2), per response:

        l_i = ( r_i - tau log Z - tau log[pi_theta(y_i|x) / pi_theta_i(y_i|x)] )^2 / (2 tau)

    the relative-entropy-regularised objective max E[r] - tau KL(pi_theta || pi_theta_i) turned
    into a regression onto its closed-form solution pi* = pi_theta_i exp(r / tau) / Z. The
    responses are sampled from pi_theta_i (the policy of this iteration, `sampler_log_probs`).
    The 1 / (2 tau) scale makes the gradient exactly the paper's
        -[ (r_i - tau log Z) grad log pi_theta(y_i|x) - tau/2 grad (log pi_theta/pi_theta_i)^2 ],
    a policy gradient with baseline tau log Z plus a pull back to pi_theta_i.

    Args:
      log_probs, sampler_log_probs: [B, T] token log-probs (summed over the mask to sequence
        log-probs); rewards, tau_log_z: [B] (`kimi_log_partition(...).reshape(-1)`); mask [B, T].
      tau: the regularisation strength (keyword-only).
    Returns: [B] losses (mean them over the batch).
    """
    _check_tokens(mask, log_probs, sampler_log_probs)
    chex.assert_shape([rewards, tau_log_z], (mask.shape[0],))
    log_ratio = jnp.sum(_masked(log_probs, mask) - _masked(sampler_log_probs, mask), axis=1)
    residual = rewards - tau_log_z - tau * log_ratio
    return jnp.square(residual) / (2.0 * tau)


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the categorical distribution at each position: logits [..., V] -> [...]."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log softmax(logits)[token] at each position: logits [..., V], tokens [...] -> [...]."""
    chex.assert_equal_shape_prefix([logits, tokens], tokens.ndim)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_p, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
