"""NFT and GRPO objective pieces: timestep picking and x_t against their formulas, the loss wrappers against
direct ops calls (policy term × adv_clip_max), and GRPO's trained steps."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops
from editrl_engine.algo import GRPOConfig, NFTConfig, grpo, nft


@pytest.mark.parametrize("T, K", [(10, 9), (6, 5), (40, 39), (1, 1), (100, 99)])
def test_train_timesteps_are_permutation_prefixes(T, K, gen):
    timesteps = torch.linspace(1.0, 0.1, T, dtype=torch.float64)
    picked = nft.train_timesteps(timesteps, 16, generator=gen)                       # [B, K]
    assert picked.shape == (16, K) and nft.num_train_timesteps(T) == K
    for row in picked:
        assert len(set(row.tolist())) == K and set(row.tolist()) <= set(timesteps.tolist())
    if T >= 6:   # independent per sample
        assert len({tuple(r.tolist()) for r in picked}) > 1
    again = nft.train_timesteps(timesteps, 16, generator=torch.Generator().manual_seed(gen.initial_seed()))
    assert torch.equal(picked, again)


def test_noisy_latents_formula(gen):
    x0 = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    x_t, noise = nft.noisy_latents(x0, t, generator=gen)
    for b in range(3):
        torch.testing.assert_close(x_t[b], (1 - t[b]) * x0[b] + t[b] * noise[b])
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], noise[2])
    eps = torch.randn_like(x0)
    assert torch.equal(nft.noisy_latents(x0, t, eps)[1], eps)
    fresh = nft.noisy_latents(x0, t, generator=gen)[1]
    assert not torch.equal(fresh, noise)


def nft_inputs(gen, B=6, shape=(4, 8)):
    mk = lambda: torch.randn(B, *shape, generator=gen)
    v = mk().requires_grad_(True)
    return v, mk(), mk(), mk(), mk(), torch.rand(B, generator=gen), torch.rand(B, generator=gen)


@pytest.mark.ops("nft_loss")
@pytest.mark.parametrize("cfg, with_ref", [(NFTConfig(), True), (NFTConfig(beta=0.1, kl_beta=0.0), False),
                                           (NFTConfig(kl_beta=0.3, adv_clip_max=2.0), True)])
def test_nft_loss_is_scaled_ops_call(backend, gen, cfg, with_ref):
    v, v_old, x_t, x0, v_ref, t, adv = nft_inputs(gen)
    r = nft.optimality(adv * 8 - 4, cfg, backend="torch")
    valid = torch.tensor([True, False, True, True, False, True])
    out = nft.loss(v, v_old, x_t, x0, t, r, cfg, v_ref=v_ref if with_ref else None, valid=valid, backend=backend)
    direct = ops.nft_loss(v, v_old, x_t, x0, t, r, beta=cfg.beta, v_ref=v_ref, kl_beta=0.0, valid=valid,
                          backend="torch")
    kl_term = (direct.kl[valid].mean() * cfg.kl_beta) if with_ref else 0.0
    expected = cfg.adv_clip_max * direct.policy[valid].mean() + kl_term
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.policy, direct.policy, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.loss, v)
    (grad_ref,) = torch.autograd.grad(expected, v)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-6)


def test_nft_kl_needs_reference(gen):
    v, v_old, x_t, x0, _, t, r = nft_inputs(gen)
    with pytest.raises(ValueError, match="v_ref"):
        nft.loss(v, v_old, x_t, x0, t, r, NFTConfig(kl_beta=1e-4), backend="torch")


def test_nft_optimality_uses_adv_clip_max():
    adv = torch.tensor([-10.0, -5.0, 0.0, 2.5, 5.0, 7.0])
    torch.testing.assert_close(nft.optimality(adv, backend="torch"),
                               torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    torch.testing.assert_close(nft.optimality(adv, NFTConfig(adv_clip_max=10.0), backend="torch"),
                               torch.tensor([0.0, 0.25, 0.5, 0.625, 0.75, 0.85]))


def test_grpo_trained_steps_fraction():
    assert grpo.trained_steps(10) == list(range(9))
    assert grpo.trained_steps(20, GRPOConfig(timestep_fraction=0.5)) == list(range(10))
    assert grpo.trained_steps(1) == [0]


@pytest.mark.ops("grpo_loss")
@pytest.mark.parametrize("cfg", [GRPOConfig(), GRPOConfig(clip_low=1e-4, clip_high=5e-4, kl_beta=0.04),
                                 GRPOConfig(clip_low=0.05, clip_high=0.2, kl_beta=0.0)])
def test_grpo_loss_is_ops_call(backend, gen, cfg):
    B = 12
    logp_old = torch.randn(B, generator=gen)
    logp = (logp_old + 0.1 * torch.randn(B, generator=gen)).requires_grad_(True)
    adv = torch.randn(B, generator=gen)
    kl = torch.rand(B, generator=gen).requires_grad_(True)
    valid = torch.rand(B, generator=gen) < 0.7
    loss, stats = grpo.loss(logp, logp_old, adv, cfg, valid=valid, kl=kl, backend=backend)
    ref, ref_stats = ops.grpo_loss(logp, logp_old, adv, clip_range=cfg.clip_range, valid=valid,
                                   kl=kl if cfg.kl_beta else None, kl_beta=cfg.kl_beta, backend="torch")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for name in ref_stats:
        torch.testing.assert_close(stats[name], ref_stats[name], rtol=1e-5, atol=1e-6, equal_nan=True)
    ratio = (logp - logp_old).exp()
    lo, hi = cfg.clip_range
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - lo, 1 + hi)) + cfg.kl_beta * kl
    torch.testing.assert_close(loss, pg[valid].mean(), rtol=1e-5, atol=1e-6)
