"""The training-free logit reward of UniWorld-V2: a VLM rates an edit 0-5 in one forward, no generation.

The prompt shows the source image, the instruction (and an optional task requirement), then the edited image,
and asks for a 0-5 rating answered with the number only (layout "interleaved"; "uniworld" or a template file put
both images first: mllm_prompts.py; jpeg_quality > 0 round-trips every image through JPEG first, as UniWorld-V2).
At the answer position (the next token after the assistant prefix) the logits of the tokens "0".."5" are
softmaxed in float64: p [6], reward = sum_k k * p_k / 5 in [0, 1].
The shared part of a group (interleaved: source and instruction; images first: the source) comes first in the
prompt: score_groups() prefills it once per group and reuses its KV cache for every candidate (prefix_cache.py).
Samples are scored in batches, left-padded with an attention mask, so the answer position is the last one;
images are resized so their visual tokens stay at most those of a max_image_pixels image (512² by default).
score() runs the decoder through a scoring backend (backends.py: eager, compiled, onnx, tensorrt); the vision
tower and score_groups() (KV-cache reuse) stay eager.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from editrl_engine.vlm import VLM
from editrl_engine.vlm import load as load_vlm
from editrl_engine.vlm.images import as_rgb_image

from . import backends, prefix_cache
from .base import RewardBatch, RewardModel, check_groups, check_triples, rows_field
from .mllm_prompts import (  # noqa: F401  (the interleaved layout's names, kept importable from here)
    IMAGE,
    PREFIX_TEMPLATE,
    PROMPT_TEMPLATE,
    REQUIREMENT_LINE,
    SUFFIX,
    build_prefix,
    build_prompt,
    check_jpeg_quality,
    jpeg_round_trip,
    load_layout,
)
from .sources import source_count, source_list

RATINGS = tuple(range(6))                                # the answers "0".."5"
MAX_RATING = RATINGS[-1]
BACKENDS = backends.SCORING_BACKENDS


def digit_token_ids(tokenizer) -> list[int]:
    """The token id of each answer "0".."5", looked up from the tokenizer; each digit must be one token."""
    ids = []
    for rating in RATINGS:
        encoded = tokenizer.encode(str(rating), add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"mllm_logit needs each rating 0..5 to be a single token, but the tokenizer encodes "
                             f"{str(rating)!r} as {len(encoded)} tokens {encoded}")
        ids.append(encoded[0])
    return ids


class MllmLogitReward(RewardModel):
    """reward = E[rating] / 5 under the VLM's next-token distribution restricted to the digits 0..5."""

    kind = "mllm_logit"
    shares_prefix = True
    multi_source = True                                  # a source may be several images, each shown, labelled

    def __init__(self, vlm: VLM, *, requirement: str | None = None, max_image_pixels: int = 512 * 512,
                 batch_size: int = 8, backend: str = "eager", backend_options: dict | None = None,
                 layout: str = "interleaved", jpeg_quality: int = 0):
        """backend_options go to backends.make_scorer (max_batch defaults to batch_size). layout: interleaved,
        uniworld or a template file's path (mllm_prompts.py); jpeg_quality: 0 = off, else every image is saved
        as JPEG at that quality and decoded before scoring (UniWorld-V2: 75)."""
        self.vlm, self.requirement, self.batch_size = vlm, requirement, batch_size
        self.layout, self.jpeg_quality = load_layout(layout), check_jpeg_quality(jpeg_quality)
        self.digit_ids = digit_token_ids(vlm.tokenizer)
        self.backend = backend
        self.scorer = None if backend == "eager" else backends.make_scorer(
            backend, vlm.model, self.digit_ids, **{"max_batch": batch_size, **(backend_options or {})})
        self.vlm.tokenizer.padding_side = "left"                 # the answer position is the last one in every row
        size = vlm.processor.image_processor.size
        self.image_size = {"shortest_edge": min(size["shortest_edge"], max_image_pixels),
                           "longest_edge": min(size["longest_edge"], max_image_pixels)}

    def image(self, image):
        """An input image as the judge sees it: RGB, JPEG round-tripped when jpeg_quality > 0."""
        image = as_rgb_image(image)
        return jpeg_round_trip(image, self.jpeg_quality) if self.jpeg_quality else image

    def inputs(self, sources: Sequence, instructions: Sequence[str], edited: Sequence,
               requirements: Sequence[str | None]) -> dict[str, torch.Tensor]:
        """Processor outputs of one batch: input_ids / attention_mask [B, S] (left-padded), pixel_values, grids."""
        images = [self.image(image) for source, edit in zip(sources, edited)
                  for image in (*source_list(source), edit)]                             # sources_i..., edited_i
        texts = [self.layout.prompt(i, r, source_count(s)) for i, r, s in zip(instructions, requirements, sources)]
        return self.vlm.processor(text=texts, images=images, padding=True, size=self.image_size, return_tensors="pt")

    @torch.no_grad()
    def answer_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, V] at the answer position of a left-padded batch."""
        model = self.vlm.model
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        return model(**inputs, logits_to_keep=1).logits[:, -1]                     # [B, V]

    def digit_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, 6] of "0".."5" at the answer position, through the scoring backend."""
        if self.scorer is None:
            return self.answer_logits(inputs)[:, self.digit_ids]
        return self.scorer(*backends.embedded_inputs(self.vlm.model, inputs))

    def rating_probabilities(self, sources: Sequence, instructions: Sequence[str], edited: Sequence,
                             requirements: Sequence[str | None]) -> torch.Tensor:
        """p [N, 6] (float64): softmax over the logits of "0".."5" at the answer position."""
        chunks = []
        for start in range(0, len(edited), self.batch_size):
            batch = slice(start, start + self.batch_size)
            logits = self.digit_logits(self.inputs(sources[batch], instructions[batch], edited[batch],
                                                   requirements[batch]))
            chunks.append(torch.softmax(logits.double(), dim=-1).cpu())                         # [B, 6]
        return torch.cat(chunks)

    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence,
              requirements: Sequence[str | None] | None = None, *, rows: Sequence | None = None) -> RewardBatch:
        """requirements: a task requirement per sample; else each row's `requirement`; else the one given at
        construction, if any."""
        n = check_triples(sources, instructions, edited)
        requirements = self._requirements(requirements, rows, n, "score", "samples")
        return rewards(self.rating_probabilities(list(sources), list(instructions), list(edited), requirements))

    def _requirements(self, given, rows, n: int, name: str, unit: str) -> list[str | None]:
        """The requirement of each of n samples / groups: the given ones, else the rows' (a row without one gets
        the default), else the default given at construction."""
        if given is None:
            from_rows = rows_field(rows, "requirement", n, name)
            given = [r or self.requirement for r in from_rows] if from_rows is not None else [self.requirement] * n
        given = list(given)
        if len(given) != n:
            raise ValueError(f"{name}() got {len(given)} requirements for {n} {unit}")
        return given

    def group_probabilities(self, sources: Sequence, instructions: Sequence[str], candidates: Sequence[Sequence],
                            requirements: Sequence[str | None]) -> torch.Tensor:
        """p [N, 6] (float64), N = total candidates, group-major. batch_size groups are prefilled together
        (left-padded); their candidates then run in chunks of batch_size, each on a gathered copy of the cache."""
        chunks = []
        for start in range(0, len(candidates), self.batch_size):
            groups = slice(start, start + self.batch_size)
            counts = [source_count(s) for s in sources[groups]]
            texts = [self.layout.prefix(i, r, k) for i, r, k in zip(instructions[groups], requirements[groups], counts)]
            images = [self.image(image) for source in sources[groups] for image in source_list(source)]
            prefix = prefix_cache.prefill(self.vlm.model, self.vlm.processor(
                text=texts, images=images, padding=True, size=self.image_size, return_tensors="pt"))
            rows = [g for g, group in enumerate(candidates[groups]) for _ in group]           # prefix row per candidate
            edited = [self.image(image) for group in candidates[groups] for image in group]
            texts = [self.layout.suffix(i, r, k) for i, r, k, group in
                     zip(instructions[groups], requirements[groups], counts, candidates[groups]) for _ in group]
            for first in range(0, len(edited), self.batch_size):
                part = slice(first, first + self.batch_size)
                suffixes = self.vlm.processor(text=texts[part], images=edited[part], padding=True,
                                              size=self.image_size, return_tensors="pt")
                logits = prefix_cache.suffix_logits(self.vlm.model, prefix, torch.tensor(rows[part]), suffixes)
                chunks.append(torch.softmax(logits[:, self.digit_ids].double(), dim=-1).cpu())  # [B, 6]
        return torch.cat(chunks)

    def score_groups(self, sources: Sequence, instructions: Sequence[str], candidates: Sequence[Sequence],
                     requirements: Sequence[str | None] | None = None, *, rows: Sequence | None = None) -> RewardBatch:
        """Group scoring: candidates[g] are the edits of (sources[g], instructions[g]); groups may differ in size.
        requirements (or rows): one per group, as in score(). The shared prefix of each group is prefilled once
        and its KV cache reused for every candidate. Returns one RewardBatch over all candidates, group-major
        (candidates[0][0], candidates[0][1], ..., candidates[1][0], ...), equal to score() on the flattened
        triples."""
        check_groups(sources, instructions, candidates)
        requirements = self._requirements(requirements, rows, len(candidates), "score_groups", "groups")
        return rewards(self.group_probabilities(list(sources), list(instructions), [list(g) for g in candidates],
                                                requirements))

    def metadata(self) -> dict:
        return {"kind": self.kind, "origin": self.vlm.origin, "requirement": self.requirement, "backend": self.backend,
                "image_size": dict(self.image_size), "layout": self.layout.name, "jpeg_quality": self.jpeg_quality}


