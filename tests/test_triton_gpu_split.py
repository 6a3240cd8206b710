"""The Triton kernels' GPU launch geometry, run under the interpreter.

On CPU tensors the launchers use one chunk per row and large blocks; on a GPU they cut each row into chunks
whose partial sums a finalize kernel adds, and run one program per group. Here the sizing helpers are told
they are on a small GPU so that those code paths (several chunks per row, ragged last chunk, one program per
group) run on CPU tensors and are compared against the float64 reference.
"""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops, reference

from .conftest import require_backend
from .helpers import assert_close, f64, poisoned, randn, uniform


@pytest.fixture
def gpu_geometry(monkeypatch):
    require_backend("triton", "sde_logprob", "nft_loss", "group_advantages", "cfg_combine", "grpo_loss")
    from editrl_engine.kernels import _grid, advantages

    monkeypatch.setattr(_grid, "on_gpu", lambda t: True)
    monkeypatch.setattr(advantages, "on_gpu", lambda t: True)
    monkeypatch.setattr(_grid, "_sm_count", lambda index: 2)   # 16 (row, chunk) programs wanted
    monkeypatch.setattr(_grid, "GPU_ROW_BLOCK", 32)            # several loop steps and chunks per row
    monkeypatch.setattr(_grid, "GPU_TILE", 64)
    monkeypatch.setattr(advantages, "GPU_SCAN_BLOCK", 16)      # several steps per pass over the rewards
    return _grid


@pytest.mark.parametrize("shape", [(2, 3, 333), (1, 1000), (5, 77)], ids=str)
def test_sde_logprob_chunked_rows(gpu_geometry, shape):
    gen = torch.Generator().manual_seed(11)
    split = gpu_geometry.row_split(torch.empty(shape[0], int(torch.tensor(shape[1:]).prod())))
    assert split.chunks > 1, "the patched geometry must cut rows into several chunks"
    x, v, v_ref, noise = (randn(gen, shape) for _ in range(4))
    sigma = uniform(gen, shape[0], 0.3, 0.9)
    sigma_next = sigma - 0.1
    with poisoned():
        x_next, logp_step = ops.sde_step(x, v, sigma, sigma_next, noise, noise_level=0.9, backend="triton")
    v_grad = v.clone().requires_grad_()
    with poisoned():
        logp, kl = ops.sde_logprob(x_next, x, v_grad, sigma, sigma_next, noise_level=0.9, v_ref=v_ref,
                                   backend="triton")
        (logp.sum() + 3 * kl.sum()).backward()
    v64 = f64(v).requires_grad_()
    logp_ref, kl_ref = reference.sde_logprob(f64(x_next), f64(x), v64, f64(sigma), f64(sigma_next),
                                             noise_level=0.9, v_ref=f64(v_ref))
    (logp_ref.sum() + 3 * kl_ref.sum()).backward()
    assert_close(logp_step, logp_ref, what="sde_step logp")
    assert_close(logp, logp_ref, what="logp")
    assert_close(kl, kl_ref, what="kl")
    assert_close(v_grad.grad, v64.grad, kind="latent", what="grad v")


@pytest.mark.parametrize("shape", [(3, 5, 67), (1, 999)], ids=str)
def test_nft_loss_chunked_rows(gpu_geometry, shape):
    gen = torch.Generator().manual_seed(12)
    v, v_old, x_t, x0, v_ref = (randn(gen, shape) for _ in range(5))
    t, r = uniform(gen, shape[0], 0.1, 0.9), uniform(gen, shape[0])
    valid = torch.ones(shape[0], dtype=torch.bool)
    valid[-1] = shape[0] == 1
    v_grad = v.clone().requires_grad_()
    with poisoned():
        out = ops.nft_loss(v_grad, v_old, x_t, x0, t, r, beta=0.7, v_ref=v_ref, kl_beta=0.2, valid=valid,
                           backend="triton")
        (out.loss + 0.5 * out.policy.sum()).backward()
    v64 = f64(v).requires_grad_()
    loss, policy, kl = reference.nft_loss(v64, f64(v_old), f64(x_t), f64(x0), f64(t), f64(r), beta=0.7,
                                          v_ref=f64(v_ref), kl_beta=0.2, valid=valid)
    (loss + 0.5 * policy.sum()).backward()
    assert_close(out.loss, loss, what="loss")
    assert_close(out.policy, policy, what="policy")
    assert_close(out.kl, kl, what="kl")
    assert_close(v_grad.grad, v64.grad, kind="latent", what="grad v")


def test_group_advantages_one_program_per_group(gpu_geometry):
    gen = torch.Generator().manual_seed(13)
    group_index = torch.randint(0, 9, (101,), generator=gen)
    rewards = torch.rand(101, generator=gen)
    rewards[group_index == 4] = float("nan")
    for std in ("group", "global"):
        with poisoned():
            out = ops.group_advantages(rewards, group_index, std=std, filter_std=0.05, filter_mean=0.9,
                                       num_groups=10, backend="triton")
        ref = reference.group_advantages(f64(rewards), group_index, 10, std=std, filter_std=0.05, filter_mean=0.9)
        for name, got, want in zip(out._fields, out, ref):
            if got.dtype == torch.bool:
                assert torch.equal(got, want), name
            else:
                assert_close(got, want, what=f"{name} ({std})")


def test_cfg_and_grpo_small_tiles(gpu_geometry):
    gen = torch.Generator().manual_seed(14)
    cond, uncond = randn(gen, (2, 9, 24)), randn(gen, (2, 9, 24))
    c_grad, u_grad = cond.clone().requires_grad_(), uncond.clone().requires_grad_()
    with poisoned():
        out = ops.cfg_combine(c_grad, u_grad, torch.tensor([4.0, 2.5]), rescale="norm", backend="triton")
        out.pow(2).sum().backward()
    c64, u64 = f64(cond).requires_grad_(), f64(uncond).requires_grad_()
    ref = reference.cfg_combine(c64, u64, torch.tensor([4.0, 2.5], dtype=torch.float64), rescale="norm")
    ref.pow(2).sum().backward()
    assert_close(out, ref, kind="latent", what="cfg")
    assert_close(c_grad.grad, c64.grad, kind="latent", what="grad v_cond")
    assert_close(u_grad.grad, u64.grad, kind="latent", what="grad v_uncond")

    logp_old = randn(gen, 3000)
    logp = (logp_old + 0.05 * randn(gen, 3000)).requires_grad_()
    adv = randn(gen, 3000)
    with poisoned():
        loss, stats = ops.grpo_loss(logp, logp_old, adv, clip_range=0.03, backend="triton")
        loss.backward()
    logp64 = f64(logp).requires_grad_()
    loss_ref, stats_ref = reference.grpo_loss(logp64, f64(logp_old), f64(adv), clip_range=0.03)
    loss_ref.backward()
    assert_close(loss, loss_ref, what="grpo loss")
    assert_close(logp.grad, logp64.grad, what="grpo grad")
    for name in stats:
        assert_close(stats[name], stats_ref[name], what=name)
