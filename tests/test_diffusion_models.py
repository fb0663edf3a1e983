"""Diffusion models (diffusion/models): the algorithm protocol, short training runs learn, vmap
== loop over seeds, the task as a traced argument, the sampling command restores a checkpoint
and writes its table and picture, classifier-free guidance at w = 0 is the conditional
denoiser, and each model's denoiser view agrees with its native parameterization (DDPM's eps
network, flow matching's velocity).
"""
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.core import config_rules
from diffusion import data as data_lib
from diffusion import losses, networks, samplers, sampling, schedules
from diffusion.models import ddpm, edm, flow_matching, ve, vp
from launch import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"edm": edm, "vp": vp, "ve": ve, "ddpm": ddpm, "flow_matching": flow_matching}


def _tiny(algo, **over):
    c = algo.default_config()
    c.batch_size = 256
    c.data.num_train = 4000
    c.data.num_heldout = 1000
    c.sampler.num_steps = 10                      # Heun, 19 NFE
    for k, v in over.items():
        c[k] = v
    return c


def _init(algo, config, task, key):
    return jax.jit(lambda k: algo.init(k, config, task))(key)


def _randomized_state(algo, config, task, scale=0.3):
    """A state with random parameters (the zero-initialised output layer makes F = 0)."""
    state = _init(algo, config, task, jax.random.key(0))
    params = _randomize(state.params, jax.random.key(1), scale)
    return state.replace(params=params, ema_params=params)


