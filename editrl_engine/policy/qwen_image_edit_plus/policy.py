"""The Qwen-Image-Edit-Plus (2509 / 2511) editing policy: Qwen-Image-Edit's velocity (true CFG with norm rescale),
decode and schedule, with QwenImageEditPlusPipeline's conditioning on one or several reference images.

encode() does what the pipeline does before its loop, per sample: each reference is resized to about
`condition_area` pixels for the Qwen2.5-VL prompt ("Picture k:" labels, policy/qwen_image_edit_plus/prompt.py)
and to about `reference_area` pixels for its VAE latents, each at its own aspect ratio (sides multiples of 32,
Lanczos); the edit is about `target_area` pixels at the LAST reference's aspect ratio. The references' normalised,
packed latents follow one another on the sequence axis after the target's, and img_shapes lists
[(1, h, w) target, (1, h_k, w_k) reference k, ...] in packed tokens. The transformer call, the timestep rounding,
the CFG combination and the time shift (from the target's token count only) are Qwen-Image-Edit's
(QwenImageEditPolicy), which the Plus pipeline shares; with a 2511 transformer (config zero_cond_t) the
transformer itself modulates the reference tokens at timestep 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ...vlm.images import as_rgb_image
from .. import attention
from ..base import Condition
from ..qwen_image_edit import latents as lat
from ..qwen_image_edit.policy import PROBE_TEXT_TOKENS, QwenImageEditPolicy, _trim
from .components import Components
from .config import CONDITION_AREA
from .prompt import NEGATIVE_PROMPT, encode_prompts

PROBE_REFERENCES = 3                    # reference images assumed when probing attention backends (1-3 work best)
VISION_PATCH = 28                       # pixels per Qwen2.5-VL vision token (14-pixel patches merged 2x2)


def references_of(source) -> list[Image.Image]:
    """One sample's reference images, in order: a single image, or a list / tuple of them (PIL images, uint8
    tensors [3, H, W] or uint8 arrays [H, W, 3])."""
    images = list(source) if isinstance(source, (list, tuple)) else [source]
    if not images:
        raise ValueError("a sample needs at least one reference image, got an empty list")
    return [as_rgb_image(image) for image in images]


class QwenImageEditPlusPolicy(QwenImageEditPolicy):
    family = "qwen-image-edit-plus"
    multi_source = True

    def __init__(self, components: Components, *, device: torch.device, dtype: torch.dtype,
                 attention_backend: str = "auto", autocast: bool = False, target_area: int = 1024 * 1024,
                 reference_area: int | None = None, condition_area: int = CONDITION_AREA, origin: str = ""):
        self.reference_area = reference_area    # pixels of each reference's VAE image (None: target_area)
        self.condition_area = condition_area    # pixels of each reference's Qwen2.5-VL image
        super().__init__(components, device=device, dtype=dtype, attention_backend=attention_backend,
                         autocast=autocast, target_area=target_area, origin=origin)

    @property
    def lora_pipeline_class(self) -> type:
        from diffusers import QwenImageEditPlusPipeline
        return QwenImageEditPlusPipeline

    # ---- run options -------------------------------------------------------------------------------------------
    def set_attention(self, requested: str = "auto") -> attention.AttentionChoice:
        """Probe the attention backends on this model's joint sequence with PROBE_REFERENCES references: text
        (with their vision tokens) + target + reference tokens, with a key mask, and route the transformer
        through the chosen one."""
        config = self.transformer.config
        patch = 2 * self.vae_scale_factor
        image_tokens = self.target_area // patch ** 2 + PROBE_REFERENCES * self._reference_area // patch ** 2
        text_tokens = PROBE_TEXT_TOKENS + PROBE_REFERENCES * self.condition_area // VISION_PATCH ** 2
        self.attention_choice = attention.select_backend(
            requested, device=self.device, dtype=self.compute_dtype, batch=1, mask=True,
            seq_len=image_tokens + text_tokens, heads=config.num_attention_heads, head_dim=config.attention_head_dim)
        self.attention_backend = self.attention_choice.backend
        attention.apply_backend(self.transformer, self.attention_backend)
        return self.attention_choice

    @property
    def _reference_area(self) -> int:
        return self.reference_area or self.target_area

    # ---- encode ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, sources: Sequence, instructions: Sequence[str]) -> Condition:
        """One row per (references, instruction) sample: prompt and negative-prompt embeddings (each with every
        reference in the prompt) and the references' latents. sources[i] is one image or a list of images; every
        sample of one call must give the same layout (edit size, number of references and their VAE sizes)."""
        if len(sources) != len(instructions) or not sources:
            raise ValueError(f"need one instruction per source, got {len(sources)} sources and "
                             f"{len(instructions)} instructions")
        references = [references_of(source) for source in sources]
        layouts = {(lat.edit_size(*refs[-1].size, self.target_area),
                    tuple(lat.edit_size(*im.size, self._reference_area) for im in refs)) for refs in references}
        if len(layouts) > 1:
            raise ValueError(f"samples give different edit sizes or reference layouts {sorted(layouts)}; encode "
                             f"them in separate calls (one Condition has one latent shape)")
        ((width, height), vae_sizes), = layouts
        conditions = [[im.resize(lat.edit_size(*im.size, self.condition_area), Image.LANCZOS) for im in refs]
                      for refs in references]
        n = len(references)
        embeds, mask = encode_prompts(self.components.text_encoder, self.components.processor, conditions * 2,
                                      [*instructions, *[NEGATIVE_PROMPT] * n])          # [2N, T, D], [2N, T]
        prompt, prompt_mask = _trim(embeds[:n], mask[:n])
        negative, negative_mask = _trim(embeds[n:], mask[n:])
        source = torch.cat([self._source_latents([refs[k].resize(size, Image.LANCZOS) for refs in references])
                            for k, size in enumerate(vae_sizes)], dim=1)                 # [N, sum Lk, C]
        patch = 2 * self.vae_scale_factor                                                # pixels per packed token
        rows, cols = height // patch, width // patch                                     # packed token grid
        img_shapes = [(1, rows, cols), *[(1, h // patch, w // patch) for w, h in vae_sizes]]
        return Condition(
            tensors={"prompt_embeds": prompt, "prompt_mask": prompt_mask, "negative_embeds": negative,
                     "negative_mask": negative_mask, "source_latents": source},
            latent_shape=(rows * cols, source.shape[-1]), image_size=(height, width),
            extras={"img_shapes": img_shapes, "num_references": len(vae_sizes),
                    "prompt_padded": not bool(prompt_mask.all()), "negative_padded": not bool(negative_mask.all())})

    def metadata(self) -> dict[str, Any]:
        return super().metadata() | {
            "reference_area": self._reference_area,
            "condition_area": self.condition_area,
            "zero_cond_t": bool(getattr(self.transformer.config, "zero_cond_t", False)),
        }
