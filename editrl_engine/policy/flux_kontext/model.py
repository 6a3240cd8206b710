"""FLUX.1-Kontext's modules as one object, and the latent packing and position ids its transformer expects.

Packing follows diffusers' FluxKontextPipeline (whose static helpers we call): a VAE latent [B, C, h, w] becomes
[B, (h/2)·(w/2), 4C] tokens of 2x2 patches; each token's id is (k, row, col) with k = 0 for the edited image and
k = 1 for the source image; text tokens have id (0, 0, 0).
"""
from __future__ import annotations

import dataclasses

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)·(w/2), 4C]."""
    from diffusers import FluxKontextPipeline
    batch, channels, height, width = latents.shape
    return FluxKontextPipeline._pack_latents(latents, batch, channels, height, width)


def unpack(packed: torch.Tensor, image_size: tuple[int, int], vae_scale_factor: int) -> torch.Tensor:
    """[B, L, 4C] tokens of an image of `image_size` (H, W) pixels -> [B, C, h, w] VAE latents."""
    from diffusers import FluxKontextPipeline
    height, width = image_size
    return FluxKontextPipeline._unpack_latents(packed, height, width, vae_scale_factor)


def position_ids(latent_height: int, latent_width: int, image_index: int, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ids [(h/2)·(w/2), 3] of the packed tokens of an h x w latent: (image_index, row, col)."""
    from diffusers import FluxKontextPipeline
    ids = FluxKontextPipeline._prepare_latent_image_ids(None, latent_height // 2, latent_width // 2, device, dtype)
    ids[:, 0] = image_index
    return ids


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
