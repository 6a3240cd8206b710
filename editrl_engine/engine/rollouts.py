"""A step's rollouts on one policy rank: the plan's local samples encoded once per group, sampled in chunks,
decoded, and each chunk handed to the scorer as soon as it is done (so scoring overlaps the next chunk).

Every sample's randomness comes from its own seed, sample_seed(run seed, step, global index): a sample is the same
whichever rank rolls it out and however the batch is chunked, so 1 rank and 2 ranks see the same samples.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from ..algo.sampler import StepPlan
from ..policy.base import Condition, EditPolicy
from ..policy.samplers import grpo_rollout, nft_rollout, ode_sample
from .config import TrainConfig
from .scoring import ScoreJob


def sample_seed(run_seed: int, step: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for (run, step, global sample, stream); stream 0 draws the rollout, 1 the NFT timesteps."""
    x = (run_seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + stream) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    return (x ^ (x >> 32)) & (2**63 - 1)


@dataclasses.dataclass
class LocalRollout:
    """What one rank rolled out for one step, in its local sample order."""
    plan: StepPlan
    indices: list[int]                     # [n] global sample indices
    cond: Condition                        # n rows
    x0: torch.Tensor                       # [n, L, C] float32
    images: torch.Tensor                   # uint8 [n, 3, H, W] on the CPU
    sources: list[torch.Tensor]            # uint8 [3, H, W] per sample
    sigmas: list[float]                    # the rollout schedule, T + 1 values
    grpo: dict[str, torch.Tensor] | None   # GRPO: latents, next_latents, logp [n, K, ...], sigma, sigma_next, step_index
    futures: list                          # one scoring future per chunk, in order
    seconds: float                         # rollout + decode time on this rank


def _nft_sample(policy, cond, sampling, seeds, guidance, autocast) -> torch.Tensor:
    if sampling.solver == "dpm2":
        return nft_rollout(policy, cond, num_steps=sampling.num_steps, seed=seeds, guidance=guidance,
                           autocast_dtype=autocast).x0
    return ode_sample(policy, cond, num_steps=sampling.num_steps, solver=sampling.solver, seed=seeds,
                      guidance=guidance, autocast_dtype=autocast)


def rollout_step(policy: EditPolicy, plan: StepPlan, rank: int, config: TrainConfig, tasks,
                 submit: Callable[[ScoreJob], object]) -> LocalRollout:
    start = time.perf_counter()
    local = plan.local(rank)                                             # [(global index, group, row)]
    indices = [n for n, _, _ in local]
    groups = sorted({g for _, g, _ in local})
    sources_by_group = {g: tasks.image(plan.keys[g], plan.rows[g]) for g in groups}
    encoded = policy.encode([sources_by_group[g] for g in groups], [plan.rows[g].instruction for g in groups])
    cond = encoded.select([groups.index(g) for _, g, _ in local])        # n rows, no re-encoding
    sampling, algo = config.sampling, config.algo
    guidance = sampling.guidance or None
    autocast = torch.bfloat16 if config.run.autocast else None
    chunk = sampling.rollout_batch or len(local)
    x0s, images, grpo_parts, futures = [], [], [], []
    for lo in range(0, len(local), chunk):
        rows = list(range(lo, min(lo + chunk, len(local))))
        part = cond.select(rows)
        seeds = [sample_seed(config.run.seed, plan.step, indices[i]) for i in rows]
        if algo.name == "nft":
            if algo.nft.sample_adapter not in ("old", "default"):
                raise ValueError(f"algo.nft.sample_adapter must be 'old' or 'default', got {algo.nft.sample_adapter!r}")
            with policy.use_adapter(algo.nft.sample_adapter):
                x0 = _nft_sample(policy, part, sampling, seeds, guidance, autocast)
        else:
            g = algo.grpo
            window = torch.Generator().manual_seed(sample_seed(config.run.seed, plan.step, 0, stream=2))
            out = grpo_rollout(policy, part, num_steps=sampling.num_steps, seed=seeds, kind=g.kind,
                               noise_level=g.noise_level, window_size=g.window_size or None,
                               window_generator=window if g.window_size else None, guidance=guidance,
                               autocast_dtype=autocast)
            x0 = out.x0
            grpo_parts.append(out)
        with torch.no_grad():
            decoded = policy.decode(x0, part).cpu()                     # uint8 [c, 3, H, W]
        x0s.append(x0)
        images.append(decoded)
        rows_meta = [local[i] for i in rows]
        futures.append(submit(ScoreJob(
            sample_ids=[(plan.step, n) for n, _, _ in rows_meta],
            sources=[sources_by_group[g] for _, g, _ in rows_meta],
            instructions=[row.instruction for _, _, row in rows_meta],
            edited=decoded, rows=[row for _, _, row in rows_meta])))
    grpo = None
    if grpo_parts:
        first = grpo_parts[0]
        grpo = {"latents": torch.cat([p.latents for p in grpo_parts]),            # [n, K, L, C]
                "next_latents": torch.cat([p.next_latents for p in grpo_parts]),  # [n, K, L, C]
                "logp": torch.cat([p.logp for p in grpo_parts]),                  # [n, K]
                "sigma": first.sigma, "sigma_next": first.sigma_next, "step_index": first.step_index}
    sigmas = policy.sigmas(sampling.num_steps, cond).tolist()
    return LocalRollout(plan, indices, cond, torch.cat(x0s), torch.cat(images),
                        [sources_by_group[g] for _, g, _ in local], sigmas, grpo, futures,
                        time.perf_counter() - start)
