"""A step's rollouts on one policy rank: the plan's local samples encoded once per group, sampled in chunks by the
algorithm, decoded, and each chunk handed to the scorer as soon as it is done (so scoring overlaps the next chunk).

Every sample's randomness comes from its own seed (seeds.py), so a sample is the same whichever rank rolls it out
and however the batch is chunked.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..algo.sampler import StepPlan
from ..policy.base import EditPolicy
from .algorithms import Algorithm
from .batch import Rollout
from .scoring import ScoreJob, run_lengths
from .seeds import sample_seed


def rollout_step(policy: EditPolicy, algorithm: Algorithm, plan: StepPlan, rank: int, tasks, chunk_rows: int,
                 submit: Callable[[ScoreJob], object]) -> tuple[Rollout, list]:
    """This rank's rollouts of `plan` in chunks of `chunk_rows` (0: one chunk). Returns the Rollout and one scoring
    future per chunk, in order."""
    start = time.perf_counter()
    local = plan.local(rank)                                             # [(global index, group, row)]
    indices = [n for n, _, _ in local]
    groups = sorted({g for _, g, _ in local})
    sources_by_group = {g: tasks.image(plan.keys[g], plan.rows[g]) for g in groups}
    encoded = policy.encode([sources_by_group[g] for g in groups], [plan.rows[g].instruction for g in groups])
    cond = encoded.select([groups.index(g) for _, g, _ in local])        # n rows, no re-encoding
    seed = algorithm.config.run.seed
    chunk = chunk_rows or len(local)
    x0s, images, trajectories, futures = [], [], [], []
    for lo in range(0, len(local), chunk):
        rows = list(range(lo, min(lo + chunk, len(local))))
        part = cond.select(rows)
        seeds = [sample_seed(seed, plan.step, indices[i]) for i in rows]
        x0, trajectory = algorithm.rollout(policy, part, seeds, plan.step)
        with torch.no_grad():
            decoded = policy.decode(x0, part).cpu()                      # uint8 [c, 3, H, W]
        x0s.append(x0)
        images.append(decoded)
        trajectories.append(trajectory)
        meta = [local[i] for i in rows]
        futures.append(submit(ScoreJob(
            sample_ids=[(plan.step, n) for n, _, _ in meta],
            sources=[sources_by_group[g] for _, g, _ in meta],
            instructions=[row.instruction for _, _, row in meta],
            edited=decoded, rows=[row for _, _, row in meta],
            group_sizes=run_lengths([g for _, g, _ in meta]))))
    sigmas = policy.sigmas(algorithm.config.sampling.num_steps, cond).tolist()
    rollout = Rollout(plan, indices, cond, torch.cat(x0s), torch.cat(images),
                      [sources_by_group[g] for _, g, _ in local], sigmas, algorithm.join_trajectories(trajectories),
                      time.perf_counter() - start)
    return rollout, futures


class LocalRollout:
    """The record checkpoints written before batch.Rollout existed hold; only unpickled from them, and read by
    batch.rollout_from_record."""
