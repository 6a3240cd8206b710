"""Qwen-Image-Edit-Plus (2509 / 2511) model configs: the Qwen-Image-Edit ones (same transformer, VAE, text encoder,
processor and scheduler), plus the transformer's zero_cond_t switch (2511: the reference tokens are modulated at
timestep 0) and the Plus pipeline's two image sizes.

QwenImageEditPlusPipeline resizes each reference twice: to about 384² pixels (CONDITION_IMAGE_SIZE) for the
Qwen2.5-VL prompt, and to about 1024² pixels (VAE_IMAGE_SIZE) for its VAE latents, each at its own aspect ratio;
the edit is about 1024² pixels at the LAST reference's aspect ratio. Here those areas are `condition_area`,
`reference_area` (None: the same as `target_area`, as in the pipeline) and `target_area`.
"""
from __future__ import annotations

import dataclasses

import torch

from editrl_engine.vlm.qwen2_5_vl.config import TINY_MODEL, TINY_PROCESSOR

from ..qwen_image_edit import config as edit_config

CONDITION_AREA = 384 * 384              # the pipeline's CONDITION_IMAGE_SIZE


@dataclasses.dataclass(frozen=True)
class TransformerConfig(edit_config.TransformerConfig):
    zero_cond_t: bool = False                           # True for Qwen-Image-Edit-2511

    def build(self) -> torch.nn.Module:
        from diffusers import QwenImageTransformer2DModel
        return QwenImageTransformer2DModel(patch_size=2, guidance_embeds=False, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class QwenImageEditPlusConfig(edit_config.QwenImageEditConfig):
    transformer: TransformerConfig = TransformerConfig()
    reference_area: int | None = None       # pixels of each reference's VAE image (None: target_area)
    condition_area: int = CONDITION_AREA    # pixels of each reference's Qwen2.5-VL image

    def family_parts(self):
        """This family's Components and tokenizer (trained on the Plus template); build() is Qwen-Image-Edit's."""
        from .components import Components
        from .tokenizer import build_tokenizer
        return Components, build_tokenizer


TINY = QwenImageEditPlusConfig(
    transformer=TransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, joint_attention_dim=32,
                                  axes_dims_rope=(4, 6, 6)),
    vae=edit_config.TINY.vae,
    text_encoder=TINY_MODEL,
    processor=TINY_PROCESSOR,
    target_area=64 * 64,
    condition_area=64 * 64,
)
PRESETS: dict[str, QwenImageEditPlusConfig] = {
    "tiny": TINY,                                                                             # 2509-like
    "tiny-2511": dataclasses.replace(TINY, transformer=dataclasses.replace(TINY.transformer, zero_cond_t=True)),
    "qwen-image-edit-2509": QwenImageEditPlusConfig(),          # the released sizes, random weights (benchmarks)
}
