"""Diffusion policies pi_theta(a | s): a conditional diffusion model over actions in [-1, 1]^|A|.

Shared by `diffusion_ql.py` (Wang, Hunt & Zhou 2023), `diffusion_bc.py` (its L_d alone) and
`idql.py` (Hansen-Estruch et al. 2023). Everything diffusion-specific comes from `diffusion/`:
the noise levels from `diffusion.schedules`, the training losses from `diffusion.losses`, the
denoiser wrapper from `diffusion.networks` / `diffusion.precond`, the chains from
`diffusion.samplers`. This module only conditions them on the state and clips to the box.

Two parameterisations (`config.parameterization`):

"ddpm" (the papers'): a noise predictor eps_theta(a_i, s, i) on N discrete levels (N = 5),
    alpha_bar_i = exp(-(beta_min i / N + (beta_max - beta_min) i^2 / (2 N^2))), the discretised
    VP SDE with beta_min = 0.1, beta_max = 10 (Diffusion-QL's `vp_beta_schedule`, also IDQL's).
    Training: the denoising loss L_d (Diffusion-QL Eq. 2, Ho et al. 2020 Eq. 14)
        L_d = E_{i, eps, (s, a)} || eps - eps_theta(sqrt(ab_i) a + sqrt(1 - ab_i) eps, s, i) ||^2.
    Sampling: a_N ~ N(0, I), then for i = N .. 1 the notes' two-part reverse step
        a0_hat = clip((a_i - sqrt(1 - ab_i) eps_theta) / sqrt(ab_i), -1, 1)   (x0 reconstruction)
        a_{i-1} = mu_tilde(a_i, a0_hat) + sqrt(beta_tilde_i) z                    (posterior mean)
    which without the clip is Diffusion-QL Eq. 1's mean a_i / sqrt(alpha_i) - beta_i /
    sqrt(alpha_i (1 - ab_i)) eps_theta; the noise variance is the posterior's beta_tilde_i (the
    authors' code; Eq. 1 writes beta_i, Ho et al.'s other choice), 0 on the last step. The
    chain runs as `samplers.sample_ancestral` in the sigma view a / sqrt(ab) = a0 + sigma eps,
    sigma_i = sqrt((1 - ab_i) / ab_i), where that step is the same posterior draw, with the
    denoiser D(x; sigma_i) = clip(x - sigma_i eps_theta(x / sqrt(1 + sigma_i^2), s, i)).
"edm": Karras et al. 2022's preconditioned denoiser D(a; sigma | s) = c_skip a + c_out
    F(c_in a, ln(sigma) / 4, s), trained with `losses.edm_loss` and sampled with Heun's method
    (`samplers.sample_heun`) on EDM's rho-schedule with N steps (2N - 1 evaluations); the
    denoised estimate is clipped to the box at every evaluation.

Both clip the action estimate at every step, as Diffusion-QL's code does (`clip_denoised`), and
the returned action. Gradients flow through every step of the chain (the sampler is one
`lax.scan`), which Diffusion-QL's L_q needs. Observations are z-scored (`common.normalize_obs`)
before they reach the network; `act` returns environment actions (`spaces.to_env_action`).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from algorithms.core import config_rules as rules
from algorithms.core import optim, spaces
from algorithms.offline import common
from algorithms.offline.iql import iql_critic_loss
from diffusion import losses, precond, samplers, schedules
from diffusion import networks as diffusion_networks

PARAMETERIZATIONS = ("ddpm", "edm")
BETA_SCHEDULES = ("vp", "linear")
LR_SCHEDULES = ("cosine", "constant")
ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu, "swish": nn.swish,
               "elu": nn.elu, "mish": jax.nn.mish}
# Ho et al. 2020's linear betas (`beta_schedule="linear"`), as in Diffusion-QL's code.
LINEAR_BETA_1, LINEAR_BETA_T = 1e-4, 2e-2


# ---------------------------------------------------------------------------- config
def policy_config() -> ml_collections.ConfigDict:
    """The offline fields plus the diffusion policy's (Diffusion-QL's code defaults).

    hidden_sizes are the noise network's layers (Diffusion-QL: 3 x 256, Mish); the time
    embedding is `time_dim` sinusoidal features -> Dense(2 time_dim) -> Mish -> Dense(time_dim).
    """
    c = common.offline_config()
    c.hidden_sizes = (256, 256, 256)
    c.activation = "mish"
    c.time_dim = 16
    c.num_diffusion_steps = 5  # N
    c.parameterization = "ddpm"  # or "edm" (see the module docstring)
    c.beta_schedule = "vp"  # ddpm levels: "vp" (the papers') or "linear"
    c.vp_beta_min = 0.1
    c.vp_beta_max = 10.0
    c.edm = ml_collections.ConfigDict({"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
                                       "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2})
    c.lr = 3e-4
    c.lr_schedule = "cosine"  # cosine decay to 0 over the run, per runner update, or "constant"
    c.max_grad_norm = 0.0  # global-norm clipping of every gradient (0 = off)
    c.ema_decay = 0.995  # EMA of the policy: ema <- decay ema + (1 - decay) theta
    c.ema_start = 1000  # gradient steps before the EMA starts to move
    c.ema_every = 5  # gradient steps between EMA updates
    c.num_candidates = 50  # actions sampled per state at evaluation
    return c


def _even_count(x):
    return None if isinstance(x, int) and not isinstance(x, bool) and x >= 2 and x % 2 == 0 \
        else "an even integer >= 2"


RULES = {
    **common.CONFIG_RULES,
    "critic_hidden_sizes": rules.positive_int_tuple(),
    "critic_activation": rules.one_of(*ACTIVATIONS),
    "time_dim": _even_count,
    "parameterization": rules.one_of(*PARAMETERIZATIONS),
    "beta_schedule": rules.one_of(*BETA_SCHEDULES),
    "vp_beta_min": rules.positive,
    "vp_beta_max": rules.positive,
    "edm.sigma_min": rules.positive,
    "edm.sigma_max": rules.positive,
    "edm.rho": rules.positive,
    "edm.sigma_data": rules.positive,
    "edm.p_mean": rules.finite(),
    "edm.p_std": rules.positive,
    "lr_schedule": rules.one_of(*LR_SCHEDULES),
    "ema_decay": rules.in_range(0.0, 1.0, high_open=True),
    "ema_start": rules.non_negative_count,
}


def _levels_ordered(config):
    if config.vp_beta_max < config.vp_beta_min:
        return (f"config.vp_beta_max={config.vp_beta_max} must be >= config.vp_beta_min="
                f"{config.vp_beta_min}")
    if config.edm.sigma_max <= config.edm.sigma_min:
        return (f"config.edm.sigma_max={config.edm.sigma_max} must be > config.edm.sigma_min="
                f"{config.edm.sigma_min}")
    return None


CHECKS = (_levels_ordered,)


# ---------------------------------------------------------------------------- network
class NoiseNet(nn.Module):
    """eps_theta(a_i, s, i) ("ddpm") or the raw network F(c_in a, c_noise, s) ("edm").

    Diffusion-QL's MLP: the noise level embedded (sinusoidal features of the step index, or
    fixed random Fourier features of c_noise = ln(sigma) / 4) and passed through
    Dense(2 time_dim) -> Mish -> Dense(time_dim); then [a, embedding, s] through
    `hidden_sizes` layers of `activation` and a linear output.
    x [M, A], c_noise [M], obs [M, obs_dim] -> [M, A].
    """
    hidden_sizes: Sequence[int]
    action_dim: int
    time_dim: int = 16
    embedding: str = "positional"
    activation: Callable = jax.nn.mish

    @nn.compact
    def __call__(self, x, c_noise, obs):
        if self.embedding == "positional":
            e = diffusion_networks.PositionalEmbedding(self.time_dim)(c_noise)
        else:
            e = diffusion_networks.FourierEmbedding(self.time_dim)(c_noise)
        e = nn.Dense(self.time_dim)(jax.nn.mish(nn.Dense(2 * self.time_dim)(e)))
        h = jnp.concatenate([x, e, obs], axis=-1)
        for width in self.hidden_sizes:
            h = self.activation(nn.Dense(width)(h))
        return nn.Dense(self.action_dim)(h)


def noise_net(config, task) -> NoiseNet:
    return NoiseNet(tuple(config.hidden_sizes), common.action_dim(task), int(config.time_dim),
                    "fourier" if config.parameterization == "edm" else "positional",
                    ACTIVATIONS[config.activation])


def init_noise_net(key, config, task):
    """Parameters of `noise_net` for one seed."""
    return noise_net(config, task).init(key, jnp.zeros((1, common.action_dim(task))),
                                        jnp.zeros((1,)), jnp.zeros((1, common.obs_dim(task))))


# ---------------------------------------------------------------------------- levels
def ddpm_sigmas(config) -> np.ndarray:
    """The N DDPM levels in the sigma view, descending, then 0: float64 [N + 1].

    "vp": `schedules.vp_sigma_steps` at the times t = N/N, ..., 1/N (eps_s = 1 / N) with
    beta_d = vp_beta_max - vp_beta_min, i.e. sigma_i^2 = exp(B(i / N)) - 1 with
    B(t) = beta_min t + beta_d t^2 / 2, so alpha_bar_i = exp(-B(i / N)). "linear": Ho et al.'s
    linear betas from 1e-4 to 2e-2 over N levels (`schedules.ddpm_schedule`).
    """
    n = int(config.num_diffusion_steps)
    if config.beta_schedule == "vp":
        return schedules.vp_sigma_steps(n, beta_d=float(config.vp_beta_max - config.vp_beta_min),
                                        beta_min=float(config.vp_beta_min), eps_s=1.0 / n)
    alphas_bar = schedules.ddpm_schedule(n, LINEAR_BETA_1, LINEAR_BETA_T).alphas_bar
    return schedules.ddpm_sigma_steps(alphas_bar, schedules.ddpm_timesteps(n, n))


def ddpm_alphas_bar(config) -> np.ndarray:
    """alpha_bar_i = 1 / (1 + sigma_i^2) by level index (index 0 the least noisy, the paper's
    i = 1), float64 [N]: what `losses.ddpm_eps_loss` takes."""
    sigmas = ddpm_sigmas(config)
    return 1.0 / (1.0 + sigmas[-2::-1] ** 2)


def edm_sigmas(config) -> np.ndarray:
    """EDM's rho-schedule with N steps on [edm.sigma_min, edm.sigma_max], then 0."""
    e = config.edm
    return schedules.edm_sigma_steps(int(config.num_diffusion_steps), float(e.sigma_min),
                                     float(e.sigma_max), float(e.rho))


