"""Images <-> packed latent sequences for Qwen-Image-Edit.

The edited image has about `target_area` pixels with the source's aspect ratio, each side a multiple of 32; the
source is resized to the same size (Lanczos). The VAE (8x, 16 channels, a video VAE fed one frame) latent is
normalised per channel with the VAE's latents_mean / latents_std and packed in 2x2 patches:
[B, 16, 1, h, w] <-> [B, (h/2)(w/2), 64].
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def edit_size(width: int, height: int, target_area: int) -> tuple[int, int]:
    """(width, height) of the edit: `target_area` pixels at the source's aspect ratio, sides multiples of 32."""
    ratio = width / height
    new_width = math.sqrt(target_area * ratio)
    return round(new_width / 32) * 32, round(new_width / ratio / 32) * 32


def pixels(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> float32 [B, 3, 1, H, W] in [-1, 1] (one video frame each)."""
    array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])      # [B, H, W, 3]
    return (torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0).unsqueeze(2)


def to_uint8(decoded: torch.Tensor) -> torch.Tensor:
    """VAE output in [-1, 1] [B, 3, H, W] -> uint8 [B, 3, H, W]."""
    return ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


def latent_stats(vae: torch.nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) [1, C, 1, 1, 1] of the VAE latents, on like's device and dtype."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, 1, h, w] -> [B, (h/2)(w/2), 4C]: each token is a 2x2 patch, channels outermost."""
    b, c, _, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)       # [B, h/2, w/2, C, 2, 2]
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, (h/2)(w/2), 4C] -> [B, C, 1, h, w] (h, w: latent rows and columns)."""
    b, _, channels = tokens.shape
    patches = tokens.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)   # [B, C, h/2, 2, w/2, 2]
    return patches.reshape(b, channels // 4, 1, h, w)
