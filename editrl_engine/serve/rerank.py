"""Best-of-N reranking: sample N edits of one (source, instruction) as one group, score them, keep the best.

    result = rerank(policy, reward, source, "make the square blue", n=8, seed=0, num_steps=28)
    result.best_image          # uint8 [3, H, W], or None when every reward is NaN (result.error says so)
    result.candidates[i]       # index, seed, image, reward, details

The pair is encoded once (policy.encode), its N samples drawn as one group by ode_sample (sample i from seed
seed + i, so the same seed gives the same candidates), decoded, and scored through the reward's shared-prefix
group path (score_groups) when it has one (reward.shares_prefix). A NaN reward (no score could be had) never wins.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..policy.base import EditPolicy
from ..policy.samplers import SOLVERS, ode_sample, repeat_for_group
from ..reward.base import RewardModel
from ..vlm.images import as_rgb_image, check_image
from .scoring import best_index


@dataclasses.dataclass
class Candidate:
    index: int
    seed: int                       # the generator seed this sample was drawn from
    image: torch.Tensor             # uint8 [3, H, W]
    reward: float                   # in [0, 1], NaN when the judge gave no score
    details: dict[str, Any]         # the reward's details for this candidate (sub-scores, probabilities, error)

    @property
    def error(self) -> str | None:
        if math.isfinite(self.reward):
            return None
        return str(self.details.get("error") or "the reward is NaN (no score could be had)")


@dataclasses.dataclass
class RerankResult:
    instruction: str
    candidates: list[Candidate]
    rewards: torch.Tensor           # float32 [N], NaN where no score could be had
    best_index: int | None          # highest finite reward; None when every reward is NaN
    failures: int                   # how many rewards are NaN
    error: str | None               # set when no candidate could be chosen
    seed: int
    num_steps: int
    solver: str
    reward_kind: str
    policy_family: str
    group_path: bool                # the reward's score_groups shares each group's prefix (reward.shares_prefix)
    timings: dict[str, float]       # seconds: generate (encode + sample + decode), score

    @property
    def best(self) -> Candidate | None:
        return None if self.best_index is None else self.candidates[self.best_index]

    @property
    def best_image(self) -> torch.Tensor | None:
        """uint8 [3, H, W] of the best candidate, or None when none could be chosen."""
        return None if self.best is None else self.best.image

    @property
    def best_reward(self) -> float | None:
        return None if self.best is None else self.best.reward

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pixels; NaN rewards stay float here (outputs.jsonable turns them into null)."""
        return {
            "instruction": self.instruction, "n": len(self.candidates), "seed": self.seed,
            "num_steps": self.num_steps, "solver": self.solver, "reward": self.reward_kind,
            "policy": self.policy_family, "group_path": self.group_path, "best_index": self.best_index,
            "best_reward": self.best_reward, "failures": self.failures, "error": self.error,
            "timings": dict(self.timings),
            "candidates": [{"index": c.index, "seed": c.seed, "reward": c.reward, "error": c.error,
                            "size": list(c.image.shape[1:]), "details": c.details} for c in self.candidates],
        }


def _source_image(source) -> Image.Image | torch.Tensor | list:
    """A list / tuple of sources -> a list of each one's image, in order. An image path -> its PIL RGB image;
    an image in any form vlm/images.py accepts (PIL, uint8 tensor [3, H, W],
    uint8 NumPy array [H, W, 3]) -> checked, a tensor as it is, anything else as a PIL RGB image."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("rerank needs at least one source image, got an empty list")
        return [_one_source(one) for one in source]             # a nested list is refused as an image form
    return _one_source(source)


def _one_source(source) -> Image.Image | torch.Tensor:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"source image {path} does not exist")
        with Image.open(path) as image:
            return image.convert("RGB")
    if check_image(source, "source", also="an image path") == "tensor":
        return source
    return as_rgb_image(source, "source")


@torch.no_grad()
def generate(policy: EditPolicy, source, instruction: str, n: int, seed: int, num_steps: int, solver: str = "euler",
             guidance: float | None = None, batch_size: int | None = None) -> torch.Tensor:
    """N edits of one pair as one group: encode once, ode_sample G = n, decode. uint8 [n, 3, H, W]."""
    cond = policy.encode([source], [instruction])                                     # 1 row
    x0 = ode_sample(policy, cond, group_size=n, num_steps=num_steps, solver=solver, seed=seed, guidance=guidance,
                    batch_size=batch_size)                                            # [n, L, C] float32
    return policy.decode(x0, repeat_for_group(cond, n)).cpu()                         # uint8 [n, 3, H, W]


def rerank(policy: EditPolicy, reward: RewardModel, source, instruction: str, n: int = 8, seed: int = 0,
           num_steps: int = 28, *, solver: str = "euler", guidance: float | None = None,
           batch_size: int | None = None) -> RerankResult:
    """Sample n edits of (source, instruction) with the policy, score them with the reward, pick the best.

    source: a PIL image, a uint8 tensor [3, H, W], a uint8 NumPy array [H, W, 3] or an image path; or a list of
    them (several source images of one edit, for a policy that takes them: qwen-image-edit-plus, flux2), passed as
    a list to policy.encode and reward.score_groups.
    Candidate i is drawn from seed + i.
    batch_size bounds the rows per transformer call while sampling (None: all n at once)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("rerank needs a non-empty instruction")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (candidates to sample) must be an integer >= 1, got {n!r}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    image = _source_image(source)

    begin = time.perf_counter()
    images = generate(policy, image, instruction, n, seed, num_steps, solver, guidance, batch_size)  # [n, 3, H, W]
    generated = time.perf_counter()
    batch = reward.score_groups([image], [instruction], [list(images)])
    scored = time.perf_counter()

    rewards = batch.reward.detach().float().cpu()                                     # [n]
    best = best_index(rewards)
    failures = int(torch.isnan(rewards).sum())
    candidates = [Candidate(index=i, seed=seed + i, image=images[i], reward=float(rewards[i]),
                            details=dict(batch.details[i])) for i in range(n)]
    error = None
    if best is None:
        first = next((c.error for c in candidates if c.error), "")
        error = (f"no candidate could be chosen: all {n} rewards are NaN (the reward gave no score; first error: "
                 f"{first})")
    return RerankResult(
        instruction=instruction, candidates=candidates, rewards=rewards, best_index=best, failures=failures,
        error=error, seed=seed, num_steps=num_steps, solver=solver,
        reward_kind=str(getattr(reward, "kind", type(reward).__name__)),
        policy_family=str(getattr(policy, "family", type(policy).__name__)), group_path=bool(reward.shares_prefix),
        timings={"generate_s": generated - begin, "score_s": scored - generated})