def _ddpm_coefficients(config) -> Callable:
    """Preconditioning that turns eps_theta into a denoiser in the sigma view: c_skip = 1,
    c_out = -sigma, c_in = 1 / sqrt(1 + sigma^2) (= sqrt(alpha_bar): the network sees the
    DDPM-scaled a_i) and c_noise = the level's index i, found in the host table of levels."""
    table = samplers.host_constant(ddpm_sigmas(config)[-2::-1], jnp.float32)  # by index

    def coefficients(sigma):
        index = jnp.argmin(jnp.abs(sigma[:, None] - table[None, :]), axis=1)
        return precond.Coefficients(c_skip=jnp.ones_like(sigma), c_out=-sigma,
                                    c_in=1.0 / jnp.sqrt(sigma ** 2 + 1.0),
                                    c_noise=index.astype(sigma.dtype))

    return coefficients


def denoiser(net: NoiseNet, params, obs: jax.Array, config, clip: bool = True) -> Callable:
    """D(a; sigma | s) for the states `obs` [M, obs_dim] (normalised), as the samplers of
    `diffusion.samplers` take it: (x [M, A], sigma [M]) -> [M, A]; with `clip`, the estimate
    is clipped to [-1, 1]^|A| (the box), as Diffusion-QL clips its x0 reconstruction."""
    def raw(x_in, c_noise):
        return net.apply(params, x_in, c_noise, obs)

    if config.parameterization == "edm":
        coefficients = functools.partial(precond.edm_precond,
                                         sigma_data=float(config.edm.sigma_data))
    else:
        coefficients = _ddpm_coefficients(config)
    denoise = diffusion_networks.denoiser_from_raw(raw, coefficients)
    if not clip:
        return denoise
    return lambda x, sigma: jnp.clip(denoise(x, sigma), -1.0, 1.0)


