"""Small Qwen2 tokenizers made in code, for tiny presets (nothing can be downloaded).

Each is a real `Qwen2Tokenizer` (Qwen2's byte-level BPE pipeline and pre-tokenizer regex) whose merges are learnt
from a fixed corpus: the caller's prompt templates and the words of typical editing instructions. Every word of a
template becomes one token, as in Qwen's own vocabulary; other words fall back to byte pieces, and every single
byte (each digit included) is a token. Learning is deterministic, so every process builds the same ids. The
special tokens are those the Qwen2.5-VL chat template and processor use.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
EDIT_WORDS = (
    "make change turn recolour recolor color colour paint move shift put place remove delete erase add insert "
    "replace swap keep background foreground object objects shape shapes circle square triangle rectangle star "
    "red green blue yellow orange purple pink black white gray grey brown cyan magenta left right up down top "
    "bottom center centre middle corner larger smaller bigger big small to the a an of in on into with and from "
    "sky sea grass tree house car cat dog person style photo painting sketch cartoon night day winter summer"
)


@functools.lru_cache(maxsize=8)
def _vocab_and_merges(templates: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges learnt from the templates and EDIT_WORDS (deterministic)."""
    qwen2 = Qwen2Tokenizer().backend_tokenizer
    bpe = Tokenizer(models.BPE())
    bpe.normalizer, bpe.pre_tokenizer = qwen2.normalizer, qwen2.pre_tokenizer
    texts = []
    for template in templates:
        template = template.replace("{}", "")
        for token in SPECIAL_TOKENS:
            template = template.replace(token, "\n")
        texts.append(template)
    words = EDIT_WORDS.split()
    corpus = texts + [f"{space}{w}" for w in words + [w.capitalize() for w in words] for space in ("", " ")]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=4096, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    merges = json.loads(bpe.to_str())["model"]["merges"]                  # [[left, right], ...]
    return bpe.get_vocab(), [tuple(pair) for pair in merges]


def build_tokenizer(templates: Sequence[str] = ()) -> Qwen2Tokenizer:
    """A tiny Qwen2 tokenizer: Qwen2's pipeline, a vocabulary learnt from `templates` (prompt texts whose "{}"
    slots and special tokens are left out) and EDIT_WORDS, Qwen2.5-VL's special tokens."""
    vocab, merges = _vocab_and_merges(tuple(templates))
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer
