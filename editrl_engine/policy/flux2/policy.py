"""The FLUX.2 editing policy (dev and klein) behind the EditPolicy interface, as Flux2Pipeline and
Flux2KleinPipeline compute it.

encode(), per sample, what the pipelines do before their loop: each reference image is checked, shrunk to at most
1024² pixels (Lanczos) and cropped to multiples of 16 (the pipeline's image processor); its VAE latents are
2x2-patchified and normalised with the VAE's batch-norm statistics; reference k's tokens get ids (10 + 10k, row,
col, 0) and the edit's (0, row, col, 0); the edit has the first reference's size. The prompt embedding is the
pipeline's own function (dev: Mistral3 with the pipeline's system message; klein: Qwen3's chat template without
thinking), the hidden states of three layers stacked. velocity(): [x_t | references] through the transformer,
timestep t, sliced to the edit's tokens; dev passes the distilled guidance (default 4.0), klein true CFG
uncond + g (cond - uncond) with the empty prompt when g > 1 and the model is not step-distilled. sigmas():
linspace(1, 1/n, n) shifted by compute_empirical_mu(edit tokens, n). decode(): unscatter, un-normalise,
unpatchify, the VAE's decoder.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import attention, lora
from ..base import Condition, EditPolicy
from ..qwen_image_edit_plus.policy import references_of
from .components import Components

MAX_REFERENCE_AREA = 1024 * 1024               # the pipelines shrink larger reference images to this area


class Flux2Policy(lora.LoraMixin, EditPolicy):
    family = "flux2"
    multi_source = True

    def __init__(self, components: Components, *, device: torch.device, dtype: torch.dtype,
                 attention_backend: str = "auto", guidance: float = 4.0, autocast: bool = False, origin: str = ""):
        from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor
        self.components = components.to(device, dtype)
        for module in components.modules().values():
            module.requires_grad_(False).eval()         # only LoRA adapters train
        self.transformer = components.transformer
        self.device, self.dtype = device, dtype
        self.guidance, self.autocast, self.origin = guidance, autocast, origin
        self.variant = components.variant
        self.vae_scale_factor = components.vae_scale_factor
        self.image_processor = Flux2ImageProcessor(vae_scale_factor=self.vae_scale_factor * 2)
        self.pipeline_class = components.pipeline_class
        self.set_attention(attention_backend)

    @property
    def lora_pipeline_class(self) -> type:
        return self.pipeline_class

    @property
    def uses_cfg(self) -> bool:
        """klein with guidance > 1 and not step-distilled: two transformer passes per velocity."""
        return self.variant == "klein" and self.guidance > 1 and not self.components.is_distilled

    def set_attention(self, requested: str = "auto", image_size: tuple[int, int] | None = None,
                      references: int = 1) -> attention.AttentionChoice:
        """Probe the attention backends at this model's sequence (text + edit + reference tokens at `image_size`,
        default the VAE's native resolution) and route the transformer through the chosen one."""
        config = self.transformer.config
        native = self.components.vae.config.sample_size
        image_size = image_size or ((native, native) if isinstance(native, int) else tuple(native))
        tokens = (image_size[0] // (2 * self.vae_scale_factor)) * (image_size[1] // (2 * self.vae_scale_factor))
        self.attention_choice = attention.select_backend(
            requested, device=self.device, dtype=self.compute_dtype, batch=1,
            seq_len=self.components.max_sequence_length + (1 + references) * tokens,
            heads=config.num_attention_heads, head_dim=config.attention_head_dim)
        self.attention_backend = self.attention_choice.backend
        attention.apply_backend(self.transformer, self.attention_backend)
        return self.attention_choice

    # ---- encode ---------------------------------------------------------------------------------------------------
    def _reference_pixels(self, source) -> list[torch.Tensor]:
        """One sample's references as the pipeline prepares them: [1, 3, h, w] in [-1, 1] each."""
        processor, multiple = self.image_processor, self.vae_scale_factor * 2
        pixels = []
        for image in references_of(source):
            processor.check_image_input(image)
            if image.width * image.height > MAX_REFERENCE_AREA:
                image = processor._resize_to_target_area(image, MAX_REFERENCE_AREA)
            width, height = image.width // multiple * multiple, image.height // multiple * multiple
            pixels.append(processor.preprocess(image, height=height, width=width, resize_mode="crop"))
        return pixels

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """[1, 3, h, w] -> normalised, patchified VAE latents [1, 4c, h/2f, w/2f] (the pipeline's _encode_vae_image)."""
        vae = self.components.vae
        latents = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mode()
        latents = self.pipeline_class._patchify_latents(latents)
        mean, std = self._batch_norm(latents)
        return (latents - mean) / std

    def _batch_norm(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.components.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def _prompt_embeds(self, texts: list[str]) -> torch.Tensor:
        """[N, T, 3 x hidden]: the pipeline's own prompt embedding."""
        parts = self.components
        if self.variant == "dev":
            return self.pipeline_class._get_mistral_3_small_prompt_embeds(
                parts.text_encoder, parts.tokenizer, texts, dtype=self.dtype, device=self.device,
                max_sequence_length=parts.max_sequence_length, hidden_states_layers=parts.text_layers)
        return self.pipeline_class._get_qwen3_prompt_embeds(
            parts.text_encoder, parts.tokenizer, texts, dtype=self.dtype, device=self.device,
            max_sequence_length=parts.max_sequence_length, hidden_states_layers=parts.text_layers)

    @torch.no_grad()
    def encode(self, sources: Sequence, instructions: Sequence[str]) -> Condition:
        """One Condition row per sample; sources[i] is one reference image or a list of them (PIL images, uint8
        tensors [3, H, W] or uint8 arrays [H, W, 3]). Samples of one call must give the same token layout (the
        same reference count and sizes)."""
        if len(sources) != len(instructions) or not sources:
            raise ValueError(f"need as many sources as instructions (>= 1), got {len(sources)} and "
                             f"{len(instructions)}")
        cls = self.pipeline_class
        rows = []
        for source in sources:
            pixels = self._reference_pixels(source)
            latents = [self._latents(p) for p in pixels]                            # [1, 4c, h_k, w_k] each
            rows.append((pixels, latents))
        layouts = {tuple(tuple(lat.shape[-2:]) for lat in latents) for _, latents in rows}
        if len(layouts) != 1:
            raise ValueError(f"the samples of one encode() call have different reference counts or sizes "
                             f"{sorted(layouts)}; encode them in separate calls")
        pixels, latents = rows[0]
        height, width = pixels[0].shape[-2:]                                        # the edit: the first reference
        channels = latents[0].shape[1]
        edit_shape = torch.empty(1, channels, height // (2 * self.vae_scale_factor),
                                 width // (2 * self.vae_scale_factor))
        edit_ids = cls._prepare_latent_ids(edit_shape)[0]                          # [L, 4]
        reference_ids = cls._prepare_image_ids([lat.cpu() for lat in latents])[0]  # [L_ref, 4]
        references = torch.stack([torch.cat([cls._pack_latents(lat)[0] for lat in lats]) for _, lats in rows])
        embeds = self._prompt_embeds(list(instructions))                            # [N, T, D]
        tensors = {"prompt_embeds": embeds,
                   "reference_latents": references.to(self.dtype),                 # [N, L_ref, 4c]
                   "text_ids": cls._prepare_text_ids(embeds[:1])[0].to(self.device),        # [T, 4]
                   "img_ids": torch.cat([edit_ids, reference_ids]).to(self.device)}         # [L + L_ref, 4]
        if self.uses_cfg:
            tensors["negative_prompt_embeds"] = self._prompt_embeds([""] * len(instructions))
        return Condition(tensors=tensors, latent_shape=(edit_ids.shape[0], channels),
                         image_size=(int(height), int(width)), shared=frozenset({"text_ids", "img_ids"}))

    # ---- velocity, decode, schedule -------------------------------------------------------------------------------
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
                 ) -> torch.Tensor:
        """v [B, L, C] (float32) at x_t [B, L, C], t [B] (or a scalar) in [0, 1], with cond's B rows."""
        batch, length, channels = x_t.shape
        if (length, channels) != tuple(cond.latent_shape) or cond.batch_size != batch:
            raise ValueError(f"x_t {tuple(x_t.shape)} does not match the condition: {cond.batch_size} rows of "
                             f"{tuple(cond.latent_shape)} latents")
        c, scale = cond.tensors, self.guidance if guidance is None else guidance
        t = torch.as_tensor(t, device=self.device).float().expand(batch)
        timestep = (t * 1000).to(self.dtype) / 1000         # the pipeline: (1000·sigma in the latents' dtype) / 1000
        hidden = torch.cat([x_t.to(self.dtype), c["reference_latents"].to(self.dtype)], dim=1)   # [B, L + L_ref, C]
        distilled = (torch.full((batch,), scale, device=self.device, dtype=torch.float32) if self.variant == "dev"
                     else None)

        def run(embeds: torch.Tensor) -> torch.Tensor:
            with self.autocast_context():
                out = self.transformer(hidden_states=hidden, timestep=timestep, guidance=distilled,
                                       encoder_hidden_states=embeds, txt_ids=c["text_ids"], img_ids=c["img_ids"],
                                       return_dict=False)[0]
            return out[:, :length].float()                                                   # [B, L, C]

        conditional = run(c["prompt_embeds"])
        if "negative_prompt_embeds" not in c or scale <= 1:
            return conditional
        unconditional = run(c["negative_prompt_embeds"])
        return unconditional + scale * (conditional - unconditional)

    @torch.no_grad()
    def decode(self, x0: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Packed clean latents [B, L, C] -> uint8 [B, 3, H, W], as the pipelines' decode and postprocess."""
        height, width = cond.image_size
        rows, cols = height // (2 * self.vae_scale_factor), width // (2 * self.vae_scale_factor)
        batch, length, channels = x0.shape
        latents = x0.to(self.dtype).view(batch, rows, cols, channels).permute(0, 3, 1, 2)   # [B, 4c, rows, cols]
        mean, std = self._batch_norm(latents)
        latents = self.pipeline_class._unpatchify_latents(latents * std + mean)            # [B, c, h, w]
        images = self.components.vae.decode(latents, return_dict=False)[0]                 # [B, 3, H, W] in [-1, 1]
        return ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)

    def sigmas(self, num_steps: int, cond: Condition) -> torch.Tensor:
        """The pipelines' schedule: linspace(1, 1/n, n) shifted by mu = compute_empirical_mu(edit tokens, n), + 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.components.scheduler.config)
        sigmas = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / num_steps, num_steps)
        mu = compute_empirical_mu(image_seq_len=cond.latent_shape[0], num_steps=num_steps)
        scheduler.set_timesteps(num_steps, device="cpu", sigmas=sigmas, mu=mu)
        return scheduler.sigmas.to(torch.float32)                                          # [num_steps + 1]

    def metadata(self) -> dict[str, Any]:
        return super().metadata() | {
            "origin": self.origin, "variant": self.variant, "guidance": self.guidance,
            "cfg": self.uses_cfg, "attention_probe": self.attention_choice.as_dict(),
            "lora_adapters": lora.adapter_names(self.transformer),
        }
