"""The tiny Qwen-Image-Edit-Plus presets' tokenizer: the shared tiny Qwen2 tokenizer learnt on the Plus prompt
(its template and the "Picture k: " labels).

Every word of the template becomes one token, as in Qwen's own vocabulary, so the template's system part is
exactly the pipeline's drop index (64 tokens) long.
"""
from __future__ import annotations

from transformers import Qwen2Tokenizer

from editrl_engine.vlm.qwen2_5_vl.tokenizer import build_tokenizer as build_qwen2_tokenizer

from .prompt import PICTURE_TEMPLATE, PROMPT_TEMPLATE


def build_tokenizer() -> Qwen2Tokenizer:
    """Qwen2's pipeline, a vocabulary learnt from the Plus prompt, Qwen2.5-VL's special tokens."""
    return build_qwen2_tokenizer((PROMPT_TEMPLATE, PICTURE_TEMPLATE))
