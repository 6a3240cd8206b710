"""The Qwen-Image-Edit editing policy: encode (source, instruction) pairs once, velocities with true CFG, decode,
and the pipeline's shifted sampling schedule.

velocity() feeds the transformer exactly what QwenImageEditPipeline feeds it each step: the target latents
followed by the source latents on the sequence axis (the output sliced back to the target), timestep = t rounded
as the pipeline rounds it ((1000 t in the model dtype) / 1000), the prompt mask only when some prompt of the
batch is padded, img_shapes
[(1, h, w) target, (1, h, w) source] in packed tokens. True CFG is a second pass with the negative prompt " "
(encoded with the same source image), combined by ops.cfg_combine(v, v_neg, g, rescale="norm").
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ... import ops
from ...vlm.images import as_rgb_image
from .. import attention, lora
from ..base import Condition, EditPolicy, single_sources
from . import latents as lat
from .components import Components
from .prompt import NEGATIVE_PROMPT, encode_prompts

DEFAULT_GUIDANCE = 4.0                  # true-CFG scale of the published pipeline
PROBE_TEXT_TOKENS = 128                 # text tokens assumed when probing attention backends


def time_shift_mu(image_seq_len: int, config) -> float:
    """The scheduler's resolution-dependent shift: linear in the packed token count between its base and max."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return config.base_shift + slope * (image_seq_len - config.base_image_seq_len)


