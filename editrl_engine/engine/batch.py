"""The typed data of one step on one policy rank: what was rolled out, and what an update trains on.

    Rollout         the step's local samples: condition, clean latents, decoded images, the algorithm's trajectory
    GRPOTrajectory  Flow-GRPO's per-step latents and log-probs (None for algorithms that need none)
    Batch           a Rollout with its advantages and validity mask; split(parts) for several optimizer steps
                    per training step, micro_batches(size) for the forward / backward passes

The scoring futures of a rollout are not part of it (trainer.Pending keeps them beside it), so a Rollout is
plain data: it goes into a checkpoint as it is.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from ..algo.sampler import StepPlan
from ..policy.base import Condition


@dataclasses.dataclass
class GRPOTrajectory:
    """What the Flow-GRPO loss needs for each trained SDE step k, for the rank's n samples."""
    latents: torch.Tensor                  # [n, K, L, C] float32, x_t before step k
    next_latents: torch.Tensor             # [n, K, L, C] float32, x_t after it
    logp: torch.Tensor                     # [n, K] float32, the sampling policy's log-density of next_latents
    sigma: torch.Tensor                    # [K] float32, t of each trained step
    sigma_next: torch.Tensor               # [K] float32, t after it
    step_index: torch.Tensor               # [K] int64, the trained steps' indices in the schedule

    @classmethod
    def cat(cls, chunks: Sequence) -> GRPOTrajectory:
        """One trajectory from the rollout chunks (GRPORollout or GRPOTrajectory, the same K steps each)."""
        first = chunks[0]
        return cls(torch.cat([c.latents for c in chunks]), torch.cat([c.next_latents for c in chunks]),
                   torch.cat([c.logp for c in chunks]), first.sigma, first.sigma_next, first.step_index)

    def to(self, device) -> GRPOTrajectory:
        return GRPOTrajectory(*(t.to(device) for t in dataclasses.astuple(self)))


@dataclasses.dataclass
class Rollout:
    """What one rank rolled out for one step, in its local sample order."""
    plan: StepPlan
    indices: list[int]                     # [n] global sample indices
    cond: Condition                        # n rows
    x0: torch.Tensor                       # [n, L, C] float32
    images: torch.Tensor                   # uint8 [n, 3, H, W] on the CPU
    sources: list[torch.Tensor]            # uint8 [3, H, W] per sample
    sigmas: list[float]                    # the rollout schedule, T + 1 values
    trajectory: GRPOTrajectory | None      # the algorithm's per-step data (Flow-GRPO), else None
    seconds: float                         # rollout + decode time on this rank

    def to(self, device) -> Rollout:
        """The training tensors on `device` (after a checkpoint was loaded on the CPU)."""
        trajectory = None if self.trajectory is None else self.trajectory.to(device)
        return dataclasses.replace(self, x0=self.x0.to(device), cond=self.cond.to(device), trajectory=trajectory)


@dataclasses.dataclass
class Batch:
    """The rows of a Rollout that one optimizer step trains on, with their advantages and validity."""
    rollout: Rollout
    advantages: torch.Tensor               # float32 [n] over all of the rollout's rows, 0 where not valid
    valid: torch.Tensor                    # bool [n] on the training device
    valid_host: list[bool]                 # the same mask on the host (read once per step)
    rows: list[int]                        # the local rows of this batch
    global_valid: float = math.nan         # valid rows of this batch summed over the policy ranks

    @property
    def local_valid(self) -> int:
        return sum(self.valid_host[i] for i in self.rows)

    def split(self, parts: int) -> list[Batch]:
        """`parts` consecutive, near-equal slices of the rows (one per optimizer step)."""
        n = len(self.rows)
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        return [dataclasses.replace(self, rows=self.rows[bounds[i]:bounds[i + 1]]) for i in range(parts)]

    def micro_batches(self, size: int) -> list[tuple[list[int], int]]:
        """(rows, valid rows) per micro-batch of `size` rows (0: one), skipping those with no valid row."""
        size = size or len(self.rows)
        chunks = [self.rows[i: i + size] for i in range(0, len(self.rows), size)]
        counted = [(rows, sum(self.valid_host[i] for i in rows)) for rows in chunks]
        return [(rows, n) for rows, n in counted if n]


def rollout_record(rollout: Rollout) -> dict:
    """A checkpoint's form of a Rollout: its fields as a dict (the trajectory's too), so the file does not depend
    on these classes' names."""
    record = {f.name: getattr(rollout, f.name) for f in dataclasses.fields(rollout)}
    if rollout.trajectory is not None:
        record["trajectory"] = {f.name: getattr(rollout.trajectory, f.name) for f in dataclasses.fields(GRPOTrajectory)}
    return record


def rollout_from_record(record) -> Rollout:
    """The Rollout of rollout_record(); also reads the record of checkpoints written before Rollout existed (a
    rollouts.LocalRollout object whose Flow-GRPO data was a dict under "grpo")."""
    if not isinstance(record, dict):
        record = dict(vars(record))
        record["trajectory"] = record.pop("grpo")
        record.pop("futures", None)
    trajectory = record["trajectory"]
    if trajectory is not None:
        trajectory = GRPOTrajectory(**{f.name: trajectory[f.name] for f in dataclasses.fields(GRPOTrajectory)})
    return Rollout(**{**record, "trajectory": trajectory})