# ---------------------------------------------------------------------------- loss & sampling
def denoising_loss(net: NoiseNet, params, obs: jax.Array, actions: jax.Array, key,
                   config) -> jax.Array:
    """Per-sample L_d [B], averaged over the action dimensions (the authors' mean squared error).

    "ddpm": `losses.ddpm_eps_loss` (Diffusion-QL Eq. 2; key split (k_index, k_eps)); "edm":
    `losses.edm_loss` (EDM Eq. 2 with lambda(sigma) = 1 / c_out^2; key split (k_sigma,
    k_noise)). obs [B, obs_dim] normalised, actions [B, A] in [-1, 1].
    """
    if config.parameterization == "edm":
        e = config.edm
        per_sample = losses.edm_loss(denoiser(net, params, obs, config, clip=False), actions,
                                     key, p_mean=float(e.p_mean), p_std=float(e.p_std),
                                     sigma_data=float(e.sigma_data))
    else:
        per_sample = losses.ddpm_eps_loss(lambda x, i: net.apply(params, x, i, obs), actions,
                                          key, ddpm_alphas_bar(config))
    return per_sample / actions.shape[-1]


def sample_actions(net: NoiseNet, params, obs: jax.Array, key, config) -> jax.Array:
    """One action per state, a ~ pi_theta(. | s), in [-1, 1]^|A|: [M, obs_dim] -> [M, A].

    "ddpm": k_init, k_chain = split(key); a_N = normal(k_init, [M, A]) (DDPM's N(0, I)), then
    `samplers.sample_ancestral(k_chain, ...)` from a_N / sqrt(alpha_bar_N) (the sigma view), so
    step j's noise is `samplers.step_noise(split(k_chain)[1], j, .)`. "edm":
    `samplers.sample_heun(key, ...)` (deterministic given its initial draw). Differentiable
    in `params` through every step.
    """
    shape = (obs.shape[0], net.action_dim)
    denoise = denoiser(net, params, obs, config, clip=True)
    if config.parameterization == "edm":
        actions, _ = samplers.sample_heun(key, denoise, shape, edm_sigmas(config))
    else:
        sigmas = ddpm_sigmas(config)
        k_init, k_chain = jax.random.split(key)
        a_top = jax.random.normal(k_init, shape, jnp.float32)
        actions, _ = samplers.sample_ancestral(
            k_chain, denoise, shape, sigmas,
            x_init=a_top * np.float32(np.sqrt(1.0 + sigmas[0] ** 2)))
    return jnp.clip(actions, -1.0, 1.0)