def _randomize(params, key, scale=0.3):
    """Random parameters (the zero-initialised output layer would make every net F = 0)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape, leaf.dtype)
                                     for k, leaf in zip(keys, leaves)])


# ============================================================================ the protocol
@pytest.mark.parametrize("name", list(MODELS))
def test_protocol_members(name):
    """Each model module is a registered algorithm with the documented members; its primary
    metric is what `evaluate` returns (with the runner's "eval/" prefix)."""
    algo = registry.get(name)
    assert algo is MODELS[name]
    assert algo.TASK_FLAG == "dataset" and algo.DEFAULT_TASK == "moons"
    assert algo.PRIMARY_METRIC == "eval/sliced_wasserstein"
    assert registry.optional(algo, "sample") and registry.optional(algo, "artifacts")
    assert algo.SWEEPABLE == ("lr",)
    config = _tiny(algo)
    assert "max_grad_norm" in config and "grad_clip" not in config
    assert set(sampling.sampler_names(algo.MODEL)) >= set(sampling.SAMPLERS)


_OWN_BAD = {"edm": ("sigma_data", 0.0), "vp": ("M", 0), "ve": ("sde_sigma_min", -0.01),
            "ddpm": ("beta_T", 1.0), "flow_matching": ("M", -3)}
_ORDER_BAD = {"vp": ("beta_min", 30.0), "ve": ("sde_sigma_max", 0.001), "ddpm": ("beta_1", 0.05)}


@pytest.mark.parametrize("name", list(MODELS))
def test_config_rules_cover_every_field_and_refuse_bad_values(name):
    """CONFIG_RULES (shared ones from diffusion/protocol.py) cover every field of the default
    config, which they accept; a bad value of a shared, a nested and a model's own field, and
    a broken relation between fields, are refused with the field's name."""
    algo = MODELS[name]
    assert config_rules.uncovered(algo.default_config(), algo) == []
    config_rules.check(algo.default_config(), algo)
    own_field, own_value = _OWN_BAD[name]
    bad = [("sampler.name", "euler_a"), ("sampler.grid", "karras"),
           ("sampler.sde_predictor", "heun"), ("sampler.sde_grid", "uniform"),
           ("sampler.ancestral_variance", "learned"), ("sampler.ddpm_variance", "fixed"),
           ("sampler.n_corrector", -1), ("sampler.sde_eps", 0.0), ("net.kind", "unet"),
           ("ema_decay", 1.5), ("lr_warmup", -1), ("eval.guidance", float("nan")),
           (own_field, own_value)]
    for path, value in bad:
        config = algo.default_config()
        *parents, leaf = path.split(".")
        functools.reduce(lambda node, p: node[p], parents, config)[leaf] = value
        with pytest.raises(ValueError, match=f"config.{path}="):
            config_rules.check(config, algo)
    relations = [("sampler", "sigma_min", 1000.0), ("sampler", "s_tmin", 60.0)]
    if name in _ORDER_BAD:
        relations.append((None,) + _ORDER_BAD[name])
    for parent, leaf, value in relations:
        config = algo.default_config()
        (config[parent] if parent else config)[leaf] = value
        with pytest.raises(ValueError, match="must be below|must not exceed"):
            config_rules.check(config, algo)
    if name == "flow_matching":                   # a model's own sampler is a valid name
        config = algo.default_config()
        config.sampler.name = "euler_t"
        config_rules.check(config, algo)


def test_task_is_a_pytree_of_arrays_that_may_be_traced():
    """The runner passes the task's arrays as one jit argument: DataTask's leaves are exactly
    its four arrays, name and class count are static, and init / update / evaluate give the
    same values (bit for bit) with the task traced as with it closed over."""
    config = _tiny(edm, batch_size=32)
    config.net.width, config.net.depth, config.sampler.num_steps = 32, 1, 2
    config.data.num_train, config.data.num_heldout = 200, 64
    task = edm.make_task("moons", config)
    leaves, treedef = jax.tree.flatten(task)
    assert len(leaves) == 4 and all(isinstance(v, jax.Array) for v in leaves)
    assert jax.tree.unflatten(treedef, leaves).name == "moons"

    def program(key, t):
        state = edm.init(key, config, t)
        state, metrics = jax.lax.scan(lambda s, _: edm.update(s, config, t), state, None,
                                      length=2)
        return state.ema_params, metrics, edm.evaluate(state, key, config, t)

    key = jax.random.key(4)
    traced = jax.jit(program)(key, task)
    closed = jax.jit(lambda k: program(k, task))(key)
    for a, b in zip(jax.tree.leaves(traced), jax.tree.leaves(closed)):
        np.testing.assert_array_equal(a, b)


# ============================================================================ training learns
# After STEPS[name] updates (batch 256, the default 3 x 128 MLP) each model's loss on a fixed
# evaluation batch is below LOSS_FACTOR x its initial value, and the sliced Wasserstein
# distance of 1000 Heun samples (10 steps, 19 NFE) to the held-out moons is below SW_FACTOR x
# the untrained model's and below SW_MAX. For scale: two exact sets of 1000 are ~0.03 apart;
# untrained models give 0.24 (EDM, D = c_skip x), 0.39 (flow matching) and 49 to 155 (VE, VP,
# DDPM: D = x leaves the prior's noise). VE learns its high noise levels slowest (measured
# 0.28 / 0.07 / 0.05 after 400 / 800 / 1200 updates), hence its longer run. Measured (loss
# ratio, distance): EDM 0.75, 0.075; VP 0.21, 0.13; VE 0.47, 0.062; DDPM 0.20, 0.090; flow
# matching 0.70, 0.13. The EDM and flow-matching losses keep a large irreducible part (the
# denoising error at high noise, unit-scaled), so their ratios stay near 0.7.
STEPS = {"edm": 400, "vp": 400, "ve": 1200, "ddpm": 400, "flow_matching": 400}
LOSS_FACTOR = {"edm": 0.85, "vp": 0.5, "ve": 0.7, "ddpm": 0.5, "flow_matching": 0.85}
SW_FACTOR = 0.5
SW_MAX = 0.2


@pytest.mark.parametrize("name", [n if n == "edm" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS])
def test_short_training_lowers_loss_and_distance(name):
    algo = MODELS[name]
    config = _tiny(algo)
    task = algo.make_task("moons", config)
    state0 = _init(algo, config, task, jax.random.key(0))
    net = networks.make_network(config)
    x_eval = task.heldout
    k_eval = jax.random.key(7)

    @jax.jit
    def eval_loss(params):
        per = algo.MODEL.loss(networks.network_fn(net, params), x_eval, k_eval, config)
        return jnp.mean(per) / x_eval.shape[1]

    @jax.jit
    def train(state):
        return jax.lax.scan(lambda s, _: algo.update(s, config, task), state, None,
                            length=STEPS[name])

    state, metrics = train(state0)
    assert np.all(np.isfinite(metrics["loss"]))
    assert int(state.step) == STEPS[name]
    loss0, loss1 = float(eval_loss(state0.params)), float(eval_loss(state.params))
    assert loss1 < LOSS_FACTOR[name] * loss0, (loss0, loss1)
    evaluate = jax.jit(lambda s, k: algo.evaluate(s, k, config, task))
    sw0 = float(evaluate(state0, jax.random.key(1))["sliced_wasserstein"])
    sw1 = float(evaluate(state, jax.random.key(1))["sliced_wasserstein"])
    assert sw1 < SW_FACTOR * sw0 and sw1 < SW_MAX, (sw0, sw1)


# ============================================================================ vmap == loop
def test_vmap_over_seeds_equals_loop():
    config = _tiny(edm)
    task = edm.make_task("moons", config)
    keys = jax.random.split(jax.random.key(3), 2)
    steps = 3

    def run(state):
        return jax.lax.scan(lambda s, _: edm.update(s, config, task), state, None, length=steps)

    states = jax.jit(jax.vmap(lambda k: edm.init(k, config, task)))(keys)
    batched, m_b = jax.jit(jax.vmap(run))(states)
    for i in range(2):
        single, m_s = jax.jit(run)(_init(edm, config, task, keys[i]))
        np.testing.assert_allclose(m_b["loss"][i], m_s["loss"], rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(sampling.seed_state(batched, i).ema_params),
                        jax.tree.leaves(single.ema_params)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ============================================================================ denoiser views
def test_ddpm_denoiser_recovers_the_eps_network_on_trained_levels():
    """eps_from_denoiser(D) at level index i is eps_theta(x_t, i) (the nearest-level lookup)."""
    config = _tiny(ddpm)
    task = ddpm.make_task("moons", config)
    state = _randomized_state(ddpm, config, task)
    net = networks.make_network(config)
    ab = ddpm.alphas_bar(config)
    idx = jnp.array([0, 1, 17, 500, 998, 999] * 4, jnp.int32)
    x_t = jax.random.normal(jax.random.key(2), (idx.shape[0], 2))
    eps_d = jax.jit(lambda st: samplers.eps_from_denoiser(
        sampling.denoiser(ddpm.MODEL, st, config), ab)(x_t, idx))(state)
    eps_raw = jax.jit(net.apply)(state.params, x_t, idx.astype(jnp.float32))
    np.testing.assert_allclose(eps_d, eps_raw, rtol=2e-3, atol=2e-4)


def test_flow_matching_denoiser_gives_back_the_velocity():
    """v = (x_t - D(x_t / (1 - t); t / (1 - t))) / t (losses.flow_velocity_from_denoiser)."""
    config = _tiny(flow_matching)
    task = flow_matching.make_task("moons", config)
    state = _randomized_state(flow_matching, config, task)
    net = networks.make_network(config)
    t = jnp.linspace(0.05, 0.95, 16)
    x_t = jax.random.normal(jax.random.key(2), (16, 2))
    v_from_d = jax.jit(lambda st: losses.flow_velocity_from_denoiser(
        sampling.denoiser(flow_matching.MODEL, st, config))(x_t, t))(state)
    v = jax.jit(net.apply)(state.params, x_t, 999.0 * t)
    np.testing.assert_allclose(v_from_d, v, rtol=1e-4, atol=1e-4)


def test_flow_matching_euler_t_is_uniform_time_euler():
    """Euler in sigma on sigma_i = t_i / (1 - t_i) == Euler x <- x + (t' - t) v on uniform t."""
    mix = data_lib.eight_gaussians_gmm()
    v = losses.flow_velocity_from_denoiser(mix.denoise)
    n_steps, t_max = 8, 80.0 / 81.0
    y0 = 80.0 * jax.random.normal(jax.random.key(0), (64, 2))
    grid = schedules.flow_sigma_steps(n_steps, 80.0)
    y, info = samplers.sample_euler(None, mix.denoise, y0.shape, grid, x_init=y0)
    x = y0 / (1.0 + 80.0)  # x_t = (1 - t) y
    ts = t_max * (1.0 - np.arange(n_steps + 1) / n_steps)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * v(x, t)
    assert info["nfe"] == n_steps
    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-4)


# ============================================================================ CFG
def test_cfg_weight_zero_is_the_conditional_denoiser(tmp_path):
    config = _tiny(edm, conditional=True)
    task = edm.make_task("digits", config)
    state = _randomized_state(edm, config, task, scale=0.1)
    assert state.num_classes == 10 and state.data_shape == (8, 8, 1)
    n = 12
    labels = jnp.arange(n, dtype=jnp.int32) % 10
    x = jax.random.normal(jax.random.key(2), (n, 8, 8, 1))
    sigma = jnp.full((n,), 0.7)

    @jax.jit
    def outputs(st, w):
        d = functools.partial(sampling.denoiser, edm.MODEL, st, config)
        return (d(labels=labels)(x, sigma), d()(x, sigma),      # conditional, unconditional
                d(labels=labels, guidance=w)(x, sigma),          # traced w: the CFG path
                d(labels=labels, guidance=2.0)(x, sigma))

    cond, uncond, w0, w2 = outputs(state, jnp.float32(0.0))
    assert float(jnp.max(jnp.abs(cond - uncond))) > 1e-3  # the label matters
    np.testing.assert_allclose(w0, cond, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs(state, jnp.float32(-1.0))[2], uncond, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(w2, 3.0 * cond - 2.0 * uncond, rtol=1e-5, atol=1e-5)

    # A conditional training step (label dropout) and guided sampling run.
    config.batch_size = 32
    state, metrics = jax.jit(lambda s: edm.update(s, config, task))(state)
    assert np.isfinite(float(metrics["loss"]))
    options = dict(num_steps=3, labels=jnp.arange(4, dtype=jnp.int32), guidance=1.0)
    x, info = jax.jit(lambda s, k: sampling.draw_samples(edm.MODEL, s, k, config, 4, **options))(
        state, jax.random.key(1))
    assert x.shape == (4, 8, 8, 1) and info["nfe"] == 5 and np.all(np.isfinite(x))
    x_protocol = jax.jit(lambda s, k: edm.sample(s, k, config, task, 4, **options))(
        state, jax.random.key(1))
    np.testing.assert_array_equal(x_protocol, x)
    with pytest.raises(ValueError, match="labeled data"):
        edm.init(jax.random.key(0), config, edm.make_task("moons", config))

    # The after-training report on images: a table and the class-per-row picture.
    seeds = jax.tree.map(lambda v: v[None], state)
    written = edm.artifacts(seeds, config, task, str(tmp_path), samplers=["heun"], nfe=(3,),
                            num_samples=20, guidance=1.0, print_fn=lambda *_: None)
    assert written == ["sampler_table.json", "samples.png"]
    table = json.load(open(tmp_path / "sampler_table.json"))
    assert [(r["sampler"], r["nfe"]) for r in table["rows"]] == [("heun", 3)]
    assert os.path.getsize(tmp_path / "samples.png") > 1000


# ============================================================================ the commands
TINY_RUN = {"num_updates": 20, "log_every": 10, "eval_every": 20, "batch_size": 64,
            "net.width": 32, "net.depth": 2, "data.num_train": 500, "data.num_heldout": 200,
            "sampler.num_steps": 4}


def _tiny_run_flags():
    return [f"--config.{k}={v}" for k, v in TINY_RUN.items()]


def _check_sample_outputs(workdir, table, expected):
    got = {(r["sampler"], r["budget"], r["nfe"]) for r in table["rows"]}
    assert got == expected
    assert table["step"] == 20 and table["num_samples"] == 200
    assert all(np.isfinite(r["sliced_wasserstein"]) for r in table["rows"])
    assert table["quality_floor"] > 0
    assert json.load(open(os.path.join(workdir, "sampler_table.json"))) == table
    assert os.path.getsize(os.path.join(workdir, "samples.png")) > 1000


def test_sample_workdir_restores_a_run_and_writes_table_and_picture(tmp_path):
    """runner.train (2 seeds, checkpoint), then the sampling command's function in-process."""
    from launch import runner
    from launch import sample as sample_cmd
    config = edm.default_config()
    for path, value in TINY_RUN.items():
        *parents, leaf = path.split(".")
        node = functools.reduce(lambda n, p: n[p], parents, config)
        node[leaf] = value
    workdir = str(tmp_path / "run")
    task = edm.make_task("moons", config)
    runner.train(edm, config, task, num_seeds=2, workdir=workdir, progress=False,
                 run_info={"algo": "edm", "env": "moons"}, artifacts=False,
                 print_fn=lambda *_: None)
    lines = []
    table = sample_cmd.sample_workdir(workdir, samplers=["heun", "euler"], nfe=(5,),
                                      seed_index=1, print_fn=lines.append)
    _check_sample_outputs(workdir, table, {("heun", 5, 5), ("euler", 5, 5)})
    assert "quality floor" in "\n".join(lines)
    with pytest.raises(ValueError, match="valid:"):
        sample_cmd.sample_workdir(workdir, samplers=["nope"])
    with pytest.raises(ValueError, match="seed index"):
        sample_cmd.sample_workdir(workdir, samplers=["euler"], num_steps=2, seed_index=2)


@pytest.mark.slow
def test_sample_command_line(tmp_path):
    """The same through the two commands: launch.run trains, launch.sample reads the run."""
    workdir = str(tmp_path / "run")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    train = [sys.executable, "-m", "launch.run", "--algo=edm", "--dataset=moons",
             "--num_seeds=2", f"--workdir={workdir}", "--progress=false"] + _tiny_run_flags()
    out = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sliced_wasserstein" in out.stdout
    cmd = [sys.executable, "-m", "launch.sample", f"--workdir={workdir}",
           "--samplers=heun,euler,rk45", "--nfe=5,9", "--seed_index=1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "quality floor" in out.stdout
    table = json.load(open(os.path.join(workdir, "sampler_table.json")))
    rk45_nfe = [r["nfe"] for r in table["rows"] if r["sampler"] == "rk45"]
    _check_sample_outputs(workdir, table, {("heun", 5, 5), ("heun", 9, 9), ("euler", 5, 5),
                                           ("euler", 9, 9), ("rk45", "adaptive", rk45_nfe[0])})
    bad = subprocess.run([sys.executable, "-m", "launch.sample", f"--workdir={workdir}",
                          "--sampler=nope"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "valid:" in bad.stderr
