"""Text conditioning of Qwen-Image-Edit-Plus (2509 / 2511): the instruction and every reference image through
Qwen2.5-VL.

As QwenImageEditPlusPipeline builds it: the chat template of Qwen-Image-Edit without its image slot, the user turn
being "Picture 1: <vision tokens>Picture 2: <vision tokens>..." (one label per reference, in order) then the
instruction; the last hidden states with the system part (its first DROP_INDEX tokens, the same 64 as
Qwen-Image-Edit's) dropped. The vision tokens stay: they carry the references' semantics to the transformer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..qwen_image_edit.prompt import DROP_INDEX, NEGATIVE_PROMPT, embed_prompts

VISION_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"
PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
PICTURE_TEMPLATE = "Picture {}: " + VISION_SLOT          # one per reference image, numbered from 1


def prompt_text(instruction: str, num_images: int) -> str:
    """The chat prompt of one instruction with `num_images` labelled reference slots."""
    return PROMPT_TEMPLATE.format("".join(PICTURE_TEMPLATE.format(k + 1) for k in range(num_images)) + instruction)


@torch.no_grad()
def encode_prompts(text_encoder: torch.nn.Module, processor, images: Sequence[Sequence], texts: Sequence[str]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [N, T, D] (zero-padded) and mask [N, T] (int64, 1 = token) of N prompts.

    images: for each text, its reference images (PIL, already at the condition size), in order."""
    if len(images) != len(texts):
        raise ValueError(f"need one list of images per text, got {len(images)} and {len(texts)}")
    prompts = [prompt_text(text, len(refs)) for refs, text in zip(images, texts)]
    return embed_prompts(text_encoder, processor, prompts, [image for refs in images for image in refs])


__all__ = ["DROP_INDEX", "NEGATIVE_PROMPT", "PICTURE_TEMPLATE", "PROMPT_TEMPLATE", "encode_prompts", "prompt_text"]
