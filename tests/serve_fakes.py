"""Test doubles and helpers of the serve tests: rewards that count, block, raise or give NaN; image payloads;
a loopback server.

The fake rewards score an edit as the mean of its red channel / 255: arithmetic the tests recompute on their own.
"""
from __future__ import annotations

import base64
import functools
import io
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from editrl_engine.reward.base import RewardBatch, RewardModel, check_triples
from editrl_engine.serve import BackgroundServer, ServeConfig, create_app


@functools.lru_cache(maxsize=None)
def tiny_judge():
    """The tiny mllm_logit reward (random weights, seed 0), built once for all the serve tests of a run."""
    from editrl_engine.reward import load_reward
    return load_reward("mllm_logit", preset="tiny")


@functools.lru_cache(maxsize=None)
def tiny_policy():
    """The tiny flux-kontext policy (random weights), built once for all the serve tests of a run."""
    from editrl_engine.policy import load_policy
    return load_policy("flux-kontext", preset="tiny")


def red_mean(image) -> float:
    """The fakes' reward of one image, computed independently of them: mean red / 255."""
    if isinstance(image, torch.Tensor):
        return float(image[0].double().mean() / 255)
    return float(np.asarray(image.convert("RGB"), dtype=np.float64)[..., 0].mean() / 255)


class CountingReward(RewardModel):
    """reward = mean red / 255. Records every model call: ("groups", [G per group]) or ("flat", N).

    gate: when given, each call waits for it (a slow model); `entered` is set when a call starts.
    fail_on: an instruction whose presence in a call makes the call raise RuntimeError (a model error)."""

    kind = "counting"

    def __init__(self, gate: threading.Event | None = None, fail_on: str | None = None, nan_on: str | None = None):
        self.gate, self.fail_on, self.nan_on = gate, fail_on, nan_on
        self.calls: list[tuple[str, object]] = []
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def _rewards(self, instructions: Sequence[str], edited: Sequence) -> RewardBatch:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=60)
        if self.fail_on is not None and self.fail_on in instructions:
            raise RuntimeError(f"the judge crashed on {self.fail_on!r}")
        values = [float("nan") if i == self.nan_on else red_mean(e) for i, e in zip(instructions, edited)]
        details = [{"error": "judge answered nothing"} if np.isnan(v) else {"red": v} for v in values]
        reward = torch.tensor(values, dtype=torch.float32)
        return RewardBatch(reward, details, failures=int(reward.isnan().sum()))

    def score(self, sources, instructions, edited) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        with self.lock:
            self.calls.append(("flat", n))
        return self._rewards(list(instructions), list(edited))


class GroupCountingReward(CountingReward):
    """CountingReward with a shared-prefix group path (score_groups), as mllm_logit and editscore have."""

    shares_prefix = True

    def score_groups(self, sources, instructions, candidates) -> RewardBatch:
        check_triples(sources, instructions, candidates)
        with self.lock:
            self.calls.append(("groups", [len(g) for g in candidates]))
        flat_instructions = [i for i, group in zip(instructions, candidates) for _ in group]
        return self._rewards(flat_instructions, [image for group in candidates for image in group])


def solid(rgb, size=16) -> Image.Image:
    return Image.new("RGB", (size, size), tuple(rgb))


def noisy(seed: int, size=16) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def png_bytes(image, format="PNG") -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else
     Image.fromarray(image.permute(1, 2, 0).numpy())).save(buffer, format=format)
    return buffer.getvalue()


def b64(image, format="PNG") -> str:
    return base64.b64encode(png_bytes(image, format)).decode()


def score_body(instruction: str, source, candidates) -> dict:
    return {"instruction": instruction, "source": b64(source), "candidates": [b64(c) for c in candidates]}


def serve(reward, policy=None, **settings) -> BackgroundServer:
    """A started server on 127.0.0.1 (a free port) over a fresh app."""
    return BackgroundServer(create_app(reward, policy, ServeConfig(**settings))).start()


def wait_until(condition, what: str, limit_s: float = 30.0) -> None:
    """Poll until condition() holds (a synchronisation point, not a timing check); fail after limit_s."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.005)


class FixedReward(RewardModel):
    """Gives the listed rewards, in order, to the candidates of each call (NaN: no score)."""

    kind = "fixed"

    def __init__(self, values: Sequence[float]):
        self.values = list(values)

    def score(self, sources, instructions, edited) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        reward = torch.tensor(self.values[:n], dtype=torch.float32)
        details = [{"error": "unparseable judge answer"} if np.isnan(v) else {} for v in self.values[:n]]
        return RewardBatch(reward, details, failures=int(reward.isnan().sum()))
