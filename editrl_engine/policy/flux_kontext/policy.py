"""FluxKontextPolicy: FLUX.1-Kontext behind the EditPolicy interface, matching diffusers' FluxKontextPipeline.

encode: source image -> VAE latents packed 2x2 (ids (1, row, col)), instruction -> T5 token embeddings + CLIP
pooled embedding, once per pair. velocity: the target tokens and the source tokens go through the transformer as
one sequence [x_t | source]; the output is sliced back to the target tokens. Timestep = t (the pipeline passes
scheduler timestep / 1000 = sigma); guidance is the distilled guidance embedding (2.5), no true CFG.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...vlm.images import as_rgb_image
from .. import attention, lora
from ..base import Condition, EditPolicy, single_sources
from .model import FluxKontextComponents, pack, position_ids, unpack


class FluxKontextPolicy(lora.LoraMixin, EditPolicy):
    family = "flux-kontext"

    def __init__(self, components: FluxKontextComponents, *, device: torch.device, dtype: torch.dtype,
                 attention_backend: str = "auto", guidance: float = 2.5, autocast: bool = False, origin: str = ""):
        from diffusers.image_processor import VaeImageProcessor
        self.components = components.to(device, dtype)
        for module in components.modules().values():
            module.requires_grad_(False).eval()         # only LoRA adapters train
        self.transformer = components.transformer
        self.device, self.dtype = device, dtype
        self.guidance, self.autocast, self.origin = guidance, autocast, origin
        self.vae_scale_factor = components.vae_scale_factor
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor * 2)
        self.set_attention(attention_backend)

    @property
    def lora_pipeline_class(self) -> type:
        from .model import lora_loader  # FluxKontextPipeline's own save_lora_weights, without the pipeline module
        return lora_loader()

    # ---- run options -------------------------------------------------------------------------------------------
    def set_attention(self, requested: str = "auto", image_size: tuple[int, int] | None = None
                      ) -> attention.AttentionChoice:
        """Probe the attention backends at this model's sequence (text + target + source tokens at
        `image_size`, default the VAE's native resolution) and route the transformer through the chosen one."""
        config = self.transformer.config
        native = self.components.vae.config.sample_size                     # an int or (H, W)
        image_size = image_size or ((native, native) if isinstance(native, int) else tuple(native))
        image_tokens = (image_size[0] // (2 * self.vae_scale_factor)) * (image_size[1] // (2 * self.vae_scale_factor))
        self.attention_choice = attention.select_backend(
            requested, device=self.device, dtype=self.compute_dtype, batch=1,
            seq_len=self.components.max_sequence_length + 2 * image_tokens,
            heads=config.num_attention_heads, head_dim=config.attention_head_dim)
        self.attention_backend = self.attention_choice.backend
        attention.apply_backend(self.transformer, self.attention_backend)
        return self.attention_choice

    # ---- model --------------------------------------------------------------------------------------------------
    def _preprocess(self, sources: Sequence, size: tuple[int, int] | None) -> torch.Tensor:
        """Sources -> [N, 3, H, W] in [-1, 1] at `size` (default: the first source's size, floored to a multiple of
        16 as the pipeline does), resized the pipeline's way."""
        images = [as_rgb_image(s) for s in sources]
        multiple = self.vae_scale_factor * 2
        if size is None:
            height, width = self.image_processor.get_default_height_width(images[0])
        else:
            height, width = size
        height, width = height // multiple * multiple, width // multiple * multiple
        if height == 0 or width == 0:
            raise ValueError(f"images must be at least {multiple} pixels on each side")
        return self.image_processor.preprocess(images, height, width)           # resizes each image, then [-1, 1]

    def _encode_text(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (T5 embeddings [N, T, D], CLIP pooled [N, P]), tokenised as the pipeline does (padded, truncated)."""
        parts = self.components
        clip_ids = parts.tokenizer(instructions, padding="max_length", max_length=parts.tokenizer.model_max_length,
                                   truncation=True, return_tensors="pt").input_ids
        pooled = parts.text_encoder(clip_ids.to(self.device), output_hidden_states=False).pooler_output
        t5_ids = parts.tokenizer_2(instructions, padding="max_length", max_length=parts.max_sequence_length,
                                   truncation=True, return_tensors="pt").input_ids
        embeds = parts.text_encoder_2(t5_ids.to(self.device), output_hidden_states=False)[0]
        return embeds.to(self.dtype), pooled.to(self.dtype)

    @torch.no_grad()
    def encode(self, sources: Sequence, instructions: Sequence[str], size: tuple[int, int] | None = None
               ) -> Condition:
        """One Condition row per (source, instruction) pair. Every source is resized to `size` (H, W) (default:
        the first source's size floored to a multiple of 16); the edited image has the same size."""
        if len(sources) != len(instructions) or not sources:
            raise ValueError(f"need as many sources as instructions (>= 1), got {len(sources)} and "
                             f"{len(instructions)}")
        sources = single_sources(self.family, sources)
        pixels = self._preprocess(sources, size).to(self.device, self.dtype)          # [N, 3, H, W]
        vae = self.components.vae
        latents = vae.encode(pixels).latent_dist.mode()                               # [N, c, h, w]
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        embeds, pooled = self._encode_text(list(instructions))
        _, channels, height, width = latents.shape
        target_ids = position_ids(height, width, image_index=0, device=self.device)
        source_ids = position_ids(height, width, image_index=1, device=self.device)
        return Condition(
            tensors={"prompt_embeds": embeds,                                       # [N, T, D]
                     "pooled_prompt_embeds": pooled,                                # [N, P]
                     "source_latents": pack(latents),                               # [N, L, 4c]
                     "text_ids": torch.zeros(embeds.shape[1], 3, device=self.device),   # [T, 3]
                     "img_ids": torch.cat([target_ids, source_ids])},               # [2L, 3]: target, source
            latent_shape=(target_ids.shape[0], 4 * channels),
            image_size=tuple(pixels.shape[-2:]),
            shared=frozenset({"text_ids", "img_ids"}),
        )

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
                 ) -> torch.Tensor:
        """v [B, L, C] (float32) at x_t [B, L, C], t [B] (or a scalar) in [0, 1], with cond's B rows."""
        batch, length, channels = x_t.shape
        if (length, channels) != tuple(cond.latent_shape) or cond.batch_size != batch:
            raise ValueError(f"x_t {tuple(x_t.shape)} does not match the condition: {cond.batch_size} rows of "
                             f"{tuple(cond.latent_shape)} latents")
        c = cond.tensors
        t = torch.as_tensor(t, device=self.device).float().expand(batch)
        # the pipeline feeds (scheduler timestep = 1000·sigma, in the latents' dtype) / 1000
        timestep = (t * 1000).to(self.dtype) / 1000
        guidance = torch.full((batch,), self.guidance if guidance is None else guidance, device=self.device,
                              dtype=torch.float32)
        hidden = torch.cat([x_t.to(self.dtype), c["source_latents"].to(self.dtype)], dim=1)   # [B, 2L, C]
        with self.autocast_context():
            out = self.transformer(hidden_states=hidden, timestep=timestep, guidance=guidance,
                                   pooled_projections=c["pooled_prompt_embeds"],
                                   encoder_hidden_states=c["prompt_embeds"], txt_ids=c["text_ids"],
                                   img_ids=c["img_ids"], return_dict=False)[0]                    # [B, 2L, C]
        return out[:, :length].float()

    @torch.no_grad()
    def decode(self, x0: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Packed clean latents [B, L, C] -> uint8 [B, 3, H, W], as the pipeline's decode and postprocess."""
        vae = self.components.vae
        latents = unpack(x0.to(self.dtype), cond.image_size, self.vae_scale_factor)      # [B, c, h, w]
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]                               # [B, 3, H, W] in [-1, 1]
        return ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)

    def sigmas(self, num_steps: int, cond: Condition) -> torch.Tensor:
        """The pipeline's schedule: linspace(1, 1/n, n) shifted by mu = calculate_shift(target tokens), plus 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        from .model import calculate_shift
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.components.scheduler.config)
        config = scheduler.config
        mu = calculate_shift(cond.latent_shape[0], config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu, device="cpu")
        return scheduler.sigmas.to(torch.float32)                                        # [num_steps + 1]

    def metadata(self) -> dict[str, Any]:
        return super().metadata() | {
            "origin": self.origin,
            "attention_probe": self.attention_choice.as_dict(),
            "guidance": self.guidance,
            "lora_adapters": lora.adapter_names(self.transformer),
        }
