"""The exact verifier of the synthetic shapes task (data/synthetic.py), on the VIEScore SC / PQ / O scale, judged
object by object.

Why per object: an earlier version measured consistency as the fraction of ALL pixels outside the edit region
that still matched. A kept 3x3 shape is about 4 % of a 16x16 canvas, so painting the whole canvas background
kept about 90 % of those pixels and scored about 0.9: the RL'd demo editor learnt to erase every shape and the
reward said it had improved (reward hacking). Now every object the instruction does not name gets its own
verdict, and SC is the minimum of all verdicts, so one destroyed object drives the reward to about 0 however
small it is.

The task's spec gives the exact target rendering T and the scene before and after the edit. A pixel of the edited
image E "matches" a rendering when every channel is within MATCH_TOLERANCE of it. Each verdict is the fraction
of a set of pixels (the object's own visible pixels, or the background's) where E matches T:

  edited     the named thing, by edit kind:
               recolor     the shape's pixels (in T: the shape in its new colour)
               move        vacated = the old place's pixels (in T: what is there now, the background) and
                           arrived = the new place's pixels (in T: the shape); its verdict is min(vacated, arrived),
                           both are in the details
               remove      the removed shape's pixels (in T: background there)
               background  the background's pixels (in T: the new colour)
  kept       each shape the instruction does not name, over its own pixels ("preserved"), one verdict each
  background the pixels that are background both before and after the edit ("preserved"); for a background
             edit the background is the edited thing and has no preservation verdict (None)

Sub-scores, each on 0-10:

  success      10 * the edited verdict
  over_editing 10 * min(every kept verdict, the background verdict); 10 when there is none (the consistency)
  quality      10 * mean over all pixels of clamp(1 - d / QUALITY_TOLERANCE, 0, 1), d the per-channel max
               distance to the nearest palette colour                      (flat colours: no noise, no blur)

SC = min(success, over_editing), PQ = quality, O = sqrt(SC * PQ), reward = O / 10 in [0, 1]. The target scores
exactly 1; the unedited source 0 (the edited thing never matches: palette colours are >= 78 apart per channel
somewhere); erasing a kept shape 0; random noise about 0.

A verdict passes when its fraction is >= PASS_FRACTION (0.9; a 3x3 square must keep all 9 pixels, since 8/9 <
0.9). details[i] holds, besides the sub-scores (0-10) and "task_id" / "edit":
  "objects"          one dict per verdict of a shape or the edited background: {"role": "edited" | "kept",
                     "index": the shape's index in the task (None for the background), "kind", "colour", "cell",
                     "success" (edited) or "preserved" (kept): the fraction, "passed": fraction >= PASS_FRACTION};
                     an edited shape also has "new_colour" (recolor) or "new_cell", "vacated", "arrived" (move); an
                     edited background has kind "background", its old "colour" and "new_colour"
  "background"       the background verdict (a fraction), None for a background edit
  "named_edited"     the edited verdict passed (the object-level "named object edited" rate)
  "others_kept"      every kept shape's verdict passed; None when the scene has no other shape
  "background_kept"  the background verdict passed; None for a background edit

Which task a sample belongs to: pass `tasks=` to `score` (ShapeTask, a manifest EditRow with a spec, or a
spec dict) or `rows=` (EditRows with a spec, as the engine does), or give the tasks to the constructor and they
are found by (instruction, exact source pixels).
Every image is computed in one vectorised pass per canvas size (matches, then every verdict of the batch as one
masked count); each task's target and verdict masks are cached.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from ..data.manifest import EditRow
from ..data.shapes import PALETTE, owners
from ..data.synthetic import ShapeTask
from ..vlm.images import as_uint8_tensor
from .base import RewardBatch, RewardModel, check_triples

MATCH_TOLERANCE = 32          # per channel; under half the smallest distance between two palette colours (78)
QUALITY_TOLERANCE = 48        # per channel distance to the palette at which a pixel's quality reaches 0
PASS_FRACTION = 0.9           # a verdict (edited / kept / background) passes when this share of its pixels match
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
              tasks: Sequence[TaskLike] | None = None, rows: Sequence[EditRow] | None = None) -> RewardBatch:
        """tasks: each sample's task; else its row (an EditRow with a spec); else found among the registered."""
        n = check_triples(sources, instructions, edited)
        tasks = tasks if tasks is not None else rows
        if tasks is not None and len(tasks) != n:
            raise ValueError(f"score() got {len(tasks)} tasks for {n} samples")
        resolved = []                                                                # ShapeTask per sample
        images = []                                                                  # uint8 [3, H, W] per sample
        for i in range(n):
            given = sources[i]
            if isinstance(given, (list, tuple)) and len(given) > 1:
                raise ValueError(f"sample {i} has {len(given)} source images, but the programmatic reward checks "
                                 "edits of the synthetic shapes task, which have one: give one source image, or "
                                 "score several with a VLM judge (mllm_logit, editscore, verifier)")
            if isinstance(given, (list, tuple)) and len(given) == 1:               # a one-image list is that image
                given = given[0]
            source = as_uint8_tensor(given, f"sources[{i}]")
            task = as_task(tasks[i]) if tasks is not None else self._lookup(instructions[i], source, i)
            _check_matches(task, instructions[i], source, f"sample {i}")
            image = as_uint8_tensor(edited[i], f"edited[{i}]")
            if tuple(image.shape[1:]) != (task.height, task.width):
                raise ValueError(f"edited[{i}] is {tuple(image.shape[1:])}, but its task's canvas is "
                                 f"{(task.height, task.width)}")
            resolved.append(task)
            images.append(image)
        plans = [_plan(task) for task in resolved]
        fractions: list[list[float]] = [[] for _ in range(n)]                        # per sample, per verdict
        quality = torch.empty(n, dtype=torch.float64)                                # [N] on 0-10
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, task in enumerate(resolved):
            by_size.setdefault((task.height, task.width), []).append(i)
        for indices in by_size.values():
            batch = torch.stack([images[i] for i in indices])                        # uint8 [B, 3, H, W]
            verdicts, flat = self._verdicts([plans[i] for i in indices], batch)
            quality[indices] = 10 * flat
            for row, i in zip(verdicts.tolist(), indices):
                fractions[i] = row[:len(plans[i].parts)]
        details = [_detail(task, plan, row, q) for task, plan, row, q in
                   zip(resolved, plans, fractions, quality.tolist())]
        overall = torch.tensor([d["overall"] for d in details], dtype=torch.float64)  # [N] on 0-10
        reward = (overall / 10.0).clamp(0.0, 1.0).float()
        return RewardBatch(reward, details, failures=0)

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "rule": "object-level", "match_tolerance": MATCH_TOLERANCE,
                "quality_tolerance": QUALITY_TOLERANCE, "pass_fraction": PASS_FRACTION}

    # ---- the arithmetic --------------------------------------------------------------------------------------
    def _verdicts(self, plans: list["_Plan"], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images uint8 [B, 3, H, W] of one canvas size -> (verdict fractions [B, K] (K the most verdicts of a
        sample; padding is 1), flatness [B] in [0, 1])."""
        target = torch.stack([plan.target for plan in plans])                        # uint8 [B, 3, H, W]
        k = max(len(plan.parts) for plan in plans)
        masks = torch.zeros((len(plans), k) + tuple(images.shape[2:]), dtype=torch.bool)   # [B, K, H, W]
        for b, plan in enumerate(plans):
            masks[b, :len(plan.parts)] = plan.masks
        pixels = images.to(torch.int16)                                              # [B, 3, H, W]
        matches = (pixels - target.to(torch.int16)).abs().amax(dim=1) <= MATCH_TOLERANCE   # bool [B, H, W]
        hits = (masks & matches.unsqueeze(1)).flatten(2).sum(2)                      # [B, K]
        totals = masks.flatten(2).sum(2)                                             # [B, K]
        fractions = torch.where(totals > 0, hits.double() / totals.clamp_min(1), 1.0)   # an empty set is kept
        return fractions, self._flatness(pixels)

    def _flatness(self, pixels: torch.Tensor) -> torch.Tensor:
        """int16 [B, 3, H, W] -> [B]: mean per-pixel closeness to the nearest palette colour, in [0, 1]."""
        nearest = torch.full(pixels.shape[:1] + pixels.shape[2:], 255, dtype=torch.int16)   # [B, H, W]
        for colour in self._palette:                                                 # [3]
            distance = (pixels - colour.view(1, 3, 1, 1)).abs().amax(dim=1)           # [B, H, W]
            torch.minimum(nearest, distance, out=nearest)
        closeness = (1.0 - nearest.float() / QUALITY_TOLERANCE).clamp_(0.0, 1.0)     # [B, H, W]
        return closeness.flatten(1).mean(1).double()

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


# ---- the verdicts of a task --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Plan:
    target: torch.Tensor                 # uint8 [3, H, W]: the exact target rendering
    masks: torch.Tensor                  # bool [K, H, W]: the pixels of each verdict
    parts: tuple[tuple[str, int | None], ...]   # per mask: (part, shape index or None); part is one of
                                                # "edited", "vacated", "arrived", "kept", "background"


@functools.lru_cache(maxsize=256)                   # the tasks of a few training steps
def _plan(task: ShapeTask) -> _Plan:
    """The target and the pixel set of every verdict of a task (see the module docstring)."""
    target = task.target_image()                                                     # validates the edit too
    edit, shapes = task.edit, list(enumerate(task.shapes))
    before = owners(task.height, task.width, shapes)                                # [H, W], -1 = background
    survivors = [j for j, _ in shapes if not (edit.kind == "remove" and j == edit.shape)]   # source indices
    after = owners(task.height, task.width, list(zip(survivors, task.edited_scene()[1])))  # [H, W]
    masks, parts = [], []
    if edit.kind == "background":
        masks.append(after < 0)
        parts.append(("edited", None))
    elif edit.kind == "recolor":
        masks.append(after == edit.shape)
        parts.append(("edited", edit.shape))
    elif edit.kind == "remove":
        masks.append(before == edit.shape)
        parts.append(("edited", edit.shape))
    else:                                                                            # move
        masks += [(before == edit.shape) & (after != edit.shape), after == edit.shape]
        parts += [("vacated", edit.shape), ("arrived", edit.shape)]
    for j, _ in shapes:
        if j != edit.shape:
            masks.append(after == j)
            parts.append(("kept", j))
    if edit.kind != "background":
        masks.append((before < 0) & (after < 0))
        parts.append(("background", None))
    return _Plan(target, torch.stack(masks), tuple(parts))


def _detail(task: ShapeTask, plan: _Plan, fractions: Sequence[float], quality: float) -> dict[str, Any]:
    """One sample's details from its verdict fractions (in plan.parts order) and its quality (0-10)."""
    edit = task.edit
    by_part = dict(zip(plan.parts, fractions))
    if edit.kind == "background":
        success = by_part[("edited", None)]
        edited = {"role": "edited", "index": None, "kind": "background", "colour": task.background,
                  "new_colour": edit.color, "success": success}
    else:
        shape = task.shapes[edit.shape]
        edited = {"role": "edited", "index": edit.shape, "kind": shape.kind, "colour": shape.color,
                  "cell": shape.cell}
        if edit.kind == "move":
            vacated, arrived = by_part[("vacated", edit.shape)], by_part[("arrived", edit.shape)]
            success = min(vacated, arrived)
            edited.update(new_cell=edit.cell, vacated=vacated, arrived=arrived)
        else:
            success = by_part[("edited", edit.shape)]
            if edit.kind == "recolor":
                edited["new_colour"] = edit.color
        edited["success"] = success
    edited["passed"] = success >= PASS_FRACTION
    kept = [{"role": "kept", "index": j, "kind": task.shapes[j].kind, "colour": task.shapes[j].color,
             "cell": task.shapes[j].cell, "preserved": value, "passed": value >= PASS_FRACTION}
            for (part, j), value in by_part.items() if part == "kept"]
    background = by_part.get(("background", None))
    preserved = [o["preserved"] for o in kept] + ([background] if background is not None else [])
    success_score = 10 * success
    over_editing = 10 * min(preserved, default=1.0)
    sc = min(success_score, over_editing)
    return {"task_id": task.id, "edit": edit.kind, "objects": [edited, *kept], "background": background,
            "success": success_score, "over_editing": over_editing, "quality": quality, "sc": sc, "pq": quality,
            "overall": (sc * quality) ** 0.5, "named_edited": edited["passed"],
            "others_kept": all(o["passed"] for o in kept) if kept else None,
            "background_kept": background >= PASS_FRACTION if background is not None else None}


def _pixel_digest(image: torch.Tensor) -> str:
    return hashlib.sha1(f"{tuple(image.shape)}".encode() + image.contiguous().numpy().tobytes()).hexdigest()