def rewards(probabilities: torch.Tensor) -> RewardBatch:
    """reward [N] = E[rating] / 5 from p [N, 6]; a row with a non-finite probability is NaN and counted."""
    expected = probabilities @ torch.tensor(RATINGS, dtype=torch.float64)                     # [N] in [0, 5]
    finite = torch.isfinite(probabilities).all(dim=1)                                        # [N]
    reward = torch.where(finite, expected / MAX_RATING, float("nan")).float()
    details = [{"probabilities": p, "expected_rating": e} if ok else
               {"probabilities": p, "error": "non-finite rating probabilities"}
               for p, e, ok in zip(probabilities.tolist(), expected.tolist(), finite.tolist())]
    return RewardBatch(reward=reward, details=details, failures=int(torch.isnan(reward).sum()))


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, backend: str = "eager", *, seed: int = 0, family: str | None = None,
         **options) -> MllmLogitReward:
    """From a local Qwen2.5-VL or Qwen3-VL folder (`path`; `family` read from its config.json unless given) or a
    preset ("tiny": random weights, tokenizer learnt on the prompt).

    backend: one of BACKENDS (backends.py); one that cannot run here raises BackendUnavailable saying why.
    options: requirement, max_image_pixels, batch_size, backend_options, layout, jpeg_quality (MllmLogitReward)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown mllm_logit backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt":
        from . import tensorrt_scorer  # noqa: F401  (fails fast, before the model loads, where TensorRT is missing)
    vlm = load_vlm(path=path, preset=preset, device=device, dtype=dtype, family=family,
                          templates=(PROMPT_TEMPLATE, REQUIREMENT_LINE), seed=seed)
    return MllmLogitReward(vlm, backend=backend, **options)
