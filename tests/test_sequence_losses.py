"""Sequence-model losses (algorithms/sequence/losses.py) against independent numpy formulas.

Random padded batches (a different response length per row, an empty row among them) in float32
and float64; group advantages exactly 0 for equal rewards; gradients against hand-derived
expressions; masked tokens change nothing; jit, vmap and grad on plain arrays.
"""
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.sequence import losses

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _x64(dtype):
    return jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()


def _batch(dtype, seed=0, batch=6, length=7):
    """log-probs of policy / old / ref [B, T], a prompt-then-response mask with a different
    response length per row (row 1 empty), and sequence advantages [B]."""
    rng = np.random.default_rng(seed)
    logp = np.log(rng.uniform(0.05, 1.0, size=(batch, length))).astype(dtype)
    old = (logp + rng.normal(scale=0.3, size=logp.shape)).astype(dtype)
    ref = (logp + rng.normal(scale=0.5, size=logp.shape)).astype(dtype)
    start = rng.integers(0, 3, size=batch)  # masked prompt tokens first
    stop = np.minimum(length, start + rng.integers(1, length, size=batch))
    stop[1] = start[1]  # an empty response
    t = np.arange(length)
    mask = (t >= start[:, None]) & (t < stop[:, None])
    adv = rng.normal(size=batch).astype(dtype)
    return logp, old, ref, mask, adv


# ---------------------------------------------------------------------------- numpy references
def np_aggregate(x, mask, mode, constant=None):
    rows = [x[i][mask[i]] for i in range(len(x))]
    if mode == "seq_mean":
        return np.mean([r.sum() / max(len(r), 1) for r in rows])
    if mode == "token_mean":
        return sum(r.sum() for r in rows) / max(sum(len(r) for r in rows), 1)
    return np.mean([r.sum() for r in rows]) / (x.shape[1] if constant is None else constant)


def np_clipped(logp, old, adv_bt, eps_low, eps_high):
    ratio = np.exp(logp - old)
    # Case analysis: A >= 0 is capped at (1 + eps_high) A, A < 0 at (1 - eps_low) A.
    obj = np.where(adv_bt >= 0, np.minimum(ratio, 1 + eps_high) * adv_bt,
                   np.maximum(ratio, 1 - eps_low) * adv_bt)
    return -obj


def np_k3(logp, logq):
    ratio_q_over_p = np.exp(logq) / np.exp(logp)
    return ratio_q_over_p - np.log(ratio_q_over_p) - 1


# ---------------------------------------------------------------------------- group baselines
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [2, 3, 8])
def test_group_advantages_match_numpy(dtype, group):
    rng = np.random.default_rng(group)
    rewards = rng.normal(size=(5, group)).astype(dtype)
    rewards[0] = rng.integers(0, 2, size=group)  # binary rewards as in the task
    with _x64(dtype):
        r = jnp.asarray(rewards)
        mean = rewards.mean(axis=1, keepdims=True)
        for ddof in (0, 1):
            want = (rewards - mean) / (rewards.std(axis=1, ddof=ddof, keepdims=True) + 1e-4)
            got = losses.grpo_advantages(r, ddof=ddof)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, **TOL[dtype])
        loo = np.array([[rewards[i, j] - np.delete(rewards[i], j).mean() for j in range(group)]
                        for i in range(len(rewards))])
        np.testing.assert_allclose(losses.rloo_advantages(r), loo, **TOL[dtype])
        np.testing.assert_allclose(losses.dr_grpo_advantages(r), rewards - mean, **TOL[dtype])