def _trim(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns no row uses: [N, T, D], [N, T] -> [N, T', D], [N, T']."""
    length = int(mask.sum(dim=1).max())
    return embeds[:, :length].contiguous(), mask[:, :length].contiguous()


class QwenImageEditPolicy(lora.LoraMixin, EditPolicy):
    family = "qwen-image-edit"

    def __init__(self, components: Components, *, device: torch.device, dtype: torch.dtype,
                 attention_backend: str = "auto", autocast: bool = False, target_area: int = 1024 * 1024,
                 origin: str = ""):
        self.components = components.to(device, dtype)
        self.transformer, self.vae = components.transformer, components.vae
        self.vae_scale_factor = 2 ** len(self.vae.temperal_downsample)     # 8: pixels per latent
        self.device, self.dtype = torch.device(device), dtype
        self.autocast, self.origin = autocast, origin
        self.target_area = target_area          # pixels of the edited image; change it before encode() if needed
        self.set_attention(attention_backend)

    @property
    def lora_pipeline_class(self) -> type:
        from diffusers import QwenImageEditPipeline
        return QwenImageEditPipeline

    # ---- run options -------------------------------------------------------------------------------------------
    def set_attention(self, requested: str = "auto") -> attention.AttentionChoice:
        """Probe the attention backends on this model's joint sequence at target_area (text + target + source
        tokens, with a key mask: prompts of different lengths are padded) and route the transformer through the
        chosen one."""
        config = self.transformer.config
        image_tokens = self.target_area // (2 * self.vae_scale_factor) ** 2
        self.attention_choice = attention.select_backend(
            requested, device=self.device, dtype=self.compute_dtype, batch=1, mask=True,
            seq_len=2 * image_tokens + PROBE_TEXT_TOKENS, heads=config.num_attention_heads,
            head_dim=config.attention_head_dim)
        self.attention_backend = self.attention_choice.backend
        attention.apply_backend(self.transformer, self.attention_backend)
        return self.attention_choice

    # ---- encode ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, sources: Sequence, instructions: Sequence[str]) -> Condition:
        """One row per (source, instruction) pair: prompt and negative-prompt embeddings (each with the source in
        the prompt) and the source latents. Sources are resized to the edit size (target_area pixels at their
        aspect ratio, sides multiples of 32), which must be the same for every source of one call."""
        if len(sources) != len(instructions) or not sources:
            raise ValueError(f"need one instruction per source, got {len(sources)} sources and "
                             f"{len(instructions)} instructions")
        images = [as_rgb_image(s) for s in single_sources(self.family, sources)]
        sizes = {lat.edit_size(*im.size, self.target_area) for im in images}
        if len(sizes) > 1:
            raise ValueError(f"sources of different aspect ratios give different edit sizes {sorted(sizes)}; "
                             f"encode them in separate calls (one Condition has one latent shape)")
        (width, height), = sizes
        images = [im.resize((width, height), Image.LANCZOS) for im in images]
        n = len(images)
        embeds, mask = encode_prompts(self.components.text_encoder, self.components.processor, images * 2,
                                      [*instructions, *[NEGATIVE_PROMPT] * n])          # [2N, T, D], [2N, T]
        prompt, prompt_mask = _trim(embeds[:n], mask[:n])
        negative, negative_mask = _trim(embeds[n:], mask[n:])
        source = self._source_latents(images)                                            # [N, Ls, C]
        patch = 2 * self.vae_scale_factor                                                # pixels per packed token
        rows, cols = height // patch, width // patch                                     # packed token grid
        return Condition(
            tensors={"prompt_embeds": prompt, "prompt_mask": prompt_mask, "negative_embeds": negative,
                     "negative_mask": negative_mask, "source_latents": source},
            latent_shape=(rows * cols, source.shape[-1]), image_size=(height, width),
            extras={"img_shapes": [(1, rows, cols), (1, rows, cols)],
                    "prompt_padded": not bool(prompt_mask.all()), "negative_padded": not bool(negative_mask.all())})

    def _source_latents(self, images: list[Image.Image]) -> torch.Tensor:
        """Normalised, packed VAE latents (distribution mode) of the resized sources: [N, Ls, 4 z_dim]."""
        z = self.vae.encode(lat.pixels(images).to(self.device, self.vae.dtype)).latent_dist.mode()  # [N, z, 1, h, w]
        mean, std = lat.latent_stats(self.vae, z)
        return lat.pack((z - mean) / std)

    # ---- velocity ----------------------------------------------------------------------------------------------
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = DEFAULT_GUIDANCE
                 ) -> torch.Tensor:
        """v [B, L, C] (float32) at x_t [B, L, C], t [B] (or a scalar) in [0, 1]: true CFG with scale `guidance`
        when it is > 1, one conditional pass when it is None or <= 1."""
        batch, length, channels = x_t.shape
        if (length, channels) != tuple(cond.latent_shape) or cond.batch_size != batch:
            raise ValueError(f"x_t {tuple(x_t.shape)} does not match the condition: {cond.batch_size} rows of "
                             f"{tuple(cond.latent_shape)} latents")
        t = torch.as_tensor(t, device=self.device).float().expand(batch)                  # [B]
        timestep = (t * 1000).to(self.dtype) / 1000        # the pipeline: (scheduler timestep in latents' dtype) / 1000
        hidden = torch.cat([x_t.to(self.dtype), cond.tensors["source_latents"].to(self.dtype)], dim=1)  # [B, 2L, C]
        v = self._transformer(hidden, timestep, cond, "prompt")[:, :length].float()         # [B, L, C]
        if guidance is None or guidance <= 1:
            return v
        v_negative = self._transformer(hidden, timestep, cond, "negative")[:, :length].float()
        return ops.cfg_combine(v, v_negative, float(guidance), rescale="norm")

    def _transformer(self, hidden: torch.Tensor, timestep: torch.Tensor, cond: Condition, text: str) -> torch.Tensor:
        """One transformer pass on [target ; source] tokens with the `text` ("prompt" | "negative") embeddings."""
        mask = cond.tensors[f"{text}_mask"] if cond.extras[f"{text}_padded"] else None    # None: no padding
        with self.autocast_context():
            return self.transformer(hidden_states=hidden, timestep=timestep,
                                    encoder_hidden_states=cond.tensors[f"{text}_embeds"],
                                    encoder_hidden_states_mask=mask,
                                    img_shapes=[cond.extras["img_shapes"]] * hidden.shape[0], return_dict=False)[0]

    # ---- decode and schedule -----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, x0: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Packed clean latents [B, L, C] -> uint8 images [B, 3, H, W]."""
        _, rows, cols = cond.extras["img_shapes"][0]
        z = lat.unpack(x0.to(self.device, self.vae.dtype), 2 * rows, 2 * cols)            # [B, z, 1, h, w]
        mean, std = lat.latent_stats(self.vae, z)
        return lat.to_uint8(self.vae.decode(z * std + mean, return_dict=False)[0][:, :, 0])

    def sigmas(self, num_steps: int, cond: Condition) -> torch.Tensor:
        """float32 [num_steps + 1]: the pipeline's linspace(1, 1/n, n), time-shifted by the scheduler for this
        latent length and stretched to its terminal sigma, then 0. One step is [1, 0] (the scheduler's terminal
        stretch divides by zero there)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if num_steps == 1:
            return torch.tensor([1.0, 0.0])
        scheduler = type(self.components.scheduler).from_config(self.components.scheduler.config)
        shift = {"mu": time_shift_mu(cond.latent_shape[0], scheduler.config)} \
            if scheduler.config.use_dynamic_shifting else {}
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps), device="cpu", **shift)
        return scheduler.sigmas.to(torch.float32)

    def pipeline(self):
        """diffusers' QwenImageEditPipeline over this policy's modules (for reference runs and serving)."""
        return self.components.pipeline()

    def metadata(self) -> dict[str, Any]:
        return super().metadata() | {
            "origin": self.origin,
            "attention_probe": self.attention_choice.as_dict(),
            "target_area": self.target_area,
            "lora_adapters": lora.adapter_names(self.transformer),
        }
