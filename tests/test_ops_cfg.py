"""cfg_combine on every backend against the float64 torch reference: values and gradients in v_cond and
v_uncond, with and without Qwen-Image's per-token norm rescale."""
from __future__ import annotations

import pytest
import torch

from editrl_engine import ops, reference

from .helpers import assert_close, f64, poisoned, randn

pytestmark = pytest.mark.ops("cfg_combine")

DTYPES = (torch.float32, torch.bfloat16)

# (shape [B, ..., C], layout, scale: a float, or "vec" for one per sample)
CASES = [
    ([1, 7], "contiguous", 4.0),
    ([1, 7], "batch_slice", 2.5),
    ([3, 13], "batch_slice", "vec"),
    ([3, 5, 13], "contiguous", "vec"),
    ([2, 3, 4, 5], "transpose", 4.0),
    ([4, 1000, 3], "contiguous", "vec"),
    ([2, 17, 64], "inner_slice", 1.0),
    ([3, 6, 10], "expand", "vec"),
    ([2, 9, 33], "batch_slice", 0.0),
    ([2, 1000, 33], "contiguous", "vec"),  # 66000 elements: several tiles
]


def case_id(case):
    shape, layout, scale = case
    return f"{'x'.join(map(str, shape))}-{layout}-g{scale}"


def _inputs(gen, case, dtype):
    shape, layout, scale = case
    cond, uncond = randn(gen, shape, dtype, layout), randn(gen, shape, dtype, layout)
    if scale == "vec":
        scale = torch.rand(shape[0], generator=gen) * 6
    return cond, uncond, scale


@pytest.mark.parametrize("rescale", ["none", "norm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cfg_combine_matches_reference(backend, gen, case, dtype, rescale):
    cond, uncond, scale = _inputs(gen, case, dtype)
    cond, uncond = cond.requires_grad_(), uncond.requires_grad_()
    with poisoned():
        out = ops.cfg_combine(cond, uncond, scale, rescale=rescale, backend=backend)
    assert out.shape == cond.shape and out.dtype == dtype
    grad_out = randn(gen, case[0], dtype, "transpose")  # a non-contiguous upstream gradient
    with poisoned():
        out.backward(grad_out)

    c64, u64 = f64(cond).requires_grad_(), f64(uncond).requires_grad_()
    expected = reference.cfg_combine(c64, u64, f64(scale), rescale=rescale)
    expected.backward(f64(grad_out))
    assert_close(out, expected, dtype, "latent", "out")
    assert cond.grad.dtype == uncond.grad.dtype == dtype
    assert_close(cond.grad, c64.grad, dtype, "latent", "grad v_cond")
    assert_close(uncond.grad, u64.grad, dtype, "latent", "grad v_uncond")


def test_cfg_combine_norm_keeps_token_norms(backend, gen):
    """rescale="norm": every token of the output has the norm of v_cond's token; with g = 1 it is v_cond."""
    cond, uncond = randn(gen, [2, 7, 12]), randn(gen, [2, 7, 12])
    with poisoned():
        out = ops.cfg_combine(cond, uncond, torch.tensor([4.0, 1.0]), rescale="norm", backend=backend)
    assert_close(out.double().norm(dim=-1), cond.double().norm(dim=-1), what="token norms", rtol=1e-5)
    assert_close(out[1], cond[1].double(), what="g = 1", rtol=1e-5)


def test_cfg_combine_norm_zero_token(backend):
    """A token where v_cond = v_uncond = 0: the combined vector is 0 and stays 0 (no 0 / 0)."""
    cond = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]])
    uncond = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    with poisoned():
        out = ops.cfg_combine(cond, uncond, 3.0, rescale="norm", backend=backend)
    combined = torch.tensor([3.0, 4.0, 6.0], dtype=torch.float64)  # 0 + 3 (1, 1, 2) + (0, 1, 0)
    expected = torch.stack([combined * 3.0 / combined.norm(), torch.zeros(3, dtype=torch.float64)])[None]
    assert_close(out, expected, what="out", rtol=1e-6)


def test_cfg_combine_bf16_on_cpp(gen):
    """cpp computes in float32 and returns the output and both gradients in bf16."""
    from .conftest import require_backend

    require_backend("cpp", "cfg_combine")
    cond, uncond = (randn(gen, [2, 5, 6], torch.bfloat16).requires_grad_() for _ in range(2))
    out = ops.cfg_combine(cond, uncond, 4.0, rescale="norm", backend="cpp")
    out.sum().backward()
    assert out.dtype == cond.grad.dtype == uncond.grad.dtype == torch.bfloat16
