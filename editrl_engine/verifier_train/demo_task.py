"""The verifier demo's data: candidate edits of synthetic shapes tasks, judged by the task's exact object-level
checks (reward/programmatic.py), as SFT traces and preference pairs.

Candidates of a task: the exact target; the unedited source; every shape erased (the source's background only);
the target with Gaussian noise (std NOISE_STD per channel); and, when the task keeps a shape, the target with a kept
shape erased (the wrong shape removed too). Each is judged against three principles:
  follow   the task's own "follow" principle          score: the programmatic success (0-10)
  keep     everything the instruction does not name   score: the programmatic over-editing score (0-10)
  quality  flat colours, sharp edges, no artifacts    score: the programmatic quality (0-10)
A verdict is pass at 9 or more, partial at 5 or more, fail below. The trace is the verifier's verdict JSON with
those verdicts and scores and the final score round(10 · programmatic reward): exactly what the verifier's parser
reads. A preference pair is two candidates whose programmatic rewards differ by more than PAIR_MARGIN, the better
one preferred.

What the verifier is shown as the edited image (`edited_view`): "image", the edited image itself, as a real verifier
sees it; or "difference", 128 + 2 (edited - source) clipped, a picture of what changed. The demo uses "difference":
its random-weight verifier has no sight, an image is 4-16 of ~330 prompt tokens and the candidates' traces differ
in ~12 of ~77 tokens, so on the edited image SFT fits the trace format and the per-task verdict priors and never
reads the edit (held-out accuracy 0 at every batch, lr and data size tried); shown the difference it reads the edit
within minutes (bench/verifier_image_dependence.py and docs/design.md have the measurements).
"""
from __future__ import annotations

import dataclasses

import torch

from ..data.shapes import render
from ..data.synthetic import ShapeTask, make_tasks
from ..reward import verifier_prompts as vp
from ..reward.programmatic import ProgrammaticReward
from .data import PreferenceRow, SftRow, verdict_trace

NOISE_STD = 48.0
PAIR_MARGIN = 0.2
EDITED_VIEWS = ("image", "difference")
KEEP = "keep: everything the instruction does not name stays exactly as it was"
QUALITY = "quality: flat colors with sharp edges and no artifacts"


@dataclasses.dataclass
class Candidate:
    name: str
    image: torch.Tensor                    # uint8 [3, H, W]
    reward: float                          # the programmatic reward in [0, 1]
    scores: tuple[float, float, float]     # follow, keep, quality on 0-10
    trace: str


def principles_of(task: ShapeTask) -> tuple[vp.Principle, ...]:
    follow = next(p for p in task.principles if p.lower().startswith("follow"))
    return vp.as_principles([follow, KEEP, QUALITY])


def verdict(score: float) -> str:
    return "pass" if score >= 9 else "partial" if score >= 5 else "fail"


def candidate_images(task: ShapeTask, generator: torch.Generator) -> dict[str, torch.Tensor]:
    target = task.target_image()
    noise = torch.randn(target.shape, generator=generator) * NOISE_STD
    images = {"target": target, "source": task.source_image(),
              "erased": render(task.height, task.width, task.background, ()),
              "noisy": (target.double() + noise).round().clamp(0, 255).to(torch.uint8)}
    background, shapes = task.edited_scene()
    edited = None if task.edit.kind in ("background", "remove") else task.edit.shape  # its index after the edit
    kept = [s for i, s in enumerate(shapes) if i != edited]
    if kept:                                                # a kept shape erased as well
        images["wrong"] = render(task.height, task.width, background, tuple(s for s in shapes if s is not kept[0]))
    return images


def difference_view(edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The edit as a picture of what changed: 128 + 2 (edited - source), clipped; uint8 [3, H, W]."""
    return (128 + 2 * (edited.int() - source.int())).clamp(0, 255).to(torch.uint8)


def shown(image: torch.Tensor, source: torch.Tensor, edited_view: str) -> torch.Tensor:
    """What the verifier is shown for an edited image of `source`."""
    if edited_view not in EDITED_VIEWS:
        raise ValueError(f"edited_view must be one of {EDITED_VIEWS}, got {edited_view!r}")
    return difference_view(image, source) if edited_view == "difference" else image


def judge(task: ShapeTask, images: dict[str, torch.Tensor]) -> list[Candidate]:
    names = list(images)
    batch = ProgrammaticReward([task]).score([task.source_image()] * len(names), [task.instruction] * len(names),
                                             [images[n] for n in names], tasks=[task] * len(names))
    principles = principles_of(task)
    out = []
    for name, reward, details in zip(names, batch.reward.tolist(), batch.details):
        scores = (float(details["success"]), float(details["over_editing"]), float(details["quality"]))
        verdicts = [(verdict(s), round(s), "") for s in scores]
        out.append(Candidate(name, images[name], reward, scores,
                             verdict_trace(principles, verdicts, round(10 * reward), "")))
    return out


def build(tasks: list[ShapeTask], seed: int, edited_view: str = "image"
          ) -> tuple[list[SftRow], list[PreferenceRow], dict[str, list]]:
    """SFT rows (every candidate of every task), preference pairs, and each task's candidates (for reports); the
    rows show each candidate as `edited_view` has it."""
    generator = torch.Generator().manual_seed(seed)
    sft, pairs, judged = [], [], {}
    for task in tasks:
        candidates = judge(task, candidate_images(task, generator))
        judged[task.id] = candidates
        principles, source = principles_of(task), (task.source_image(),)
        view = {c.name: shown(c.image, source[0], edited_view) for c in candidates}
        sft += [SftRow(source, view[c.name], task.instruction, principles, c.trace) for c in candidates]
        for a in candidates:
            for b in candidates:
                if a.reward - b.reward > PAIR_MARGIN:
                    pairs.append(PreferenceRow(source, task.instruction, principles, view[a.name], view[b.name]))
    return sft, pairs, judged


def held_out_pairs(n: int, seed: int, size: int, edited_view: str = "image"
                   ) -> tuple[list[PreferenceRow], list[tuple[ShapeTask, Candidate, Candidate]]]:
    """One preference pair per held-out task (a fixed, seeded choice among its pairs), and its two candidates."""
    tasks = make_tasks(n, seed=seed, size=size)
    generator = torch.Generator().manual_seed(seed)
    rows, which = [], []
    for task in tasks:
        candidates = judge(task, candidate_images(task, generator))
        options = [(a, b) for a in candidates for b in candidates if a.reward - b.reward > PAIR_MARGIN]
        a, b = options[int(torch.randint(len(options), (1,), generator=generator))]
        source = task.source_image()
        rows.append(PreferenceRow((source,), task.instruction, principles_of(task),
                                  shown(a.image, source, edited_view), shown(b.image, source, edited_view)))
        which.append((task, a, b))
    return rows, which