def repeat_states(obs: jax.Array, num: int) -> jax.Array:
    """[B, obs_dim] -> [B * num, obs_dim], each state `num` times in a row."""
    return jnp.repeat(obs, num, axis=0)


def candidates(net: NoiseNet, params, obs: jax.Array, key, config, num: int):
    """`num` sampled actions per state: ([B, num, A], the repeated states [B * num, obs_dim])."""
    states = repeat_states(obs, num)
    actions = sample_actions(net, params, states, key, config)
    return actions.reshape(obs.shape[0], num, -1), states


def choose(key, actions: jax.Array, logits: jax.Array) -> jax.Array:
    """One of K candidates per state: [B, K, A], logits [B, K] -> [B, A].

    key=None: the argmax of the logits; with a key, a draw from softmax(logits) (Diffusion-QL's
    softmax over Q, IDQL's resampling with log-weights).
    """
    if key is None:
        index = jnp.argmax(logits, axis=-1)
    else:
        index = jax.random.categorical(key, logits, axis=-1)
    return jnp.take_along_axis(actions, index[:, None, None], axis=1)[:, 0]


# ---------------------------------------------------------------------------- training plumbing
def make_optimizer(config, lr=None):
    """Adam (traced learning rate); with max_grad_norm > 0, global-norm clipping first."""
    lr = config.lr if lr is None else lr
    if float(config.max_grad_norm) > 0:
        return optim.optimizer(lr, max_grad_norm=float(config.max_grad_norm))
    return optim.optimizer(lr, inject_all=True)


