"""FLUX.1-Kontext's modules as one object, and the latent packing and position ids its transformer expects.

Packing follows diffusers' FluxKontextPipeline: a VAE latent [B, C, h, w] becomes [B, (h/2)·(w/2), 4C] tokens of
2x2 patches; each token's id is (k, row, col) with k = 0 for the edited image and k = 1 for the source image; text
tokens have id (0, 0, 0).

pack, unpack, position_ids and calculate_shift are the pipeline's static helpers (_pack_latents, _unpack_latents,
_prepare_latent_image_ids, calculate_shift) written out, step for step (tests check them against the pipeline's).
Importing the pipeline's module only for them would import its IP-adapter machinery, and with it
transformers' CLIPImageProcessor and SiglipImageProcessor, which log a torchvision fallback notice on every run;
nothing here uses an image encoder. For the same reason lora_loader() is the pipeline's LoRA mixin, not the pipeline.
"""
from __future__ import annotations

import dataclasses

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)·(w/2), 4C] (FluxKontextPipeline._pack_latents)."""
    batch, channels, height, width = latents.shape
    latents = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(packed: torch.Tensor, image_size: tuple[int, int], vae_scale_factor: int) -> torch.Tensor:
    """[B, L, 4C] tokens of an image of `image_size` (H, W) pixels -> [B, C, h, w] VAE latents
    (FluxKontextPipeline._unpack_latents)."""
    batch, _, channels = packed.shape
    height = 2 * (int(image_size[0]) // (vae_scale_factor * 2))            # latent sides, even
    width = 2 * (int(image_size[1]) // (vae_scale_factor * 2))
    latents = packed.view(batch, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(batch, channels // 4, height, width)


def position_ids(latent_height: int, latent_width: int, image_index: int, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ids [(h/2)·(w/2), 3] of the packed tokens of an h x w latent: (image_index, row, col)
    (FluxKontextPipeline._prepare_latent_image_ids, then the image index in column 0)."""
    rows, cols = latent_height // 2, latent_width // 2
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(rows)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(cols)[None, :]
    ids = ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)
    ids[:, 0] = image_index
    return ids


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """The scheduler's shift mu, linear in the packed token count (pipeline_flux_kontext.calculate_shift)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def lora_loader() -> type:
    """The class whose save_lora_weights / lora_state_dict FluxKontextPipeline inherits (FluxLoraLoaderMixin):
    what it writes, FluxKontextPipeline.load_lora_weights reads."""
    from diffusers.loaders import FluxLoraLoaderMixin
    return FluxLoraLoaderMixin


@dataclasses.dataclass
class FluxKontextComponents:
    """What FluxKontextPipeline is made of (its constructor's names), built from a config or loaded."""
    transformer: torch.nn.Module                 # FluxTransformer2DModel
    vae: torch.nn.Module                         # AutoencoderKL
    text_encoder: torch.nn.Module                # CLIPTextModel: pooled prompt embedding
    tokenizer: object
    text_encoder_2: torch.nn.Module              # T5EncoderModel: per-token prompt embeddings
    tokenizer_2: object
    scheduler: object                            # FlowMatchEulerDiscreteScheduler (dynamic shift)
    max_sequence_length: int = 512               # T5 tokens per prompt

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder,
                "text_encoder_2": self.text_encoder_2}

    def to(self, device: torch.device, dtype: torch.dtype) -> "FluxKontextComponents":
        for module in self.modules().values():
            module.to(device=device)
            if any(p.dtype != dtype for p in module.parameters()):
                module.to(dtype=dtype)
        return self

    def pipeline(self):
        """diffusers' FluxKontextPipeline over these very modules (shared, not copied)."""
        from diffusers import FluxKontextPipeline
        return FluxKontextPipeline(scheduler=self.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                   tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2,
                                   tokenizer_2=self.tokenizer_2, transformer=self.transformer)
