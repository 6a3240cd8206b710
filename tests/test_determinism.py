"""The fused ops are deterministic: the same call gives bitwise the same results, and the cpp backend's
results do not depend on its OpenMP thread count (its reductions add fixed chunks in a fixed order)."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops

from .helpers import randn, uniform

pytestmark = pytest.mark.ops("group_advantages", "sde_step", "sde_logprob", "grpo_loss", "nft_loss", "cfg_combine")


def run_all(backend, seed):
    """Every op, forward and backward, on inputs drawn from `seed`; returns all outputs and gradients."""
    gen = torch.Generator().manual_seed(seed)
    shape = [3, 7, 1201]  # rows of 8407 elements: several chunks per row
    x, v, noise, v_ref, x0 = (randn(gen, shape) for _ in range(5))
    sigma = uniform(gen, 3, 0.3, 0.9)
    out = []
    x_next, logp = ops.sde_step(x, v, sigma, sigma - 0.1, noise, backend=backend)
    out += [x_next, logp]
    vg = v.clone().requires_grad_()
    logp, kl = ops.sde_logprob(x_next, x, vg, sigma, sigma - 0.1, v_ref=v_ref, backend=backend)
    (logp.sum() + kl.sum()).backward()
    out += [logp, kl, vg.grad]
    vg = v.clone().requires_grad_()
    nft = ops.nft_loss(vg, v_ref, x, x0, sigma, uniform(gen, 3), v_ref=noise, kl_beta=0.1, backend=backend)
    nft.loss.backward()
    out += [nft.loss, nft.policy, nft.kl, vg.grad]
    lp = randn(gen, 5000).requires_grad_()
    loss, stats = ops.grpo_loss(lp, lp.detach() + randn(gen, 5000, scale=0.05), randn(gen, 5000),
                                clip_range=0.03, backend=backend)
    loss.backward()
    out += [loss, *stats.values(), lp.grad]
    rewards = torch.rand(6000, generator=gen)
    out += list(ops.group_advantages(rewards, torch.randint(0, 97, (6000,), generator=gen), num_groups=97,
                                     backend=backend))
    c, u = randn(gen, [2, 999, 40]).requires_grad_(), randn(gen, [2, 999, 40]).requires_grad_()
    ops.cfg_combine(c, u, 4.0, rescale="norm", backend=backend).sum().backward()
    out += [c.grad, u.grad]
    return out


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for i, (p, q) in enumerate(zip(a, b)):
        assert torch.equal(p.detach(), q.detach()) or (
            p.is_floating_point() and torch.equal(torch.isnan(p), torch.isnan(q))
            and torch.equal(p.detach().nan_to_num(), q.detach().nan_to_num())), f"output {i} differs"


def test_same_call_same_bits(backend):
    assert_bitwise_equal(run_all(backend, 7), run_all(backend, 7))


def test_cpp_results_do_not_depend_on_thread_count():
    from .conftest import require_backend

    require_backend("cpp", "group_advantages", "sde_step", "sde_logprob", "grpo_loss", "nft_loss", "cfg_combine")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_all("cpp", 11)
        torch.set_num_threads(max(2, threads))
        many = run_all("cpp", 11)
    finally:
        torch.set_num_threads(threads)
    assert_bitwise_equal(one, many)
