"""The torch reference (editrl_engine.reference) against docs/design.md §3 written out independently here in float64,
and gradcheck of its differentiable ops. Every fused backend is compared with this reference elsewhere."""
from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError, gradcheck

from editrl_engine import reference

from .helpers import randn, uniform

D64 = torch.float64


def col(value, like):
    """A float or [B] tensor as float64 [B, 1, ..., 1]."""
    return torch.as_tensor(value, dtype=D64).reshape(-1).expand(like.shape[0]).reshape(-1, *[1] * (like.dim() - 1))


def mean_rows(x):
    return x.flatten(1).mean(1)


def design_sde(x, v, t, tn, a, kind, t_max=None, noise=None, x_next=None, v_ref=None):
    """docs/design.md §3 sde_step / sde_logprob, literally: returns (x_next, logp, kl)."""
    t, tn = col(t, x), col(tn, x)
    dt = tn - t
    if kind == "flow_grpo":
        t_star = torch.where(t == 1, col(tn if t_max is None else t_max, x), t)
        sig = a * torch.sqrt(t / (1 - t_star))
        s = sig * torch.sqrt(-dt)
        mu_of = lambda vel: x * (1 + sig ** 2 * dt / (2 * t)) + vel * (1 + sig ** 2 * (1 - t) / (2 * t)) * dt
    else:
        s = tn * math.sin(a * math.pi / 2)
        mu_of = lambda vel: (1 - tn) * (x - t * vel) + torch.sqrt(tn ** 2 - s ** 2) * (x + (1 - t) * vel)
    mu = mu_of(v)
    if x_next is None:
        x_next = mu + s * noise
    if kind == "flow_grpo":
        logp = mean_rows(-(x_next - mu) ** 2 / (2 * s ** 2) - torch.log(s) - math.log(math.sqrt(2 * math.pi)))
    else:
        logp = -mean_rows((x_next - mu) ** 2)
    kl = None if v_ref is None else mean_rows((mu - mu_of(v_ref)) ** 2 / (2 * sig ** 2))
    return x_next, logp, kl


def design_nft(v, v_old, x_t, x0, t, r, beta, v_ref=None, kl_beta=0.0, valid=None):
    t = col(t, v)
    r = torch.as_tensor(r, dtype=D64).reshape(-1).expand(v.shape[0])
    v_pos, v_neg = beta * v + (1 - beta) * v_old, (1 + beta) * v_old - beta * v
    e_pos, e_neg = x_t - t * v_pos - x0, x_t - t * v_neg - x0
    w_pos = mean_rows(e_pos.abs()).detach().clamp_min(1e-5)
    w_neg = mean_rows(e_neg.abs()).detach().clamp_min(1e-5)
    policy = (r * mean_rows(e_pos ** 2) / w_pos + (1 - r) * mean_rows(e_neg ** 2) / w_neg) / beta
    kl = None if v_ref is None else mean_rows((v - v_ref) ** 2)
    per = policy + (kl_beta * kl if kl is not None else 0)
    idx = [i for i in range(v.shape[0]) if valid is None or bool(valid[i])]
    loss = sum(per[i] for i in idx) / len(idx) if idx else torch.zeros((), dtype=D64)
    return loss, policy, kl


SHAPES = [[1, 7], [3, 5, 13], [2, 3, 4, 5]]


