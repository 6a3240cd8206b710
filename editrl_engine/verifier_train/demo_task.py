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


def build(tasks: list[ShapeTask], seed: int) -> tuple[list[SftRow], list[PreferenceRow], dict[str, list]]:
    """SFT rows (every candidate of every task), preference pairs, and each task's candidates (for reports)."""
    generator = torch.Generator().manual_seed(seed)
    sft, pairs, judged = [], [], {}
    for task in tasks:
        candidates = judge(task, candidate_images(task, generator))
        judged[task.id] = candidates
        principles, source = principles_of(task), (task.source_image(),)
        sft += [SftRow(source, c.image, task.instruction, principles, c.trace) for c in candidates]
        for a in candidates:
            for b in candidates:
                if a.reward - b.reward > PAIR_MARGIN:
                    pairs.append(PreferenceRow(source, task.instruction, principles, a.image, b.image))
    return sft, pairs, judged


def held_out_pairs(n: int, seed: int, size: int) -> tuple[list[PreferenceRow], list[tuple[ShapeTask, Candidate,
                                                                                          Candidate]]]:
    """One preference pair per held-out task (a fixed, seeded choice among its pairs), and its two candidates."""
    tasks = make_tasks(n, seed=seed, size=size)
    generator = torch.Generator().manual_seed(seed)
    rows, which = [], []
    for task in tasks:
        candidates = judge(task, candidate_images(task, generator))
        options = [(a, b) for a in candidates for b in candidates if a.reward - b.reward > PAIR_MARGIN]
        a, b = options[int(torch.randint(len(options), (1,), generator=generator))]
        rows.append(PreferenceRow((task.source_image(),), task.instruction, principles_of(task), a.image, b.image))
        which.append((task, a, b))
    return rows, which
