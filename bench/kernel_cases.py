"""The cases bench/fused_ops.py times: each op's realistic shapes, random inputs and byte model.

Latent ops run on FLUX latents [B, L, C] (batch x tokens x channels) at 512² and 1024²; the per-sample ops run
at the sample counts of one epoch at that size (288 = 24 groups x 12 at 512², 4096 = 256 groups x 16 at 1024²).

A byte model counts the fewest bytes an op must move through memory: each input read once, each output
written once; the backward reads what it needs once more and writes its gradients. Latent-sized tensors count
at the benchmark's dtype (`n` below is the bytes of one latent tensor), per-sample vectors at float32, masks
at one byte, group indices at eight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

LATENTS = {"512": (24, 1024, 64), "1024": (8, 4096, 64), "quick": (2, 64, 16)}   # [B, L, C]
SAMPLES = {"512": (288, 24), "1024": (4096, 256), "quick": (24, 4)}             # (N samples, G groups)
F32, BOOL, I64 = 4, 1, 8


@dataclass
class Case:
    op: str                                   # name in editrl_engine.ops and editrl_engine.reference
    size: str                                 # key of LATENTS / SAMPLES
    shape: str                                # what the table shows
    dtype: torch.dtype                        # of the op's main tensors
    make_inputs: Callable[[torch.Generator], dict[str, torch.Tensor]]  # one random input set, by argument name
    kwargs: dict                              # the op's fixed non-tensor arguments
    fwd_bytes: int
    bwd_bytes: int = 0                        # the backward's own traffic
    grad_inputs: tuple[str, ...] = ()         # what fwd+bwd differentiates; () for a forward-only op
    differentiable: Callable | None = None    # the op's outputs -> the tensors the backward starts from

    @property
    def passes(self) -> tuple[str, ...]:
        return ("fwd", "fwd+bwd") if self.grad_inputs else ("fwd",)

    def bytes(self, pass_name: str) -> int:
        return self.fwd_bytes + (self.bwd_bytes if pass_name == "fwd+bwd" else 0)


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=gen.device)


def _latents(size: str, dtype: torch.dtype):
    batch, tokens, channels = LATENTS[size]
    draw = lambda gen: torch.randn(batch, tokens, channels, generator=gen, dtype=dtype, device=gen.device)
    return batch, f"{batch}x{tokens}x{channels}", batch * tokens * channels * dtype.itemsize, draw


def _schedule(gen: torch.Generator, batch: int) -> dict[str, torch.Tensor]:
    """Per-sample sigma in [0.3, 0.9] and a step of 0.02 to 0.1 towards 0."""
    sigma = _uniform(gen, batch, 0.3, 0.9)
    return {"sigma": sigma, "sigma_next": sigma - _uniform(gen, batch, 0.02, 0.1)}


def sde_step(size: str, dtype: torch.dtype) -> Case:
    batch, shape, n, latent = _latents(size, dtype)
    make = lambda gen: {"x": latent(gen), "v": latent(gen), "noise": latent(gen), **_schedule(gen, batch)}
    # read x, v, noise, sigma, sigma_next; write x_next, logp
    return Case("sde_step", size, shape, dtype, make, {"noise_level": 0.9}, fwd_bytes=4 * n + 3 * batch * F32)


def sde_logprob(size: str, dtype: torch.dtype) -> Case:
    batch, shape, n, latent = _latents(size, dtype)
    make = lambda gen: {"x_next": latent(gen), "x": latent(gen), "v": latent(gen), "v_ref": latent(gen),
                        **_schedule(gen, batch)}
    # fwd: read x_next, x, v, v_ref, sigma, sigma_next; write logp, kl
    # bwd: read grad_logp, grad_kl, x_next, x, v, v_ref, sigma, sigma_next; write grad_v
    return Case("sde_logprob", size, shape, dtype, make, {"noise_level": 0.9},
                fwd_bytes=4 * n + 4 * batch * F32, bwd_bytes=5 * n + 4 * batch * F32,
                grad_inputs=("v",), differentiable=lambda out: tuple(out))


def nft_loss(size: str, dtype: torch.dtype) -> Case:
    batch, shape, n, latent = _latents(size, dtype)
    make = lambda gen: {"v": latent(gen), "v_old": latent(gen), "x_t": latent(gen), "x0": latent(gen),
                        "v_ref": latent(gen), "t": _uniform(gen, batch, 0.05, 0.95), "r": _uniform(gen, batch, 0, 1)}
    # fwd: read v, v_old, x_t, x0, v_ref, t, r; write loss, policy, kl
    # bwd: read grad_loss, v, v_old, x_t, x0, v_ref, t, r and the forward's weights w+, w-; write grad_v
    return Case("nft_loss", size, shape, dtype, make, {"beta": 1.0, "kl_beta": 1e-4},
                fwd_bytes=5 * n + (4 * batch + 1) * F32, bwd_bytes=6 * n + (4 * batch + 1) * F32,
                grad_inputs=("v",), differentiable=lambda out: (out[0],))


def cfg_combine(size: str, dtype: torch.dtype) -> Case:
    batch, shape, n, latent = _latents(size, dtype)
    make = lambda gen: {"v_cond": latent(gen), "v_uncond": latent(gen)}
    # fwd: read v_cond, v_uncond; write out.  bwd: read grad_out, v_cond, v_uncond; write both gradients
    return Case("cfg_combine", size, shape, dtype, make, {"scale": 4.0, "rescale": "norm"},
                fwd_bytes=3 * n, bwd_bytes=5 * n, grad_inputs=("v_cond", "v_uncond"),
                differentiable=lambda out: (out,))


def group_advantages(size: str, dtype: torch.dtype) -> Case:
    samples, groups = SAMPLES[size]

    def make(gen):
        order = torch.randperm(samples, generator=gen, device=gen.device)
        index = torch.arange(groups, device=gen.device).repeat_interleave(samples // groups)[order]
        return {"rewards": torch.rand(samples, generator=gen, device=gen.device), "group_index": index}

    # read rewards, group_index; write advantages, valid, mean, std
    return Case("group_advantages", size, f"N={samples} G={groups}", torch.float32, make,
                {"num_groups": groups, "filter_std": 0.05, "filter_mean": 0.9},
                fwd_bytes=samples * (F32 + I64 + F32 + BOOL) + 2 * groups * F32)


def grpo_loss(size: str, dtype: torch.dtype) -> Case:
    samples, _ = SAMPLES[size]

    def make(gen):
        draw = lambda: torch.randn(samples, generator=gen, device=gen.device)
        logp = draw()
        return {"logp": logp, "logp_old": logp + 1e-3 * draw(), "advantages": draw().clamp(-5, 5),
                "kl": 1e-3 * torch.rand(samples, generator=gen, device=gen.device),
                "valid": torch.rand(samples, generator=gen, device=gen.device) > 0.1}

    # fwd: read logp, logp_old, advantages, kl, valid; write loss and 5 statistics
    # bwd: read grad_loss, logp, logp_old, advantages, valid; write grad_logp, grad_kl
    return Case("grpo_loss", size, f"B={samples}", torch.float32, make, {"clip_range": 1e-4, "kl_beta": 0.04},
                fwd_bytes=samples * (4 * F32 + BOOL) + 6 * F32, bwd_bytes=samples * (5 * F32 + BOOL) + F32,
                grad_inputs=("logp", "kl"), differentiable=lambda out: (out[0],))


def nft_optimality(size: str, dtype: torch.dtype) -> Case:
    samples, _ = SAMPLES[size]
    make = lambda gen: {"advantages": 2 * torch.randn(samples, generator=gen, device=gen.device)}
    # read advantages; write r
    return Case("nft_optimality", size, f"N={samples}", torch.float32, make, {"clip": 5.0},
                fwd_bytes=2 * samples * F32)


CASES = {build.__name__: build for build in (sde_step, sde_logprob, nft_loss, cfg_combine, group_advantages,
                                             grpo_loss, nft_optimality)}
PER_SAMPLE_OPS = ("group_advantages", "grpo_loss", "nft_optimality")
