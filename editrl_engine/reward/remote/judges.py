"""The judges over OpenAI-compatible chat completions, with the in-process judges' prompts and parsers.

mllm_logit  one request per edit: max_tokens 1, logprobs with top_logprobs alternatives. The reward is the
            expectation of the rating over the digit tokens "0".."5" that appear among them, renormalised over
            those digits (with all six present: the in-process softmax over the six digit logits). The mass they
            cover is in details["digit_mass"]; below min_digit_mass the judge did not answer with a digit: NaN.
editscore   EditScoreReward with a generate_fn that sends each call (SC, PQ) as a request: greedy at
            temperature 0, a sampled pass with its seed, temperature, top-p and top-k (send_top_k=False for a
            server that refuses top_k, e.g. a hosted API).
verifier    VerifierReward with a generate_fn that sends the principles and verdict prompts likewise.
A request that finally fails is a MissingAnswer carrying the reason: the parsers give it as the error, the
reward is NaN and counted. Every request of one group goes to one endpoint (transport.py, routing.py).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from ...vlm.images import as_rgb_image
from ..base import RewardBatch, RewardModel, check_groups, check_triples, rows_field
from ..chat import IMAGE, to_messages
from ..mllm_logit import MAX_RATING, RATINGS
from ..mllm_prompts import check_jpeg_quality, jpeg_round_trip, load_layout
from ..parsing import MissingAnswer
from ..sources import source_list
from .transport import Failure, Transport

CHAT = "/chat/completions"


class RemoteChat:
    """Chat-completion requests to one judge model over a Transport; answers in order, a Failure where none."""

    def __init__(self, transport: Transport, model: str | None):
        self.transport = transport
        self.model = model or transport.get("/models")["data"][0]["id"]

    def body(self, prompt: str, images: Sequence, **fields) -> dict:
        return {"model": self.model, "messages": to_messages(prompt, images), **fields}

    def send(self, bodies: list[dict], groups: list) -> list[dict | Failure]:
        return self.transport.post_groups(CHAT, bodies, groups) if bodies else []


def first_choice(answer: dict | Failure) -> dict | Failure:
    if isinstance(answer, Failure):
        return answer
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Failure("the answer has no choices", transport=False)
    return choices[0]


def answer_text(answer: dict | Failure) -> str:
    """The text of the first choice, or a MissingAnswer with the reason."""
    choice = first_choice(answer)
    if isinstance(choice, Failure):
        return MissingAnswer(choice.reason)
    content = (choice.get("message") or {}).get("content")
    return content if isinstance(content, str) else MissingAnswer("the answer has no message content")


def digit_logprobs(answer: dict | Failure) -> dict[int, float] | Failure:
    """{rating: logprob} of the digit tokens among the first token's top_logprobs (exact tokens "0".."5")."""
    choice = first_choice(answer)
    if isinstance(choice, Failure):
        return choice
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
        found = {entry["token"]: float(entry["logprob"]) for entry in top}
    except (KeyError, IndexError, TypeError, ValueError):
        return Failure("the answer has no logprobs.content[0].top_logprobs (the server must support logprobs)",
                       transport=False)
    return {r: found[str(r)] for r in RATINGS if str(r) in found}


class RemoteCounters:
    """stats(): model, endpoints and per-endpoint counters; close(): ends the transport's client and loop."""
    chat: RemoteChat

    def stats(self) -> dict:
        return remote_metadata(self.chat)

    def close(self) -> None:
        self.chat.transport.close()


