"""grpo_loss, nft_loss and nft_optimality on every backend against the float64 torch reference (values and
gradients), and Flow-GRPO's on-policy check: ratio 1, clipfrac 0, approx_kl 0, gradient -A / n."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops, reference

from .helpers import assert_close, f64, poisoned, randn, uniform

DTYPES = (torch.float32, torch.bfloat16)
STATS = ("clipfrac", "approx_kl", "ratio_mean", "ratio_min", "ratio_max")


def make_valid(gen, batch, mode):
    if mode is None:
        return None
    if mode == "all":
        return torch.ones(batch, dtype=torch.bool)
    if mode == "none":
        return torch.zeros(batch, dtype=torch.bool)
    valid = torch.rand(batch, generator=gen) < 0.6
    valid[0], valid[-1] = True, batch == 1  # at least one valid; one invalid when B > 1
    return valid


# ---------------------------------------------------------------------------------------------------------
# grpo_loss
# ---------------------------------------------------------------------------------------------------------
# (B, clip_range, valid mode, kl_beta or None for no kl)
GRPO_CASES = [
    (1, 0.05, None, None),
    (7, (0.05, 0.1), "some", 0.04),
    (64, 0.05, "all", None),
    (1000, (0.03, 0.08), "some", 0.3),
    (5, 1e-4, None, 0.0),
    (6, 0.05, "none", 0.1),
    (5000, 0.05, "some", 0.1),  # several loop steps over the batch
]


def grpo_id(case):
    return f"B{case[0]}-clip{case[1]}-valid_{case[2]}-kl{case[3]}"


def grpo_inputs(gen, batch, dtype):
    logp_old = randn(gen, batch, scale=3.0, shift=-2.0).to(dtype)
    logp = (logp_old.double() + randn(gen, batch, torch.float64, scale=0.08)).to(dtype)
    adv = randn(gen, batch, dtype)
    return logp, logp_old, adv


@pytest.mark.ops("grpo_loss")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GRPO_CASES, ids=grpo_id)
def test_grpo_loss_matches_reference(backend, gen, case, dtype):
    batch, clip, mode, kl_beta = case
    logp, logp_old, adv = grpo_inputs(gen, batch, dtype)
    valid = make_valid(gen, batch, mode)
    kl = None if kl_beta is None else uniform(gen, batch, 0, 2, dtype)
    logp = logp.requires_grad_()
    if kl is not None:
        kl = kl.requires_grad_()
    kw = dict(clip_range=clip, valid=valid, kl_beta=kl_beta or 0.0)
    with poisoned():
        loss, stats = ops.grpo_loss(logp, logp_old, adv, kl=kl, backend=backend, **kw)
    assert loss.shape == () and loss.dtype == torch.float32
    g = 1.7  # an upstream gradient on the loss
    with poisoned():
        (g * loss).backward()

    lp64 = f64(logp).requires_grad_()
    kl64 = None if kl is None else f64(kl).requires_grad_()
    exp_loss, exp_stats = reference.grpo_loss(lp64, f64(logp_old), f64(adv), kl=kl64, **kw)
    (g * exp_loss).backward()
    assert_close(loss, exp_loss, dtype, "stat", "loss")
    assert set(stats) == set(STATS)
    for name in STATS:
        assert stats[name].shape == () and stats[name].dtype == torch.float32, name
        assert_close(stats[name], exp_stats[name], dtype, "stat", name)
    assert logp.grad.dtype == dtype
    assert_close(logp.grad, lp64.grad, dtype, "latent", "grad logp")  # in logp's dtype
    if kl is not None:
        assert kl.grad.dtype == dtype
        assert_close(kl.grad, kl64.grad, dtype, "latent", "grad kl")
    if mode == "none":
        assert float(loss.detach()) == 0.0 and all(bool(torch.isnan(stats[k])) for k in STATS)


@pytest.mark.ops("grpo_loss")
def test_grpo_loss_strided_inputs(backend, gen):
    """logp, logp_old, advantages and kl as strided views; gradients land in the strided leaves."""
    batch = 11
    logp, logp_old, adv = (t.repeat_interleave(2)[::2] for t in grpo_inputs(gen, batch, torch.float32))
    kl = uniform(gen, 3 * batch, 0, 1)[::3]
    valid = make_valid(gen, batch, "some")
    logp, kl = logp.requires_grad_(), kl.requires_grad_()
    assert not logp.is_contiguous() and not kl.is_contiguous()
    kw = dict(clip_range=0.05, valid=valid, kl_beta=0.2)
    with poisoned():
        loss, stats = ops.grpo_loss(logp, logp_old, adv, kl=kl, backend=backend, **kw)
        loss.backward()
    lp64, kl64 = f64(logp).requires_grad_(), f64(kl).requires_grad_()
    exp_loss, exp_stats = reference.grpo_loss(lp64, f64(logp_old), f64(adv), kl=kl64, **kw)
    exp_loss.backward()
    assert_close(loss, exp_loss, what="loss")
    for name in STATS:
        assert_close(stats[name], exp_stats[name], what=name)
    assert_close(logp.grad, lp64.grad, what="grad logp")
    assert_close(kl.grad, kl64.grad, what="grad kl")


# ---------------------------------------------------------------------------------------------------------
# nft_loss
# ---------------------------------------------------------------------------------------------------------
# (shape, layout, beta, per-sample t and r, kl_beta (None: no v_ref), valid mode)
NFT_CASES = [
    ([1, 7], "contiguous", 1.0, False, None, None),
    ([3, 5, 13], "contiguous", 1.0, True, 0.3, "some"),
    ([2, 3, 4, 5], "transpose", 0.1, True, 0.0, None),
    ([4, 1000, 3], "contiguous", 0.5, True, None, "some"),
    ([3, 5, 13], "batch_slice", 1.0, False, 0.3, "none"),
    ([3, 6, 11], "inner_slice", 1.0, True, 1e-4, "all"),
    ([4, 6, 10], "expand", 1.0, True, 0.3, "some"),
    ([5, 33], "batch_slice", 2.0, True, None, "some"),
    ([2, 3, 2731], "contiguous", 1.0, True, 0.3, "some"),  # rows of 8193 elements
]


def nft_id(case):
    shape, layout, beta, vec, kl_beta, mode = case
    return f"{'x'.join(map(str, shape))}-{layout}-b{beta}-{'vec' if vec else 'float'}-kl{kl_beta}-valid_{mode}"


def nft_inputs(gen, case, dtype):
    shape, layout, beta, vec, kl_beta, mode = case
    batch = shape[0]
    v, v_old, x_t, x0 = (randn(gen, shape, dtype, layout) for _ in range(4))
    v_ref = None if kl_beta is None else randn(gen, shape, dtype, layout)
    if vec:
        t = uniform(gen, batch, 0.05, 0.95)
        r = uniform(gen, batch, 0, 1)
        r[0] = 1.0 if batch > 1 else r[0]
    else:
        t, r = 0.625, 0.3
    kw = dict(beta=beta, v_ref=v_ref, kl_beta=kl_beta or 0.0, valid=make_valid(gen, batch, mode))
    return v, v_old, x_t, x0, t, r, kw


def nft_objective(out, g_loss, g_policy, g_kl, upstream):
    total = g_loss * out[0]
    if upstream == "all":
        total = total + (out[1] * g_policy).sum() + (0 if out[2] is None else (out[2] * g_kl).sum())
    return total


@pytest.mark.ops("nft_loss")
@pytest.mark.parametrize("upstream", ["loss", "all"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", NFT_CASES, ids=nft_id)
def test_nft_loss_matches_reference(backend, gen, case, dtype, upstream):
    v, v_old, x_t, x0, t, r, kw = nft_inputs(gen, case, dtype)
    batch = v.shape[0]
    g_loss, g_policy, g_kl = 0.8, randn(gen, batch), randn(gen, batch)
    v = v.requires_grad_()
    with poisoned():
        out = ops.nft_loss(v, v_old, x_t, x0, t, r, backend=backend, **kw)
    assert isinstance(out, ops.NFTLoss)
    with poisoned():
        nft_objective(out, g_loss, g_policy, g_kl, upstream).backward()

    v64 = f64(v).requires_grad_()
    kw64 = dict(kw, v_ref=f64(kw["v_ref"]))
    exp = reference.nft_loss(v64, f64(v_old), f64(x_t), f64(x0), f64(t), f64(r), **kw64)
    nft_objective(exp, g_loss, f64(g_policy), f64(g_kl), upstream).backward()

    assert out.loss.shape == () and out.loss.dtype == torch.float32
    assert out.policy.shape == (batch,) and out.policy.dtype == torch.float32
    assert_close(out.loss, exp[0], dtype, "stat", "loss")
    assert_close(out.policy, exp[1], dtype, "stat", "policy")
    if kw["v_ref"] is None:
        assert out.kl is None
    else:
        assert out.kl.shape == (batch,) and out.kl.dtype == torch.float32
        assert_close(out.kl, exp[2], dtype, "stat", "kl")
    assert v.grad.dtype == dtype and v.grad.shape == v.shape
    assert_close(v.grad, v64.grad, dtype, "latent", "grad_v")
    if case[-1] == "none":
        assert float(out.loss.detach()) == 0.0


@pytest.mark.ops("nft_loss")
def test_nft_loss_weight_floor(backend, gen):
    """x0_hat± within 1e-7 of x0: the weights sit at their 1e-5 floor (no division by ~0)."""
    shape = [2, 4, 6]
    v_old, x_t = randn(gen, shape), randn(gen, shape)
    t = torch.tensor([0.3, 0.8])
    x0 = x_t - t.reshape(-1, 1, 1) * v_old
    v = (v_old.double() + randn(gen, shape, torch.float64, scale=1e-7)).float().requires_grad_()
    r = torch.tensor([0.2, 0.9])
    out = ops.nft_loss(v, v_old, x_t, x0, t, r, backend=backend)
    out.loss.backward()
    v64 = f64(v).requires_grad_()
    exp = reference.nft_loss(v64, f64(v_old), f64(x_t), f64(x0), f64(t), f64(r))
    exp[0].backward()
    assert bool(torch.isfinite(out.policy).all() and torch.isfinite(v.grad).all())
    # float32 rounding of x_t - t v is ~1e-7, the size of the errors here: compare at that resolution
    assert_close(out.policy, exp[1], what="policy", atol=1e-3)
    assert_close(v.grad, v64.grad, what="grad_v", atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# nft_optimality
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.ops("nft_optimality")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,clip", [([1], 5.0), ([37], 5.0), ([3, 5], 2.0), ([1000], 0.5), ([5000], 5.0)], ids=str)
def test_nft_optimality_matches_reference(backend, gen, shape, clip, dtype):
    adv = randn(gen, shape, dtype, scale=2 * clip)
    with poisoned():
        r = ops.nft_optimality(adv, clip, backend=backend)
    assert r.shape == adv.shape and r.dtype == torch.float32
    expected = reference.nft_optimality(f64(adv), clip)
    assert_close(r, expected, dtype, "stat", "r")
    assert bool(((r >= 0) & (r <= 1)).all())


# ---------------------------------------------------------------------------------------------------------
# Flow-GRPO on-policy consistency
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.ops("grpo_loss")
@pytest.mark.parametrize("with_valid", [False, True])
def test_grpo_on_policy_ratio_is_one(backend, gen, with_valid):
    """logp_old = logp: every ratio is 1, nothing clipped, approx_kl 0, d loss / d logp = -A / n on the valid
    samples and 0 elsewhere; d loss / d kl = kl_beta / n."""
    batch = 9
    logp = randn(gen, batch, scale=3.0).requires_grad_()
    kl = uniform(gen, batch, 0, 1).requires_grad_()
    adv = randn(gen, batch)
    valid = make_valid(gen, batch, "some") if with_valid else None
    with poisoned():
        loss, stats = ops.grpo_loss(logp, logp.detach().clone(), adv, valid=valid, kl=kl, kl_beta=0.04,
                                    backend=backend)
    with poisoned():
        loss.backward()
    mask = torch.ones(batch, dtype=torch.bool) if valid is None else valid
    n = int(mask.sum())
    for name in ("ratio_mean", "ratio_min", "ratio_max"):
        assert float(stats[name]) == pytest.approx(1.0, abs=1e-6), name
    assert float(stats["clipfrac"]) == 0.0
    assert float(stats["approx_kl"]) == pytest.approx(0.0, abs=1e-12)
    expected_grad = torch.where(mask, -adv.double() / n, 0.0)
    assert_close(logp.grad, expected_grad, what="grad logp", rtol=1e-6, atol=1e-7)
    assert_close(kl.grad, torch.where(mask, 0.04 / n, 0.0), what="grad kl", rtol=1e-6, atol=1e-7)
    expected_loss = ((-adv.double() + 0.04 * kl.detach().double()) * mask).sum() / n
    assert float(loss.detach()) == pytest.approx(float(expected_loss), rel=1e-5)


@pytest.mark.ops("sde_step", "sde_logprob", "grpo_loss")
@pytest.mark.parametrize("kind", ["flow_grpo", "cps"])
def test_first_update_after_rollout_is_on_policy(backend, gen, kind):
    """Roll out with sde_step, recompute logp with sde_logprob (grad in v) and take the rollout's logp as
    logp_old: the ratios are 1 within float32 error, well inside clip_range 1e-4, so nothing is clipped and
    d loss / d logp = -A / n."""
    shape, batch = [6, 4, 7], 6
    x, v, noise = (randn(gen, shape) for _ in range(3))
    sigma = uniform(gen, batch, 0.3, 0.9)
    sigma_next = sigma - 0.1
    level = 0.7 if kind == "flow_grpo" else 0.8
    with torch.no_grad():
        x_next, logp_old = ops.sde_step(x, v, sigma, sigma_next, noise, noise_level=level, kind=kind,
                                        backend=backend)
    v = v.clone().requires_grad_()
    logp, _ = ops.sde_logprob(x_next, x, v, sigma, sigma_next, noise_level=level, kind=kind, backend=backend)
    logp.retain_grad()
    adv = randn(gen, batch)
    loss, stats = ops.grpo_loss(logp, logp_old, adv, backend=backend)
    loss.backward()
    assert float(stats["clipfrac"]) == 0.0
    assert abs(float(stats["ratio_min"]) - 1) < 1e-5 and abs(float(stats["ratio_max"]) - 1) < 1e-5
    assert float(stats["approx_kl"]) < 1e-10
    assert_close(logp.grad, -adv.double() / batch, what="grad logp", rtol=1e-4, atol=1e-6)
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())