EQUAL_VALUES = (0.1, 0.2, 0.3, 1 / 3, 0.7, -0.1, 1.1, 2.3, -7.3, 1e-8, 3.0e7, 123.456, np.pi, 0.0,
                1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equal_rewards_give_exactly_zero_advantage(dtype):
    groups = (2, 3, 4, 5, 6, 7, 8, 10, 16, 33, 64)
    naive_nonzero = 0
    with _x64(dtype):
        for value in EQUAL_VALUES:
            for g in groups:
                r = jnp.full((3, g), value, dtype)
                for fn in (losses.grpo_advantages, losses.rloo_advantages,
                           losses.dr_grpo_advantages):
                    adv = np.asarray(fn(r))
                    assert adv.dtype == dtype and np.all(adv == 0), (fn.__name__, value, g)
                for estimator in losses.KIMI_ESTIMATORS:
                    for tau in (0.1, 1.0):
                        tau_log_z = losses.kimi_log_partition(r, tau=tau, estimator=estimator)
                        assert np.all(np.asarray(r - tau_log_z) == 0), (estimator, value, g)
                naive_nonzero += int(np.any(np.asarray(r - jnp.mean(r, axis=-1,
                                                                    keepdims=True)) != 0))
    assert naive_nonzero > 0  # the plain r - mean(r) is not exact: the case is a real one


def test_group_size_checks():
    with pytest.raises(ValueError, match="at least 2"):
        losses.rloo_advantages(jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="ddof"):
        losses.grpo_advantages(jnp.zeros((4, 1)), ddof=1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kimi_log_partition_matches_numpy(dtype):
    rng = np.random.default_rng(3)
    rewards = rng.integers(0, 2, size=(6, 8)).astype(dtype) + rng.normal(scale=0.1, size=(6, 8))
    rewards = rewards.astype(dtype)
    with _x64(dtype):
        for tau in (0.2, 1.0, 5.0):
            want = tau * np.log(np.mean(np.exp(rewards / tau), axis=1, keepdims=True))
            got = losses.kimi_log_partition(jnp.asarray(rewards), tau=tau)
            np.testing.assert_allclose(got, np.broadcast_to(want, rewards.shape), **TOL[dtype])
        got = losses.kimi_log_partition(jnp.asarray(rewards), tau=1.0, estimator="mean")
        np.testing.assert_allclose(got[:, 0], rewards.mean(axis=1), **TOL[dtype])


# ---------------------------------------------------------------------------- KL estimators
@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_estimators_match_numpy_and_estimate_kl_p_q(dtype):
    rng = np.random.default_rng(4)
    with _x64(dtype):
        logp, _, logq, _, _ = _batch(dtype)
        np.testing.assert_allclose(losses.kl_k1(logp, logq), logp - logq, **TOL[dtype])
        np.testing.assert_allclose(losses.kl_k2(logp, logq), (np.log(np.exp(logp) / np.exp(logq))
                                                              ) ** 2 / 2, **TOL[dtype])
        np.testing.assert_allclose(losses.kl_k3(logp, logq), np_k3(logp, logq), rtol=1e-4
                                   if dtype == np.float32 else 1e-10, atol=1e-6)
        assert np.all(np.asarray(losses.kl_k3(logp, logq)) >= 0)
        # The expectation under p of k1 and k3 is KL[p || q] exactly (enumerate a categorical).
        p = rng.dirichlet(np.ones(7)).astype(dtype)
        q = rng.dirichlet(np.ones(7)).astype(dtype)
        kl_pq = np.sum(p * np.log(p / q))
        for k in (losses.kl_k1, losses.kl_k3):
            expectation = float(np.sum(p * np.asarray(k(jnp.log(p), jnp.log(q)))))
            np.testing.assert_allclose(expectation, kl_pq, rtol=1e-4 if dtype == np.float32
                                       else 1e-10)


def test_k3_gradient_is_one_minus_q_over_p():
    logp = jnp.log(jnp.array([0.1, 0.5, 0.9]))
    logq = jnp.log(jnp.array([0.3, 0.5, 0.2]))
    grad = jax.grad(lambda lp: losses.kl_k3(lp, logq).sum())(logp)
    np.testing.assert_allclose(grad, 1.0 - np.array([0.3, 0.5, 0.2]) / np.array([0.1, 0.5, 0.9]),
                               rtol=1e-6)


# ---------------------------------------------------------------------------- aggregation & losses
@pytest.mark.parametrize("dtype", DTYPES)
def test_aggregation_matches_numpy(dtype):
    with _x64(dtype):
        x, _, _, mask, _ = _batch(dtype, seed=5)
        for mode in losses.AGGREGATIONS:
            for constant in (None, 3.0):
                got = losses.aggregate_tokens(jnp.asarray(x), mask, mode=mode,
                                              norm_constant=constant)
                np.testing.assert_allclose(got, np_aggregate(x, mask, mode, constant),
                                           **TOL[dtype])
        with pytest.raises(ValueError, match="aggregation"):
            losses.aggregate_tokens(jnp.asarray(x), mask, mode="sum")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jit", [False, True])
def test_grpo_loss_matches_numpy(dtype, jit):
    with _x64(dtype):
        logp, old, ref, mask, adv = _batch(dtype, seed=6)
        adv_bt = np.broadcast_to(adv[:, None], logp.shape)
        for eps_low, eps_high, beta in ((0.2, None, 0.04), (0.2, 0.28, 0.0), (0.1, 0.3, 0.5)):
            token = np_clipped(logp, old, adv_bt, eps_low, eps_high or eps_low) \
                + beta * np_k3(logp, ref)
            for mode in losses.AGGREGATIONS:
                fn = functools.partial(losses.grpo_loss, eps_low=eps_low, eps_high=eps_high,
                                       kl_coef=beta, aggregation=mode)
                fn = jax.jit(fn) if jit else fn
                got = fn(logp, old, ref, adv, mask)
                assert got.dtype == dtype
                np.testing.assert_allclose(got, np_aggregate(token, mask, mode),
                                           rtol=1e-4 if dtype == np.float32 else 1e-10)
        # Token-level advantages [B, T] give the same as sequence advantages broadcast.
        np.testing.assert_allclose(losses.grpo_loss(logp, old, ref, adv_bt, mask),
                                   losses.grpo_loss(logp, old, ref, adv, mask), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_fraction_and_reinforce_match_numpy(dtype):
    with _x64(dtype):
        logp, old, _, mask, adv = _batch(dtype, seed=7)
        ratio = np.exp(logp - old)
        outside = (ratio < 0.8) | (ratio > 1.28)
        np.testing.assert_allclose(
            losses.clip_fraction(logp, old, mask, eps_low=0.2, eps_high=0.28),
            outside[mask].mean(), **TOL[dtype])
        got = losses.reinforce_token_loss(logp, adv, mask)
        np.testing.assert_allclose(got, np.where(mask, -adv[:, None] * logp, 0), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_loss_matches_numpy(dtype):
    rng = np.random.default_rng(8)
    with _x64(dtype):
        v, v_old, target = (rng.normal(size=(6, 7)).astype(dtype) for _ in range(3))
        _, _, _, mask, _ = _batch(dtype, seed=8)
        np.testing.assert_allclose(losses.value_token_loss(v, v_old, target, mask),
                                   np.where(mask, 0.5 * (v - target) ** 2, 0), **TOL[dtype])
        clipped = np.clip(v, v_old - 0.2, v_old + 0.2)
        want = 0.5 * np.maximum((v - target) ** 2, (clipped - target) ** 2)
        np.testing.assert_allclose(losses.value_token_loss(v, v_old, target, mask, clip_eps=0.2),
                                   np.where(mask, want, 0), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kimi_sequence_loss_matches_numpy(dtype):
    with _x64(dtype):
        logp, old, _, mask, _ = _batch(dtype, seed=9)
        rewards = np.array([1, 0, 1, 1, 0, 0], dtype)
        tau_log_z = np.full(6, 0.4, dtype)
        for tau in (0.5, 2.0):
            log_ratio = np.array([np.sum((logp - old)[i][mask[i]]) for i in range(6)])
            want = (rewards - tau_log_z - tau * log_ratio) ** 2 / (2 * tau)
            got = losses.kimi_sequence_loss(logp, old, rewards, tau_log_z, mask, tau=tau)
            np.testing.assert_allclose(got, want, **TOL[dtype])


# ---------------------------------------------------------------------------- PPO pieces
@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_shaped_rewards_and_sequence_gae_match_numpy(dtype):
    rng = np.random.default_rng(10)
    with _x64(dtype):
        logp, _, ref, mask, _ = _batch(dtype, seed=10)
        rewards = rng.integers(0, 2, size=6).astype(dtype)
        values = rng.normal(size=logp.shape).astype(dtype)
        beta, gamma, lam = 0.1, 0.9, 0.8
        want_r = np.zeros_like(logp)
        want_adv = np.zeros_like(logp)
        for i in range(6):
            idx = np.nonzero(mask[i])[0]
            if not len(idx):
                continue
            r = -beta * (logp[i, idx] - ref[i, idx])
            r[-1] += rewards[i]
            want_r[i, idx] = r
            v = values[i, idx]
            adv, running = np.zeros(len(idx)), 0.0
            for k in reversed(range(len(idx))):  # the episode ends after the last token
                next_v = v[k + 1] if k + 1 < len(idx) else 0.0
                running = r[k] + gamma * next_v - v[k] + gamma * lam * running
                adv[k] = running
            want_adv[i, idx] = adv
        got_r = losses.kl_shaped_rewards(rewards, logp, ref, mask, kl_coef=beta)
        np.testing.assert_allclose(got_r, want_r, **TOL[dtype])
        adv, targets = losses.sequence_gae(got_r, values, mask, gamma=gamma, lam=lam)
        np.testing.assert_allclose(adv, want_adv, **TOL[dtype])
        np.testing.assert_allclose(targets, np.where(mask, want_adv + values, 0), **TOL[dtype])
        seq = losses.sequence_kl_rewards(rewards, logp, ref, mask, kl_coef=beta)
        np.testing.assert_allclose(seq, rewards - beta * np.where(mask, logp - ref, 0).sum(1),
                                   **TOL[dtype])


def test_masked_whiten_and_last_token():
    mask = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    x = np.arange(12.0).reshape(3, 4).astype(np.float32)
    got = np.asarray(losses.masked_whiten(jnp.asarray(x), mask))
    v = x[mask]
    np.testing.assert_allclose(got[mask], (v - v.mean()) / (v.std() + 1e-8), rtol=1e-5)
    assert np.all(got[~mask] == 0)
    np.testing.assert_array_equal(losses.last_token_mask(mask),
                                  [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])


# ---------------------------------------------------------------------------- gradients by hand
def test_grpo_gradient_matches_hand_derivation():
    """d loss / d log pi_t = w_t [ -rho_t A (unclipped side) or 0 (clipped) + beta (1 - q/p) ],
    w_t = 1 / (B |o_i|) for "seq_mean" and 1 / sum |o_i| for "token_mean"."""
    logp = jnp.log(jnp.array([[0.5, 0.4, 0.3], [0.2, 0.6, 0.9]]))
    old = jnp.log(jnp.array([[0.5, 0.2, 0.3], [0.4, 0.6, 0.5]]))
    ref = jnp.log(jnp.array([[0.4, 0.4, 0.1], [0.2, 0.3, 0.9]]))
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    adv = jnp.array([1.0, -2.0])
    beta, eps = 0.1, 0.2
    ratio = np.exp(np.asarray(logp - old))
    a = np.broadcast_to(np.asarray(adv)[:, None], ratio.shape)
    clipped = np.where(a > 0, ratio > 1 + eps, ratio < 1 - eps)
    d_surr = np.where(clipped, 0.0, -ratio * a)
    d_kl = beta * (1 - np.exp(np.asarray(ref - logp)))
    for mode, weights in (("seq_mean", np.array([[1 / 4] * 3, [1 / 6] * 3])),
                          ("token_mean", np.full((2, 3), 1 / 5))):
        loss = functools.partial(losses.grpo_loss, old_log_probs=old, ref_log_probs=ref,
                                 advantages=adv, mask=mask, eps_low=eps, kl_coef=beta,
                                 aggregation=mode)
        grad = jax.grad(loss)(logp)
        np.testing.assert_allclose(grad, np.where(mask, weights * (d_surr + d_kl), 0),
                                   rtol=1e-5, atol=1e-7)


def test_kimi_and_reinforce_gradients_match_hand_derivation():
    logp = jnp.log(jnp.array([[0.5, 0.4, 0.3], [0.2, 0.6, 0.9]]))
    old = jnp.log(jnp.array([[0.5, 0.2, 0.3], [0.4, 0.6, 0.5]]))
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    rewards, tau_log_z, tau = jnp.array([1.0, 0.0]), jnp.array([0.6, 0.6]), 0.5
    # d/d log pi_t of (r - b - tau l)^2 / (2 tau), l = sum_t (log pi_t - log pi_old_t): -(r - b
    # - tau l) on every response token.
    ell = np.sum(np.where(mask, np.asarray(logp - old), 0), axis=1)
    residual = np.asarray(rewards - tau_log_z) - tau * ell
    grad = jax.grad(lambda lp: losses.kimi_sequence_loss(lp, old, rewards, tau_log_z, mask,
                                                         tau=tau).sum())(logp)
    np.testing.assert_allclose(grad, np.where(mask, -residual[:, None], 0), rtol=1e-6)
    adv = jnp.array([0.5, -1.5])
    grad = jax.grad(lambda lp: losses.aggregate_tokens(
        losses.reinforce_token_loss(lp, adv, mask), mask, mode="seq_sum_norm",
        norm_constant=1.0))(logp)
    np.testing.assert_allclose(grad, np.where(mask, -np.asarray(adv)[:, None] / 2, 0))


# ---------------------------------------------------------------------------- masking
def _all_losses(logp, old, ref, values, mask, adv, rewards):
    """Every masked loss as a scalar function of (log_probs, values)."""
    tau_log_z = jnp.full_like(rewards, 0.3)
    return {
        "grpo": losses.grpo_loss(logp, old, ref, adv, mask, eps_high=0.28),
        "grpo_token_mean": losses.grpo_loss(logp, old, ref, adv, mask, aggregation="token_mean"),
        "reinforce": losses.aggregate_tokens(losses.reinforce_token_loss(logp, adv, mask), mask,
                                             mode="seq_sum_norm"),
        "kimi": losses.kimi_sequence_loss(logp, old, rewards, tau_log_z, mask, tau=0.5).mean(),
        "value": losses.aggregate_tokens(losses.value_token_loss(values, ref, old, mask,
                                                                 clip_eps=0.2), mask),
        "gae": jnp.sum(losses.sequence_gae(
            losses.kl_shaped_rewards(rewards, logp, ref, mask, kl_coef=0.1), values, mask)[0]),
        "seq_kl": jnp.sum(losses.sequence_kl_rewards(rewards, logp, ref, mask, kl_coef=0.1)),
        "clip_frac": losses.clip_fraction(logp, old, mask),
    }


def test_masked_tokens_change_nothing():
    logp, old, ref, mask, adv = _batch(np.float32, seed=11)
    values = np.random.default_rng(11).normal(size=logp.shape).astype(np.float32)
    rewards = np.array([1, 0, 1, 1, 0, 1], np.float32)
    garbage = np.where(mask, 0, np.float32(np.nan))
    garbage[0, ~mask[0]] = np.inf  # inf and NaN under the mask, in every input
    spoilt = [np.where(mask, x, garbage) for x in (logp, old, ref, values)]

    def f(name, lp, o, r, v):
        return _all_losses(lp, o, r, v, mask, adv, rewards)[name]

    for name in _all_losses(logp, old, ref, values, mask, adv, rewards):
        clean = f(name, logp, old, ref, values)
        dirty = f(name, *spoilt[:3], spoilt[3])
        np.testing.assert_allclose(dirty, clean, rtol=1e-6, err_msg=name)
        g_clean = jax.grad(f, argnums=(1, 4))(name, logp, old, ref, values)
        g_dirty = jax.grad(f, argnums=(1, 4))(name, *spoilt[:3], spoilt[3])
        for gc, gd in zip(g_clean, g_dirty):
            assert np.all(np.isfinite(gd)), name
            assert np.all(np.asarray(gd)[~mask] == 0), name
            np.testing.assert_allclose(gd, gc, rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------- jit / vmap / grad
def test_jit_vmap_grad_on_plain_arrays():
    """The losses compose with jax transformations, no project object needed: a vmap over a
    leading axis of batches equals the loop, and jit(grad) equals grad."""
    batches = [_batch(np.float32, seed=s) for s in range(3)]
    stacked = [jnp.stack(x) for x in zip(*batches)]

    def loss(logp, old, ref, mask, adv):
        rewards = adv.reshape(2, 3)
        a = losses.grpo_advantages(rewards).reshape(-1)
        return losses.grpo_loss(logp, old, ref, a, mask, kl_coef=0.04)

    vmapped = jax.jit(jax.vmap(loss))(*stacked)
    looped = [loss(*b) for b in batches]
    np.testing.assert_allclose(vmapped, looped, rtol=1e-6)
    g = jax.grad(loss)(*batches[0])
    g_jit = jax.jit(jax.grad(loss))(*batches[0])
    np.testing.assert_allclose(g_jit, g, rtol=1e-5, atol=1e-8)
    assert np.abs(np.asarray(g)).sum() > 0