class RemoteLogitReward(RemoteCounters, RewardModel):
    kind = "mllm_logit"
    multi_source = True                     # several source images are shown, labelled (mllm_prompts.py)

    def __init__(self, chat: RemoteChat, *, requirement: str | None = None, layout: str = "interleaved",
                 jpeg_quality: int = 0, top_logprobs: int = 20, min_digit_mass: float = 0.5):
        if not 0 <= min_digit_mass <= 1 or top_logprobs < 6:
            raise ValueError(f"min_digit_mass must lie in [0, 1] and top_logprobs be >= 6 (the six digits), got "
                             f"{min_digit_mass} and {top_logprobs}")
        self.chat, self.requirement, self.top_logprobs, self.min_digit_mass = chat, requirement, top_logprobs, \
            min_digit_mass
        self.layout, self.jpeg_quality = load_layout(layout), check_jpeg_quality(jpeg_quality)

    def image(self, image):
        image = as_rgb_image(image)
        return jpeg_round_trip(image, self.jpeg_quality) if self.jpeg_quality else image

    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence,
              requirements: Sequence[str | None] | None = None, *, rows: Sequence | None = None) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        return self._score(sources, instructions, edited, self._requirements(requirements, rows, n), list(range(n)))

    def score_groups(self, sources: Sequence, instructions: Sequence[str], candidates: Sequence[Sequence],
                     requirements: Sequence[str | None] | None = None, *, rows: Sequence | None = None) -> RewardBatch:
        sizes = check_groups(sources, instructions, candidates)
        given = self._requirements(requirements, rows, len(candidates))
        flat = [(s, i, r, g) for g, (s, i, r, size) in enumerate(zip(sources, instructions, given, sizes))
                for _ in range(size)]
        return self._score([f[0] for f in flat], [f[1] for f in flat], [im for group in candidates for im in group],
                           [f[2] for f in flat], [f[3] for f in flat])

    def _requirements(self, given, rows, n: int) -> list:
        if given is None:
            from_rows = rows_field(rows, "requirement", n, "score")
            given = [r or self.requirement for r in from_rows] if from_rows is not None else [self.requirement] * n
        if len(given) != n:
            raise ValueError(f"got {len(given)} requirements for {n} samples or groups")
        return list(given)

    def _score(self, sources, instructions, edited, requirements, groups) -> RewardBatch:
        bodies = []
        for source, instruction, image, requirement in zip(sources, instructions, edited, requirements):
            images = [self.image(s) for s in source_list(source)] + [self.image(image)]
            prompt = self.layout.prompt(instruction, requirement, len(images) - 1)
            bodies.append(self.chat.body(prompt, images, max_tokens=1,
                                         temperature=0, logprobs=True, top_logprobs=self.top_logprobs))
        rewards, details = [], []
        for answer in self.chat.send(bodies, groups):
            reward, detail = self._reward(digit_logprobs(answer))
            rewards.append(reward)
            details.append(detail)
        reward = torch.tensor(rewards, dtype=torch.float32)                                     # [N]
        return RewardBatch(reward=reward, details=details, failures=int(reward.isnan().sum()))

    def _reward(self, digits: dict[int, float] | Failure) -> tuple[float, dict]:
        if isinstance(digits, Failure):
            return math.nan, {"error": f"no answer: {digits.reason}"}
        mass = sum(math.exp(v) for v in digits.values())
        if not digits or mass < self.min_digit_mass:
            return math.nan, {"digit_mass": mass, "error": f"the digits 0-5 cover {mass:.3f} of the answer's "
                                                           f"probability, under min_digit_mass {self.min_digit_mass}"}
        p = [math.exp(digits[r]) / mass if r in digits else 0.0 for r in RATINGS]
        expected = sum(r * q for r, q in zip(RATINGS, p))
        return expected / MAX_RATING, {"probabilities": p, "expected_rating": expected, "digit_mass": mass}

    def metadata(self) -> dict:
        return {"kind": self.kind, "remote": self.stats(), "layout": self.layout.name,
                "jpeg_quality": self.jpeg_quality, "top_logprobs": self.top_logprobs,
                "min_digit_mass": self.min_digit_mass, "requirement": self.requirement}


def remote_metadata(chat: RemoteChat) -> dict:
    """Endpoints, model and per-endpoint counters (never the API key)."""
    return {"model": chat.model, "endpoints": chat.transport.stats()}


class GenerateRemote:
    """A generate function over chat completions, for the generative judges' seams: sampling fields per call,
    groups by the images shared before the candidate (so a group's calls go to one endpoint)."""

    def __init__(self, chat: RemoteChat, send_top_k: bool = True):
        self.chat, self.send_top_k = chat, send_top_k

    def fields(self, max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None) -> dict:
        if temperature <= 0:
            return {"max_tokens": max_tokens, "temperature": 0}
        sampled = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        if self.send_top_k and top_k > 0:
            sampled["top_k"] = top_k
        return {**sampled, **({"seed": seed} if seed is not None else {})}

    def __call__(self, prompts: Sequence[str], images: Sequence[Sequence], fields: dict) -> list[str]:
        rows = [[as_rgb_image(im) for im in row] for row in images]
        bodies = [self.chat.body(p, row, **fields) for p, row in zip(prompts, rows)]
        return [answer_text(a) for a in self.chat.send(bodies, [group_key(p, row) for p, row in zip(prompts, rows)])]


def group_key(prompt: str, images: Sequence) -> tuple:
    """What a group's calls share: the prompt's text before its first image and that first image's pixels (the
    source, for a call that also shows the candidate)."""
    return prompt.split(IMAGE)[0], hashlib.sha1(images[0].tobytes()).hexdigest() if images else None
