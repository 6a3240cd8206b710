"""sde_step and sde_logprob on every backend against the float64 torch reference: values, gradients in v,
the KL to v_ref, the noise_level = 0 Euler step, and Flow-GRPO's consistency (logp of a sampled step)."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine import ops, reference

from .helpers import assert_close, f64, poisoned, randn, schedule

pytestmark = pytest.mark.ops("sde_step", "sde_logprob")

KINDS = ("flow_grpo", "cps")
DTYPES = (torch.float32, torch.bfloat16)
LEVEL = {"flow_grpo": 0.7, "cps": 0.8}

# (shape, layout, schedule, noise-level multiplier): trailing sizes that are not powers of two, B = 1,
# slices, transposes, a batch-expanded input, per-sample schedules, t = 1 with and without sigma_max, t_next = 0
CASES = [
    ([1, 7], "contiguous", "scalar", 1.0),
    ([3, 5, 13], "contiguous", "vector", 1.0),
    ([2, 3, 4, 5], "contiguous", "start", 1.0),
    ([4, 1000, 3], "contiguous", "start_max", 1.0),
    ([5, 33], "contiguous", "last", 1.0),
    ([2, 9], "contiguous", "tensors", 2.0),
    ([3, 5, 13], "batch_slice", "vector", 0.5),
    ([3, 6, 11], "inner_slice", "start_max", 1.0),
    ([2, 3, 4, 5], "transpose", "vector", 1.0),
    ([1, 2, 3], "transpose", "scalar", 1.0),
    ([4, 6, 10], "expand", "vector", 1.0),
    ([2, 3, 2731], "batch_slice", "vector", 1.0),  # rows of 8193 elements: several loop steps and a tail
]
GRAD_CASES = [CASES[i] for i in (0, 3, 4, 6, 8, 10, 11)]


def case_id(case):
    shape, layout, sched, level = case
    return f"{'x'.join(map(str, shape))}-{layout}-{sched}-a{level}"


def _inputs(gen, shape, layout, sched, dtype):
    x, v, noise = (randn(gen, shape, dtype, layout) for _ in range(3))
    return x, v, noise, schedule(sched, shape[0], gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sde_step_matches_reference(backend, gen, case, kind, dtype):
    shape, layout, sched, level = case
    x, v, noise, (sigma, sigma_next, sigma_max) = _inputs(gen, shape, layout, sched, dtype)
    a = LEVEL[kind] * level
    with poisoned():
        x_next, logp = ops.sde_step(x, v, sigma, sigma_next, noise, noise_level=a, kind=kind, sigma_max=sigma_max,
                                    backend=backend)
    exp_x, exp_logp = reference.sde_step(f64(x), f64(v), f64(sigma), f64(sigma_next), f64(noise), noise_level=a,
                                         kind=kind, sigma_max=f64(sigma_max))
    assert x_next.dtype == dtype and x_next.shape == x.shape
    assert logp.dtype == torch.float32 and logp.shape == (shape[0],)
    assert_close(x_next, exp_x, dtype, "latent", "x_next")
    assert_close(logp, exp_logp, dtype, "stat", "logp")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sde_logprob_matches_reference(backend, gen, case, kind, dtype):
    shape, layout, sched, level = case
    x, v, _, (sigma, sigma_next, sigma_max) = _inputs(gen, shape, layout, sched, dtype)
    x_next = randn(gen, shape, dtype, layout)
    v_ref = randn(gen, shape, dtype, layout) if kind == "flow_grpo" else None
    a = LEVEL[kind] * level
    with poisoned():
        logp, kl = ops.sde_logprob(x_next, x, v, sigma, sigma_next, noise_level=a, kind=kind, v_ref=v_ref,
                                   sigma_max=sigma_max, backend=backend)
    exp_logp, exp_kl = reference.sde_logprob(f64(x_next), f64(x), f64(v), f64(sigma), f64(sigma_next),
                                             noise_level=a, kind=kind, v_ref=f64(v_ref), sigma_max=f64(sigma_max))
    assert logp.dtype == torch.float32 and logp.shape == (shape[0],)
    assert_close(logp, exp_logp, dtype, "stat", "logp")
    if v_ref is None:
        assert kl is None
    else:
        assert kl.dtype == torch.float32 and kl.shape == (shape[0],)
        assert_close(kl, exp_kl, dtype, "stat", "kl")


def test_sde_logprob_kl_is_none_without_v_ref(backend, gen):
    x, v, x_next = (randn(gen, [2, 5, 3]) for _ in range(3))
    logp, kl = ops.sde_logprob(x_next, x, v, 0.8, 0.6, backend=backend)
    assert kl is None and logp.shape == (2,)


# (kind, with v_ref, which outputs receive an upstream gradient)
GRAD_MODES = [("flow_grpo", True, "both"), ("flow_grpo", True, "kl"), ("flow_grpo", True, "logp"),
              ("flow_grpo", False, "logp"), ("cps", False, "logp")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", GRAD_MODES, ids=lambda m: f"{m[0]}-{'ref' if m[1] else 'noref'}-{m[2]}")
@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_sde_logprob_grad_matches_reference(backend, gen, case, mode, dtype):
    shape, layout, sched, level = case
    kind, with_ref, upstream = mode
    x, v, x_next, (sigma, sigma_next, sigma_max) = _inputs(gen, shape, layout, sched, dtype)
    v_ref = randn(gen, shape, dtype, layout) if with_ref else None
    g_logp, g_kl = randn(gen, [shape[0]]), randn(gen, [shape[0]])
    a = LEVEL[kind] * level

    def objective(logp, kl, g_logp, g_kl):
        terms = ([(logp * g_logp).sum()] if upstream in ("logp", "both") else []) + (
            [(kl * g_kl).sum()] if upstream in ("kl", "both") else [])
        return sum(terms)

    v = v.requires_grad_()
    logp, kl = ops.sde_logprob(x_next, x, v, sigma, sigma_next, noise_level=a, kind=kind, v_ref=v_ref,
                               sigma_max=sigma_max, backend=backend)
    with poisoned():
        objective(logp, kl, g_logp, g_kl).backward()

    v64 = f64(v).requires_grad_()
    exp_logp, exp_kl = reference.sde_logprob(f64(x_next), f64(x), v64, f64(sigma), f64(sigma_next), noise_level=a,
                                             kind=kind, v_ref=f64(v_ref), sigma_max=f64(sigma_max))
    objective(exp_logp, exp_kl, f64(g_logp), f64(g_kl)).backward()
    assert v.grad.dtype == dtype and v.grad.shape == v.shape
    assert_close(v.grad, v64.grad, dtype, "latent", "grad_v")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES[:6], ids=case_id)
def test_euler_step_at_noise_level_zero(backend, gen, case, kind):
    """noise_level = 0: x_next = x + v * (sigma_next - sigma) exactly as written here, logp all NaN."""
    shape, layout, sched, _ = case
    x, v, noise, (sigma, sigma_next, _) = _inputs(gen, shape, layout, sched, torch.float32)
    with poisoned():
        x_next, logp = ops.sde_step(x, v, sigma, sigma_next, noise, noise_level=0.0, kind=kind, backend=backend)
    dt = (torch.as_tensor(f64(sigma_next)) - torch.as_tensor(f64(sigma))).reshape(-1).expand(shape[0])
    expected = f64(x) + f64(v) * dt.reshape(-1, *[1] * (len(shape) - 1))
    assert_close(x_next, expected, torch.float32, "latent", "x_next", rtol=1e-5)
    assert logp.shape == (shape[0],) and bool(torch.isnan(logp).all())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_logprob_of_sampled_step_equals_its_logp(backend, gen, case, kind):
    """Flow-GRPO consistency: the log-density that sde_logprob assigns to the x_next sde_step drew equals the
    logp sde_step returned (float32)."""
    shape, layout, sched, level = case
    x, v, noise, (sigma, sigma_next, sigma_max) = _inputs(gen, shape, layout, sched, torch.float32)
    kw = dict(noise_level=LEVEL[kind] * level, kind=kind, sigma_max=sigma_max, backend=backend)
    x_next, logp_step = ops.sde_step(x, v, sigma, sigma_next, noise, **kw)
    logp, _ = ops.sde_logprob(x_next, x, v, sigma, sigma_next, **kw)
    assert bool(torch.isfinite(logp_step).all())
    assert_close(logp, logp_step.double(), torch.float32, "stat", "logp(sde_logprob) vs logp(sde_step)")


def test_cpp_takes_bf16_and_returns_bf16_latents(gen):
    from .conftest import require_backend

    require_backend("cpp", "sde_step", "sde_logprob")
    x, v, noise = (randn(gen, [2, 4, 6], torch.bfloat16) for _ in range(3))
    x_next, logp = ops.sde_step(x, v, 0.8, 0.7, noise, backend="cpp")
    assert x_next.dtype == torch.bfloat16 and logp.dtype == torch.float32
    v = v.requires_grad_()
    logp, _ = ops.sde_logprob(x_next, x, v, 0.8, 0.7, backend="cpp")
    logp.sum().backward()
    assert v.grad.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------------------
# hand-computed cases, on every backend
# ---------------------------------------------------------------------------------------------------------
X, V, NOISE = [[2.0, -4.0]], [[1.0, 3.0]], [[0.5, -1.0]]
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def test_flow_grpo_step_at_t1_with_sigma_max_by_hand(backend):
    """t = 1, t_next = 0.9, sigma_max = 0.96, a = 0.7: sigma_t = 0.7 sqrt(1 / 0.04) = 3.5, dt = -0.1,
    s = 3.5 sqrt(0.1), mu = x (1 - 12.25 * 0.1 / 2) + v (1 + 0) (-0.1) = 0.3875 x - 0.1 v = [0.675, -1.85],
    logp = -mean(noise^2) / 2 - log s - log sqrt(2 pi); kl to v_ref = v - [1, 2]: mean((0.1, 0.2)^2) / (2 * 3.5^2)."""
    x, v, noise = (torch.tensor(a) for a in (X, V, NOISE))
    s = 3.5 * math.sqrt(0.1)
    exp_x = torch.tensor([[0.675 + 0.5 * s, -1.85 - s]], dtype=torch.float64)
    exp_logp = torch.tensor([-(0.125 + 0.5) / 2 - math.log(s) - LOG_SQRT_2PI], dtype=torch.float64)
    with poisoned():
        x_next, logp = ops.sde_step(x, v, 1.0, 0.9, noise, noise_level=0.7, sigma_max=0.96, backend=backend)
    assert_close(x_next, exp_x, what="x_next", rtol=1e-5)
    assert_close(logp, exp_logp, what="logp", rtol=1e-5)
    # the same numbers with sigma_max as a [B] tensor, and sde_logprob of that sample with the KL
    v_ref = v - torch.tensor([[1.0, 2.0]])
    with poisoned():
        logp2, kl = ops.sde_logprob(x_next, x, v, torch.tensor([1.0]), 0.9, noise_level=0.7,
                                    sigma_max=torch.tensor([0.96]), v_ref=v_ref, backend=backend)
    assert_close(logp2, exp_logp, what="logp", rtol=1e-5)
    assert_close(kl, torch.tensor([0.025 / (2 * 12.25)]), what="kl", rtol=1e-5)


def test_flow_grpo_step_at_t1_defaults_to_sigma_next_by_hand(backend):
    """Without sigma_max, t* = sigma_next = 0.9 at t = 1: sigma_t = 0.7 sqrt(10), sigma_t^2 = 4.9."""
    x, v, noise = (torch.tensor(a) for a in (X, V, NOISE))
    s = math.sqrt(4.9 * 0.1)
    a_x = 1 - 4.9 * 0.1 / 2
    exp_x = torch.tensor([[a_x * 2 - 0.1 + 0.5 * s, -a_x * 4 - 0.3 - s]], dtype=torch.float64)
    with poisoned():
        x_next, logp = ops.sde_step(x, v, 1.0, 0.9, noise, noise_level=0.7, backend=backend)
    assert_close(x_next, exp_x, what="x_next", rtol=1e-5)
    assert_close(logp, torch.tensor([-0.3125 - math.log(s) - LOG_SQRT_2PI]), what="logp", rtol=1e-5)


def test_cps_step_by_hand(backend):
    """a = 1/3: s = t_next sin(pi / 6) = 0.2 at t = 0.5, t_next = 0.4; x0_hat = x - 0.5 v = [1.5, -5.5],
    x1_hat = x + 0.5 v = [2.5, -2.5]; mu = 0.6 x0_hat + sqrt(0.16 - 0.04) x1_hat; logp = -mean((s noise)^2)."""
    x, v, noise = (torch.tensor(a) for a in (X, V, NOISE))
    c = math.sqrt(0.12)
    exp_x = torch.tensor([[0.9 + 2.5 * c + 0.1, -3.3 - 2.5 * c - 0.2]], dtype=torch.float64)
    with poisoned():
        x_next, logp = ops.sde_step(x, v, 0.5, 0.4, noise, noise_level=1 / 3, kind="cps", backend=backend)
    assert_close(x_next, exp_x, what="x_next", rtol=1e-5)
    assert_close(logp, torch.tensor([-0.025]), what="logp", rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_inputs(backend, gen, kind):
    """float16 latents: x_next and grad_v come back in float16, logp / kl in float32, all close to the float64
    reference on the float16 values."""
    shape, dtype = [3, 5, 13], torch.float16
    x, v, noise, (sigma, sigma_next, _) = _inputs(gen, shape, "contiguous", "vector", dtype)
    x_next, logp = ops.sde_step(x, v, sigma, sigma_next, noise, kind=kind, backend=backend)
    exp_x, exp_logp = reference.sde_step(f64(x), f64(v), f64(sigma), f64(sigma_next), f64(noise), kind=kind)
    assert x_next.dtype == dtype and logp.dtype == torch.float32
    assert_close(x_next, exp_x, dtype, "latent", "x_next")
    assert_close(logp, exp_logp, dtype, "stat", "logp")
    v_ref = randn(gen, shape, dtype) if kind == "flow_grpo" else None
    v = v.requires_grad_()
    logp, kl = ops.sde_logprob(x_next, x, v, sigma, sigma_next, kind=kind, v_ref=v_ref, backend=backend)
    (logp.sum() + (0 if kl is None else kl.sum())).backward()
    v64 = f64(v).requires_grad_()
    exp_logp, exp_kl = reference.sde_logprob(f64(x_next), f64(x), v64, f64(sigma), f64(sigma_next), kind=kind,
                                             v_ref=f64(v_ref))
    (exp_logp.sum() + (0 if exp_kl is None else exp_kl.sum())).backward()
    assert_close(logp, exp_logp, dtype, "stat", "logp")
    assert v.grad.dtype == dtype
    assert_close(v.grad, v64.grad, dtype, "latent", "grad_v")
