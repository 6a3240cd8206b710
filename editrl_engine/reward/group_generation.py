"""Shared-prefix generation for groups of candidates (the judges' score_groups paths: editscore's SC call, the
verifier's verdict call).

A group's G candidates share a prompt prefix (system, instruction, source image, and for the verifier the
principles) that ends on the special token <|vision_end|>: it is prefilled once per group (prefix_cache.prefill,
batch_size groups at a time, left-padded), and every candidate's suffix (edited image + questions) is generated
on a gathered copy of that KV cache, for every pass; the edited images of a chunk are encoded once and reused by
every pass. model.generate continues the cache: it gets the full ids [prefix row | suffix] and mask, explicit
M-RoPE positions (prefix positions, then the suffix's own shifted by the prefix's next position: what the whole
prompt gets) and the pre-encoded suffix images, and only runs the uncached suffix tokens.
Sampling: each pass keeps its own RNG stream (seeded with its seed, carried from chunk to chunk), so a pass is
reproducible; the draws differ from the flat path's, whose batches are cut differently. Greedy answers equal it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from editrl_engine.vlm.images import as_rgb_image
from editrl_engine.vlm.kv_cache import cache_kwargs

from . import prefix_cache
from .sources import rgb_sources


def _rng_state(devices: list) -> tuple:
    return torch.random.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple, devices: list) -> None:
    torch.random.set_rng_state(state[0])
    for device, cuda_state in zip(devices, state[1]):
        torch.cuda.set_rng_state(cuda_state, device)


class Continuation:
    """Suffixes [N] continuing prefix rows `rows`, ready to generate any number of times on the shared cache."""

    def __init__(self, model, prefix: prefix_cache.Prefix, prefix_inputs: dict, rows: torch.Tensor, suffix: dict):
        self.model, self.prefix, self.rows = model, prefix, rows
        device = model.device
        prefix_ids = prefix_inputs["input_ids"].index_select(0, rows)                       # [N, P]
        prefix_mask = prefix_inputs["attention_mask"].index_select(0, rows)                 # [N, P]
        positions = torch.cat([prefix_cache.rope_positions(model, prefix_inputs).index_select(1, rows),
                               prefix_cache.rope_positions(model, suffix)
                               + prefix.next_position[rows].view(1, -1, 1)], dim=2)         # [3, N, P + S]
        self.ids = torch.cat([prefix_ids, suffix["input_ids"]], dim=1).to(device)          # [N, P + S]
        self.mask = torch.cat([prefix_mask, suffix["attention_mask"]], dim=1).to(device)   # [N, P + S]
        text = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)                   # [N, P + S]
        self.positions = torch.cat([text[None], positions.to(device)], dim=0)              # [4, N, P + S]
        with torch.no_grad():
            self.images = model.model.get_image_features(suffix["pixel_values"].to(device, model.dtype),
                                                         suffix["image_grid_thw"].to(device), return_dict=True)

    @torch.no_grad()
    def generate_ids(self, **generate_kwargs):
        """model.generate on a fresh gathered copy of the prefix cache: what it returns (ids [N, P + S + T], or
        its output dict with return_dict_in_generate); the new tokens start at column self.ids.shape[1]."""
        cache = prefix_cache.gather_cache(self.prefix, self.rows, self.model.config)
        return self.model.generate(input_ids=self.ids, attention_mask=self.mask, position_ids=self.positions,
                                   **cache_kwargs(self.model, cache), mm_encoder_outputs={"image": self.images},
                                   **generate_kwargs)

    def generate(self, decoding, tokenizer) -> list[str]:
        ids = self.generate_ids(**decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(ids[:, self.ids.shape[1]:], skip_special_tokens=True)


def answers(vlm, image_size: dict, batch_size: int, prefix_texts: Sequence[str], sources: Sequence,
            suffix_text: str | Sequence[str], candidates: Sequence[Sequence], decodings: Sequence) -> list[list[str]]:
    """[K][N] answer texts (K = len(decodings), N = all candidates, group-major). Group g's prompt is
    prefix_texts[g] (its image slots take sources[g]: one image or a list of them) + suffix_text, or suffix_text[g]
    when it is a sequence (its one image slot takes the candidate). A decoding has `seed` (None: no reseeding) and
    `generate_kwargs()`."""
    suffixes = [suffix_text] * len(candidates) if isinstance(suffix_text, str) else list(suffix_text)   # [groups]
    model, processor = vlm.model, vlm.processor
    devices = [model.device] if model.device.type == "cuda" else []
    texts = [[] for _ in decodings]
    with torch.random.fork_rng(devices=devices):
        states = []
        for decoding in decodings:
            if decoding.seed is not None:
                torch.manual_seed(decoding.seed)
            states.append(_rng_state(devices))
        for start in range(0, len(candidates), batch_size):
            groups = slice(start, start + batch_size)
            prefix_inputs = processor(text=list(prefix_texts[groups]),
                                      images=[image for s in sources[groups] for image in rgb_sources(s)], padding=True,
                                      size=image_size, return_tensors="pt")                # [B, P], left-padded
            prefix = prefix_cache.prefill(model, prefix_inputs)
            rows = [g for g, group in enumerate(candidates[groups]) for _ in group]         # prefix row per candidate
            edited = [as_rgb_image(image) for group in candidates[groups] for image in group]
            for first in range(0, len(edited), batch_size):
                part = slice(first, first + batch_size)
                suffix = processor(text=[suffixes[start + g] for g in rows[part]], images=edited[part], padding=True,
                                   size=image_size, return_tensors="pt")                   # [n, S], left-padded
                continuation = Continuation(model, prefix, prefix_inputs, torch.tensor(rows[part]), suffix)
                for p, decoding in enumerate(decodings):
                    _set_rng_state(states[p], devices)
                    texts[p] += continuation.generate(decoding, vlm.tokenizer)
                    states[p] = _rng_state(devices)
    return texts
