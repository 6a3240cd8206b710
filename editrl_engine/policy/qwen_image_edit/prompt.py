"""Text conditioning of Qwen-Image-Edit: the instruction and the source image through Qwen2.5-VL.

The model was trained on the last hidden states of Qwen2.5-VL for a fixed chat prompt (a system part, then the
source image's vision tokens and the instruction), with the system part (its first DROP_INDEX tokens) dropped.
The vision tokens stay: they carry the source image's semantics to the transformer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
DROP_INDEX = 64                     # tokens of the system part ("<|im_start|>system ... user\n")
NEGATIVE_PROMPT = " "               # the true-CFG negative prompt


@torch.no_grad()
def encode_prompts(text_encoder: torch.nn.Module, processor, images: Sequence, texts: Sequence[str]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [N, T, D] (zero-padded) and mask [N, T] (int64, 1 = token) of N (image, text) prompts.

    images: PIL images already at the edit size, one per text."""
    return embed_prompts(text_encoder, processor, [PROMPT_TEMPLATE.format(t) for t in texts], list(images))


@torch.no_grad()
def embed_prompts(text_encoder: torch.nn.Module, processor, prompts: Sequence[str], images: list
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's last hidden states of chat prompts (their image slots filled by `images`, in order),
    each trimmed of its first DROP_INDEX tokens and its padding: embeddings [N, T, D] (zero-padded), mask [N, T]."""
    inputs = processor(text=list(prompts), images=images, padding=True, return_tensors="pt").to(text_encoder.device)
    hidden = text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          pixel_values=inputs["pixel_values"].to(text_encoder.dtype),
                          image_grid_thw=inputs["image_grid_thw"], output_hidden_states=True,
                          logits_to_keep=1).hidden_states[-1]                         # [N, S, D]
    keep = inputs["attention_mask"].bool()
    rows = [h[k][DROP_INDEX:] for h, k in zip(hidden, keep)]                          # [T_i, D] each
    length = max(r.shape[0] for r in rows)
    embeds = hidden.new_zeros(len(rows), length, hidden.shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=hidden.device)
    for i, row in enumerate(rows):
        embeds[i, :row.shape[0]] = row
        mask[i, :row.shape[0]] = 1
    return embeds, mask