def scheduled_lr(config, lr, update_index):
    """lr at runner update `update_index`: cosine decay to 0 over num_updates updates (the
    authors' CosineAnnealingLR stepped once per epoch of `steps_per_update` gradient steps,
    T_max = the number of epochs), or constant."""
    if config.lr_schedule == "constant":
        return lr
    total = int(config.num_updates)
    progress = jnp.minimum(update_index, total).astype(jnp.float32) / total
    return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def ema_update(online, ema, grad_step, config):
    """Diffusion-QL's EMA of the policy: every `ema_every` gradient steps from `ema_start` on,
    ema <- ema_decay ema + (1 - ema_decay) theta (`optim.polyak` with tau = 1 - decay);
    otherwise unchanged. grad_step: the 0-based index of the step just taken."""
    due = (grad_step >= int(config.ema_start)) & (grad_step % int(config.ema_every) == 0)
    moved = optim.polyak(online, ema, jnp.float32(1.0 - config.ema_decay))
    return optim.select(due, moved, ema)


def critic_step(critic, opt, params, opt_state, batch: dict, next_values, rewards, config, lr):
    """One optimizer step of the twin critics on sum_j (r + gamma (1 - terminal) v' -
    Q_j(s, a))^2 (`iql.iql_critic_loss`; no gradient into the bootstrap values v' [B]).
    Returns (params', opt_state', loss, Q_j(s, a) [2, B])."""
    obs, actions = batch["obs"], batch["action"]
    discounts = config.gamma * (1.0 - batch["terminal"])

    def objective(p):
        q = critic.apply(p, obs, actions)
        return iql_critic_loss(q, next_values, rewards, discounts).mean(), q

    (loss, q), grads = jax.value_and_grad(objective, has_aux=True)(params)
    params, opt_state = optim.apply_updates(opt, opt_state, params, grads, lr)
    return params, opt_state, loss, q


def moving_averages(state, actor_params, critic_params, config):
    """(EMA policy `ema_update`, Polyak target critics with rate config.tau) after a step."""
    return (ema_update(actor_params, state.ema_params, state.grad_step, config),
            optim.polyak(critic_params, state.target_critic_params, jnp.float32(config.tau)))


# ---------------------------------------------------------------------------- acting
# The candidates' noise when act is called without a key: a fixed draw makes the action a
# deterministic function of the state.
DETERMINISTIC_SEED = 0


def states_and_key(obs: jax.Array, task, key):
    """(normalised states [B, obs_dim], the key to sample with): a fixed key without one."""
    states = common.normalize_obs(obs.reshape(obs.shape[0], -1).astype(jnp.float32), task)
    return states, (jax.random.key(DETERMINISTIC_SEED) if key is None else key)


def to_env(actions: jax.Array, task) -> jax.Array:
    return spaces.to_env_action(actions, jnp.asarray(task.action_center, jnp.float32),
                                jnp.asarray(task.action_scale, jnp.float32))


def evaluate_sampling(act: Callable, state, key, config, task) -> dict:
    """`eval_episodes` episodes of `act(state, obs, config, task, key)` with a fresh key per
    step (the papers sample at evaluation); returns {"return", "length", "normalized_score"},
    or {"dataset_action_mse"} for a train-only task (`common.evaluate_actions`)."""
    return common.evaluate_actions(lambda obs, k: act(state, obs, config, task, k), key,
                                   config, task)
