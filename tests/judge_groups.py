"""What the judges' group-scoring tests share: three groups of candidates (ragged sizes, odd image shapes) and
the replay of shared-prefix generations (record every model.generate call that continues a prefix KV cache, run
it again greedily for a few steps, compare its step logits with whole-prompt generation)."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

INSTRUCTIONS = ["make it red", "turn the big blue circle into a small yellow square in the top left corner",
                "add a cat"]
SOURCE_SIZES = [(64, 64), (80, 48), (40, 72)]
EDIT_SIZES = [(64, 64), (56, 84), (96, 40), (72, 72)]


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


SOURCES = [image(i, s) for i, s in enumerate(SOURCE_SIZES)]
GROUPS = [[image(100 * g + k, EDIT_SIZES[(g + k) % 4]) for k in range(n)] for g, n in enumerate((3, 1, 4))]

CACHE_KEYWORDS = ("cache", "past_key_values")          # transformers >= 5.24, and before
DECODING_KEYS = ("do_sample", "max_new_tokens", "pad_token_id", "eos_token_id", "temperature", "top_p", "top_k")


@contextlib.contextmanager
def cached_generate_calls(model, monkeypatch):
    """Yields a list that fills with the inputs of each generate call made on a cache (the cache copied, the
    decoding options dropped); the spy is removed on exit."""
    seen, generate = [], model.generate

    def spy(**kwargs):
        name = next((n for n in CACHE_KEYWORDS if n in kwargs), None)       # the keyword depends on the version
        if name is not None:
            kept = {k: v for k, v in kwargs.items() if k not in DECODING_KEYS}
            seen.append(dict(kept, **{name: copy_cache(kwargs[name])}))
        return generate(**kwargs)
    monkeypatch.setattr(model, "generate", spy)
    try:
        yield seen
    finally:
        monkeypatch.undo()


def copy_cache(cache) -> DynamicCache:
    return DynamicCache(ddp_cache_data=[(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])


def step_logits(model, **kwargs) -> torch.Tensor:
    """Greedy logits of the first 4 generated tokens, [B, steps, V]."""
    out = model.generate(**kwargs, do_sample=False, max_new_tokens=4, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=0)
    return torch.stack(out.logits, dim=1)
