"""The exact verifier of the synthetic shapes task (data/synthetic.py), on the VIEScore SC / PQ / O scale.

For each sample the task's spec gives the exact target rendering T and the edit region: the pixels where the
clean source S and T differ (the recoloured shape; the old and the new place of a moved shape; the removed
shape; the whole background). A pixel of the edited image E "matches" a rendering when every channel is
within MATCH_TOLERANCE of it. Sub-scores, each on 0-10:

  success      10 * fraction of the edit region where E matches T          (the requested change happened)
  over_editing 10 * fraction of the rest where E matches T (= S there)      (nothing else was touched)
  quality      10 * mean over all pixels of clamp(1 - d / QUALITY_TOLERANCE, 0, 1), d the per-channel max
               distance to the nearest palette colour                      (flat colours: no noise, no blur)

SC = min(success, over_editing), PQ = quality, O = sqrt(SC * PQ), reward = O / 10 in [0, 1]. The target scores
exactly 1, the unedited source 0 (its edit region never matches), random noise about 0.

Which task a sample belongs to: pass `tasks=` to `score` (ShapeTask, a manifest EditRow with a spec, or a
spec dict), or give the tasks to the constructor and they are found by (instruction, exact source pixels).
Every image is computed in one vectorised pass per canvas size; renderings are cached per task.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from ..data.manifest import EditRow
from ..data.shapes import PALETTE
from ..data.synthetic import ShapeTask
from ..vlm.images import as_uint8_tensor
from .base import RewardBatch, RewardModel, check_triples

MATCH_TOLERANCE = 32          # per channel; under half the smallest distance between two palette colours (78)
QUALITY_TOLERANCE = 48        # per channel distance to the palette at which a pixel's quality reaches 0
TaskLike = ShapeTask | EditRow | dict


class ProgrammaticReward(RewardModel):
    kind = "programmatic"

    def __init__(self, tasks: Sequence[TaskLike] = ()):
        self._known: dict[tuple[str, str], ShapeTask] = {}
        self._palette = torch.tensor(list(PALETTE.values()), dtype=torch.int16)       # [P, 3]
        self.register(tasks)

    def register(self, tasks: Sequence[TaskLike]) -> None:
        """Make tasks findable by (instruction, source pixels) when `score` is called without `tasks`."""
        for task in map(as_task, tasks):
            self._known[(task.instruction, _pixel_digest(task.source_image()))] = task

    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence, *,
              tasks: Sequence[TaskLike] | None = None) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        if tasks is not None and len(tasks) != n:
            raise ValueError(f"score() got {len(tasks)} tasks for {n} samples")
        resolved = []                                                                # ShapeTask per sample
        images = []                                                                  # uint8 [3, H, W] per sample
        for i in range(n):
            source = as_uint8_tensor(sources[i], f"sources[{i}]")
            task = as_task(tasks[i]) if tasks is not None else self._lookup(instructions[i], source, i)
            _check_matches(task, instructions[i], source, f"sample {i}")
            image = as_uint8_tensor(edited[i], f"edited[{i}]")
            if tuple(image.shape[1:]) != (task.height, task.width):
                raise ValueError(f"edited[{i}] is {tuple(image.shape[1:])}, but its task's canvas is "
                                 f"{(task.height, task.width)}")
            resolved.append(task)
            images.append(image)
        subscores = torch.empty(n, 3)                                                # [N, 3] success, over, quality
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, task in enumerate(resolved):
            by_size.setdefault((task.height, task.width), []).append(i)
        for indices in by_size.values():
            batch = torch.stack([images[i] for i in indices])                        # uint8 [B, 3, H, W]
            subscores[indices] = self._subscores([resolved[i] for i in indices], batch)
        sc = subscores[:, :2].amin(dim=1)                                            # [N]
        pq = subscores[:, 2]                                                         # [N]
        overall = (sc * pq).sqrt()                                                   # [N] on 0-10
        reward = (overall / 10.0).clamp(0.0, 1.0).float()
        rows = zip(resolved, subscores.tolist(), sc.tolist(), pq.tolist(), overall.tolist())
        details = [{"task_id": task.id, "edit": task.edit.kind, "success": sub[0], "over_editing": sub[1],
                    "quality": sub[2], "sc": sc_i, "pq": pq_i, "overall": overall_i}
                   for task, sub, sc_i, pq_i, overall_i in rows]
        return RewardBatch(reward, details, failures=0)

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "match_tolerance": MATCH_TOLERANCE, "quality_tolerance": QUALITY_TOLERANCE}

    # ---- the arithmetic --------------------------------------------------------------------------------------
    def _subscores(self, tasks: list[ShapeTask], images: torch.Tensor) -> torch.Tensor:
        """images uint8 [B, 3, H, W] of one canvas size -> [B, 3] (success, over_editing, quality) on 0-10."""
        targets, regions = zip(*(_target_and_region(task) for task in tasks))
        target = torch.stack(targets)                                                # uint8 [B, 3, H, W]
        region = torch.stack(regions)                                                # bool [B, H, W]
        pixels = images.to(torch.int16)                                              # [B, 3, H, W]
        matches = (pixels - target.to(torch.int16)).abs().amax(dim=1) <= MATCH_TOLERANCE   # bool [B, H, W]
        in_region = region.flatten(1).sum(1).clamp_min(1)                            # [B]
        outside = (~region).flatten(1).sum(1)                                        # [B]
        success = (matches & region).flatten(1).sum(1) / in_region                   # [B]
        kept = (matches & ~region).flatten(1).sum(1) / outside.clamp_min(1)          # [B]
        kept = torch.where(outside == 0, torch.ones_like(kept), kept)
        return torch.stack([10 * success, 10 * kept, 10 * self._flatness(pixels)], dim=1).float()

    def _flatness(self, pixels: torch.Tensor) -> torch.Tensor:
        """int16 [B, 3, H, W] -> [B]: mean per-pixel closeness to the nearest palette colour, in [0, 1]."""
        nearest = torch.full(pixels.shape[:1] + pixels.shape[2:], 255, dtype=torch.int16)   # [B, H, W]
        for colour in self._palette:                                                 # [3]
            distance = (pixels - colour.view(1, 3, 1, 1)).abs().amax(dim=1)           # [B, H, W]
            torch.minimum(nearest, distance, out=nearest)
        closeness = (1.0 - nearest.float() / QUALITY_TOLERANCE).clamp_(0.0, 1.0)     # [B, H, W]
        return closeness.flatten(1).mean(1)

    def _lookup(self, instruction: str, source: torch.Tensor, index: int) -> ShapeTask:
        task = self._known.get((instruction, _pixel_digest(source)))
        if task is None:
            raise ValueError(f"sample {index}: no registered task has this instruction and source image; pass "
                             "tasks= to score() (needed when sources were re-encoded, e.g. as JPEG)")
        return task


def load(path=None, preset=None, device=None, dtype=None, backend="eager", *,
         tasks: Sequence[TaskLike] = ()) -> ProgrammaticReward:
    """The `load_reward("programmatic", tasks=...)` entry. The verifier has no weights and runs on the CPU, so
    path, preset, device, dtype and backend (shared arguments of a combined reward) do not apply to it."""
    return ProgrammaticReward(tasks)


# ---- inputs ------------------------------------------------------------------------------------------------------
def as_task(task: TaskLike) -> ShapeTask:
    """A ShapeTask from a ShapeTask, a manifest row with a spec, or a spec dict."""
    if isinstance(task, ShapeTask):
        return task
    if isinstance(task, EditRow):
        return ShapeTask.from_row(task)
    if isinstance(task, dict):
        return ShapeTask.from_spec(task)
    raise ValueError(f"a task must be a ShapeTask, an EditRow with a spec or a spec dict, got {type(task).__name__}")


def _check_matches(task: ShapeTask, instruction: str, source: torch.Tensor, name: str) -> None:
    if task.instruction and task.instruction != instruction:
        raise ValueError(f"{name}: the instruction {instruction!r} is not its task's {task.instruction!r}")
    if tuple(source.shape[1:]) != (task.height, task.width):
        raise ValueError(f"{name}: the source is {tuple(source.shape[1:])}, but its task's canvas is "
                         f"{(task.height, task.width)}")


@functools.lru_cache(maxsize=256)                   # the tasks of a few training steps
def _target_and_region(task: ShapeTask) -> tuple[torch.Tensor, torch.Tensor]:
    """(target uint8 [3, H, W], edit region bool [H, W]: where the clean source and the target differ)."""
    target = task.target_image()
    return target, (task.source_image() != target).any(dim=0)


def _pixel_digest(image: torch.Tensor) -> str:
    return hashlib.sha1(f"{tuple(image.shape)}".encode() + image.contiguous().numpy().tobytes()).hexdigest()