@pytest.mark.parametrize("kind", ["flow_grpo", "cps"])
@pytest.mark.parametrize("sched", ["mid", "start", "start_max", "last"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sde_reference_is_the_design_formula(gen, shape, sched, kind):
    B = shape[0]
    x, v, noise, x_next, v_ref = (randn(gen, shape, D64) for _ in range(5))
    t_max = None
    if sched == "mid":
        t = uniform(gen, B, 0.3, 0.9, D64)
        tn = t - uniform(gen, B, 0.05, 0.2, D64)
    elif sched == "start":
        t, tn = torch.ones(B, dtype=D64), uniform(gen, B, 0.7, 0.95, D64)
    elif sched == "start_max":
        t, tn, t_max = torch.ones(B, dtype=D64), uniform(gen, B, 0.7, 0.95, D64), 0.97
    else:
        t, tn = uniform(gen, B, 0.05, 0.2, D64), torch.zeros(B, dtype=D64)
    a = 0.7 if kind == "flow_grpo" else 0.8
    ref = v_ref if kind == "flow_grpo" else None
    got_x, got_logp = reference.sde_step(x, v, t, tn, noise, noise_level=a, kind=kind, sigma_max=t_max)
    exp_x, exp_logp, _ = design_sde(x, v, t, tn, a, kind, t_max, noise=noise)
    torch.testing.assert_close(got_x, exp_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_logp, exp_logp, rtol=1e-12, atol=1e-12)
    got_logp, got_kl = reference.sde_logprob(x_next, x, v, t, tn, noise_level=a, kind=kind, v_ref=ref,
                                             sigma_max=t_max)
    _, exp_logp, exp_kl = design_sde(x, v, t, tn, a, kind, t_max, x_next=x_next, v_ref=ref)
    torch.testing.assert_close(got_logp, exp_logp, rtol=1e-12, atol=1e-12)
    if ref is None:
        assert got_kl is None
    else:
        torch.testing.assert_close(got_kl, exp_kl, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nft_reference_is_the_design_formula(gen, shape, with_ref):
    B = shape[0]
    v, v_old, x_t, x0, v_ref = (randn(gen, shape, D64) for _ in range(5))
    t, r = uniform(gen, B, 0.1, 0.9, D64), uniform(gen, B, 0, 1, D64)
    valid = torch.arange(B) % 3 != 1
    kw = dict(v_ref=v_ref, kl_beta=0.25) if with_ref else {}
    got = reference.nft_loss(v, v_old, x_t, x0, t, r, beta=0.6, valid=valid, **kw)
    exp = design_nft(v, v_old, x_t, x0, t, r, 0.6, valid=valid, **kw)
    for g, e in zip(got, exp):
        if e is None:
            assert g is None
        else:
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_grpo_reference_is_the_design_formula(gen):
    B = 40
    logp_old = randn(gen, B, D64, scale=3)
    logp = logp_old + randn(gen, B, D64, scale=0.1)
    adv, kl = randn(gen, B, D64), uniform(gen, B, 0, 1, D64)
    valid = torch.arange(B) % 4 != 0
    lo, hi = 0.05, 0.08
    loss, stats = reference.grpo_loss(logp, logp_old, adv, clip_range=(lo, hi), valid=valid, kl=kl, kl_beta=0.3)
    per, ratios, clipped, d2 = [], [], [], []
    for i in range(B):
        if not valid[i]:
            continue
        ratio = math.exp(float(logp[i] - logp_old[i]))
        a = float(adv[i])
        per.append(max(-a * ratio, -a * min(max(ratio, 1 - lo), 1 + hi)) + 0.3 * float(kl[i]))
        ratios.append(ratio)
        clipped.append(ratio < 1 - lo or ratio > 1 + hi)
        d2.append(float(logp[i] - logp_old[i]) ** 2)
    assert 0 < sum(clipped) < len(clipped)  # both branches exercised
    assert float(loss) == pytest.approx(sum(per) / len(per), rel=1e-12)
    assert float(stats["clipfrac"]) == pytest.approx(sum(clipped) / len(clipped), rel=1e-12)
    assert float(stats["approx_kl"]) == pytest.approx(0.5 * sum(d2) / len(d2), rel=1e-12)
    assert float(stats["ratio_mean"]) == pytest.approx(sum(ratios) / len(ratios), rel=1e-12)
    assert float(stats["ratio_min"]) == pytest.approx(min(ratios), rel=1e-12)
    assert float(stats["ratio_max"]) == pytest.approx(max(ratios), rel=1e-12)


@pytest.mark.parametrize("rescale", ["none", "norm"])
def test_cfg_reference_is_the_design_formula(gen, rescale):
    cond, uncond = randn(gen, [2, 3, 5], D64), randn(gen, [2, 3, 5], D64)
    scale = torch.tensor([4.0, 1.5], dtype=D64)
    got = reference.cfg_combine(cond, uncond, scale, rescale=rescale)
    for b in range(2):
        for tok in range(3):
            c, u = cond[b, tok], uncond[b, tok]
            out = u + float(scale[b]) * (c - u)
            if rescale == "norm":
                out = out * math.sqrt(float((c * c).sum())) / math.sqrt(float((out * out).sum()))
            torch.testing.assert_close(got[b, tok], out, rtol=1e-12, atol=1e-12)


def test_nft_optimality_reference_by_hand():
    adv = torch.tensor([-9.0, -5.0, -2.5, 0.0, 1.0, 5.0, 7.0], dtype=D64)
    expected = torch.tensor([0.0, 0.0, 0.25, 0.5, 0.6, 1.0, 1.0], dtype=D64)
    torch.testing.assert_close(reference.nft_optimality(adv, 5.0), expected, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# gradcheck in float64
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flow_grpo", "cps"])
def test_gradcheck_sde_logprob(gen, kind):
    shape = [2, 3, 4]
    x, x_next, v, v_ref = (randn(gen, shape, D64) for _ in range(4))
    t = torch.tensor([1.0, 0.6], dtype=D64)
    tn = torch.tensor([0.85, 0.45], dtype=D64)
    ref = v_ref if kind == "flow_grpo" else None

    def fn(v):
        logp, kl = reference.sde_logprob(x_next, x, v, t, tn, noise_level=0.9, kind=kind, v_ref=ref, sigma_max=0.95)
        return (logp,) if kl is None else (logp, kl)

    assert gradcheck(fn, (v.requires_grad_(),), fast_mode=False)


def _constant_weight_nft_inputs(gen, shape):
    """Inputs where mean |x0_hat± - x0| < 1e-5 (also after gradcheck's perturbation), so w± = 1e-5 is constant
    and finite differences see the same function autograd differentiates."""
    B = shape[0]
    v_old, x_t = randn(gen, shape, D64), randn(gen, shape, D64)
    t = uniform(gen, B, 0.2, 0.9, D64)
    x0 = x_t - col(t, x_t) * v_old
    v = v_old + randn(gen, shape, D64, scale=3e-6)
    return v, v_old, x_t, x0, t


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_gradcheck_nft_loss_policy(gen, beta):
    shape = [3, 2, 5]
    v, v_old, x_t, x0, t = _constant_weight_nft_inputs(gen, shape)
    r = torch.tensor([0.0, 0.35, 1.0], dtype=D64)
    valid = torch.tensor([True, True, False])
    for sign in (1, -1):  # the premise: both weights sit at the 1e-5 floor
        v_sig = beta * v + (1 - beta) * v_old if sign == 1 else (1 + beta) * v_old - beta * v
        assert float(mean_rows((x_t - col(t, v) * v_sig - x0).abs()).max()) < 5e-6

    def fn(v):
        loss, policy, _ = reference.nft_loss(v, v_old, x_t, x0, t, r, beta=beta, valid=valid)
        return loss, policy

    assert gradcheck(fn, (v.requires_grad_(),), fast_mode=False)


def test_gradcheck_nft_loss_kl_term(gen):
    shape = [3, 4, 3]
    v_gen, v_old, x_t, x0, v_ref = (randn(gen, shape, D64) for _ in range(5))
    t, r = uniform(gen, 3, 0.2, 0.9, D64), uniform(gen, 3, 0, 1, D64)
    assert gradcheck(lambda v: reference.nft_loss(v, v_old, x_t, x0, t, r, v_ref=v_ref, kl_beta=0.5)[2],
                     (v_gen.requires_grad_(),), fast_mode=False)
    # and the whole loss with the KL term, where the weights are constant
    v, v_old, x_t, x0, t = _constant_weight_nft_inputs(gen, shape)
    assert gradcheck(lambda v: reference.nft_loss(v, v_old, x_t, x0, t, r, v_ref=v_ref, kl_beta=0.5)[0],
                     (v.requires_grad_(),), fast_mode=False)


def test_nft_weights_are_stop_gradient(gen):
    """At generic inputs (weights above the floor) the gradient treats w± as constants: it equals the explicit
    2 t (-r e+ / w+ + (1 - r) e- / w-) / D per valid sample over n_valid, and differs from finite differences."""
    shape = [3, 4, 5]
    B, D = 3, 20
    v, v_old, x_t, x0 = (randn(gen, shape, D64) for _ in range(4))
    t, r, beta = uniform(gen, B, 0.2, 0.9, D64), uniform(gen, B, 0, 1, D64), 0.7
    valid = torch.tensor([True, False, True])
    v = v.requires_grad_()
    loss, _, _ = reference.nft_loss(v, v_old, x_t, x0, t, r, beta=beta, valid=valid)
    loss.backward()
    tc = col(t, v)
    e_pos = (x_t - tc * (beta * v + (1 - beta) * v_old) - x0).detach()
    e_neg = (x_t - tc * ((1 + beta) * v_old - beta * v) - x0).detach()
    w_pos, w_neg = col(mean_rows(e_pos.abs()), v), col(mean_rows(e_neg.abs()), v)
    rc = col(r, v)
    expected = 2 * tc * (-rc * e_pos / w_pos + (1 - rc) * e_neg / w_neg) / D * col(valid.double(), v) / 2
    torch.testing.assert_close(v.grad, expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(GradcheckError):
        gradcheck(lambda v: reference.nft_loss(v, v_old, x_t, x0, t, r, beta=beta, valid=valid)[0],
                  (v.detach().clone().requires_grad_(),), fast_mode=False)


@pytest.mark.parametrize("rescale", ["none", "norm"])
def test_gradcheck_cfg_combine(gen, rescale):
    cond, uncond = randn(gen, [2, 3, 5], D64), randn(gen, [2, 3, 5], D64)
    scale = torch.tensor([3.0, 0.5], dtype=D64)
    assert gradcheck(lambda c, u: reference.cfg_combine(c, u, scale, rescale=rescale),
                     (cond.requires_grad_(), uncond.requires_grad_()), fast_mode=False)


def test_gradcheck_grpo_loss(gen):
    B = 12
    logp_old = randn(gen, B, D64)
    logp = (logp_old + randn(gen, B, D64, scale=0.1)).requires_grad_()
    adv, kl = randn(gen, B, D64), uniform(gen, B, 0, 1, D64).requires_grad_()
    valid = torch.arange(B) % 5 != 0
    assert gradcheck(lambda lp, k: reference.grpo_loss(lp, logp_old, adv, clip_range=(0.05, 0.1), valid=valid,
                                                       kl=k, kl_beta=0.2)[0], (logp, kl), fast_mode=False)
