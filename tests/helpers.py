"""Test helpers: random inputs in several memory layouts, output poisoning, tolerance asserts, a free port."""
from __future__ import annotations

import contextlib
import socket

import torch

SENTINEL = 1.0e30  # what poisoned float outputs hold until a kernel writes them

# ---------------------------------------------------------------------------------------------------------
# random inputs
# ---------------------------------------------------------------------------------------------------------
LAYOUTS = ("contiguous", "batch_slice", "inner_slice", "transpose", "expand")


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A tensor with t's values (for "expand": row 0's values in every row) in the given memory layout.

    batch_slice: every other row of a taller tensor; inner_slice: every other element of the last dim;
    transpose: the last two dims stored transposed; expand: row 0 broadcast over the batch (row stride 0).
    The skipped elements of a slice hold NaN, so a kernel reading them shows it.
    """
    if layout == "contiguous":
        return t
    if layout == "batch_slice":
        big = torch.full((2 * t.shape[0], *t.shape[1:]), float("nan"), dtype=t.dtype)
        big[::2] = t
        return big[::2]
    if layout == "inner_slice":
        big = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]
    if layout == "transpose":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "expand":
        return t[:1].expand(t.shape)
    raise ValueError(layout)


def randn(gen, shape, dtype=torch.float32, layout="contiguous", scale=1.0, shift=0.0) -> torch.Tensor:
    """Normal(shift, scale) values, rounded to dtype, in the given layout."""
    base = torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift
    return relayout(base.to(dtype), layout)


def uniform(gen, shape, lo=0.0, hi=1.0, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def f32(x: float) -> float:
    """x rounded to the nearest float32 (so float64 references and float32 kernels see the same value)."""
    return float(torch.tensor(x, dtype=torch.float32))


def f64(x):
    """float64 copy of a tensor (detached), or the value unchanged."""
    return x.detach().double() if torch.is_tensor(x) and x.is_floating_point() else x


# ---------------------------------------------------------------------------------------------------------
# SDE schedules: (sigma, sigma_next, sigma_max), all exactly representable in float32
# ---------------------------------------------------------------------------------------------------------
SCHEDULES = ("scalar", "tensors", "vector", "start", "start_max", "last")


def schedule(name: str, batch: int, gen):
    if name == "scalar":
        return f32(0.75), f32(0.6), None
    if name == "tensors":  # a 0-d sigma and a [1] sigma_next, both broadcast over the batch
        return torch.tensor(f32(0.5)), torch.tensor([f32(0.3)]), None
    if name == "vector":
        sigma = uniform(gen, batch, 0.25, 0.95)
        return sigma, (sigma - uniform(gen, batch, 0.02, 0.2)).clamp_min(0.0), None
    if name == "start":  # t = 1: t* defaults to sigma_next
        return 1.0, f32(0.9), None
    if name == "start_max":  # a mix of t = 1 and t < 1 rows, with an explicit sigma_max
        sigma = torch.where(torch.arange(batch) % 2 == 0, 1.0, uniform(gen, batch, 0.3, 0.9))
        return sigma, sigma - uniform(gen, batch, 0.05, 0.2), f32(0.96)
    if name == "last":  # the final step, to t = 0
        return f32(0.1), 0.0, None
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------------------
# poisoning
# ---------------------------------------------------------------------------------------------------------
class _Poison:
    def __init__(self, high: bool):
        self.high, self.count = high, 0

    def fill(self, t: torch.Tensor) -> torch.Tensor:
        self.count += 1
        with torch.no_grad():
            if t.is_floating_point():
                t.fill_(SENTINEL if self.high else -SENTINEL)
            elif t.dtype == torch.bool:
                t.fill_(self.high)
            elif not t.is_complex():
                info = torch.iinfo(t.dtype)
                t.fill_(info.max if self.high else info.min)
        return t


@contextlib.contextmanager
def poisoned(high: bool = True):
    """Within the block, torch.empty / torch.empty_like / Tensor.new_empty return tensors filled with a
    sentinel (floats: +-1e30, bools: high, ints: max or min), so an output element a kernel never writes
    survives as the sentinel and fails the comparison with the reference. Use it around one call only."""
    poison = _Poison(high)
    empty, empty_like, new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty
    torch.empty = lambda *a, **k: poison.fill(empty(*a, **k))
    torch.empty_like = lambda *a, **k: poison.fill(empty_like(*a, **k))
    torch.Tensor.new_empty = lambda self, *a, **k: poison.fill(new_empty(self, *a, **k))
    try:
        yield poison
    finally:
        torch.empty, torch.empty_like, torch.Tensor.new_empty = empty, empty_like, new_empty


# ---------------------------------------------------------------------------------------------------------
# tolerances
# ---------------------------------------------------------------------------------------------------------
# "stat": float32 results (accumulated in float32 from inputs of the given dtype);
# "latent": results stored in the input dtype (rounded to bf16 for bf16 inputs).
TOLERANCES = {
    (torch.float64, "stat"): (1e-10, 1e-12),
    (torch.float64, "latent"): (1e-10, 1e-12),
    (torch.float32, "stat"): (1e-4, 1e-5),
    (torch.float32, "latent"): (1e-4, 1e-5),
    (torch.bfloat16, "stat"): (1e-3, 1e-4),
    (torch.bfloat16, "latent"): (1.6e-2, 1e-2),
    (torch.float16, "stat"): (1e-3, 1e-4),
    (torch.float16, "latent"): (4e-3, 2e-3),
}


def assert_close(actual, expected, dtype=torch.float32, kind="stat", what="", rtol=None, atol=None):
    """actual (any dtype) against a float64 expected. atol scales with max|expected| (at least 1), so that
    the tolerance is relative to the size of the values being compared; NaNs must sit where expected has
    them (a surviving sentinel never passes: expected holds no 1e30)."""
    assert torch.is_tensor(actual), f"{what}: expected a tensor, got {type(actual).__name__}"
    expected = torch.as_tensor(expected.detach() if torch.is_tensor(expected) else expected, dtype=torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    r, a = TOLERANCES[(dtype, kind)]
    rtol = r if rtol is None else rtol
    atol = a if atol is None else atol
    finite = expected[torch.isfinite(expected)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    torch.testing.assert_close(actual.detach().double(), expected, rtol=rtol, atol=atol * scale, equal_nan=True,
                               msg=lambda m: f"{what} ({dtype}, {kind}): {m}")


@torch.no_grad()
def recomputed_logp(policy, out, **velocity_kwargs):
    """ops.sde_logprob of every stored step of a GRPO rollout, velocities recomputed at the stored latents:
    [B, K] float32 (what the rollout's own log-probs must equal on-policy)."""
    from editrl_engine import ops
    columns = []
    for k in range(out.step_index.numel()):
        sigma, sigma_next = float(out.sigma[k]), float(out.sigma_next[k])
        x = out.latents[:, k]
        v = policy.velocity(x, torch.full((x.shape[0],), sigma), out.cond, **velocity_kwargs).float()
        logp, _ = ops.sde_logprob(out.next_latents[:, k], x, v, sigma, sigma_next, noise_level=out.noise_level,
                                  kind=out.kind)
        columns.append(logp)
    return torch.stack(columns, 1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
