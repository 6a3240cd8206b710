"""The demo's VAE: diffusers' AutoencoderKL of the "demo" preset with weights set so that it is an exact
identity autoencoder (latent = image in [-1, 1], 3 channels, no downsampling).

A random-weight VAE is not an autoencoder (decode(encode(x)) is not x), and a trained one costs warm-up time
and is never exact; the demo's flat-colour images need neither compression nor a learned latent space. The
construction: every residual branch (resnet conv2, attention to_out) is zero, so each block is the identity;
conv_in writes a constant channel K and the image as +x and -x channels, so the one-group GroupNorm before
conv_out sees a mean of exactly K / C and a variance that the image changes by a relative ~1e-6; its affine
undoes the normalisation and adds an offset that keeps SiLU in its linear range; conv_out takes the centre tap
and removes the offset. Reconstruction error is ~1e-3 of a grey level.
"""
from __future__ import annotations

import math

import torch

CONSTANT = 1000.0       # the constant channel that dominates the GroupNorm statistics
OFFSET = 20.0           # SiLU(y) = y to ~1e-7 for y >= OFFSET - 1


@torch.no_grad()
def _write_in(conv: torch.nn.Conv2d) -> None:
    """conv_in [C, 3, 3, 3]: channel 0 = CONSTANT, 1..3 = +x, 4..6 = -x, the rest 0 (centre tap only)."""
    conv.weight.zero_()
    conv.bias.zero_()
    conv.bias[0] = CONSTANT
    for c in range(3):
        conv.weight[1 + c, c, 1, 1] = 1.0
        conv.weight[4 + c, c, 1, 1] = -1.0


@torch.no_grad()
def _write_out(norm: torch.nn.GroupNorm, conv: torch.nn.Conv2d, channels: int) -> None:
    """GroupNorm(1, C) -> SiLU -> conv_out: channels 1..3 come back as x (output channels 0..2)."""
    sigma = CONSTANT * math.sqrt(channels - 1) / channels        # the std of [K, 0, ..., 0] over C channels
    norm.weight.zero_()
    norm.bias.zero_()
    norm.weight[1:4] = sigma
    norm.bias[1:4] = CONSTANT / channels + OFFSET               # (x - K/C)/σ·σ + K/C + OFFSET = x + OFFSET
    conv.weight.zero_()
    conv.bias.zero_()
    for c in range(3):
        conv.weight[c, 1 + c, 1, 1] = 1.0
        conv.bias[c] = -OFFSET


@torch.no_grad()
def make_identity(vae: torch.nn.Module) -> torch.nn.Module:
    """Set an AutoencoderKL (one block, no downsampling, 3 latent channels, >= 7 block channels, one norm
    group) to the identity autoencoder, in place; returns it."""
    config = vae.config
    channels = config.block_out_channels[0]
    if (len(config.block_out_channels) != 1 or config.latent_channels != 3 or channels < 7
            or config.norm_num_groups != 1):
        raise ValueError("the identity VAE needs one block of >= 7 channels, 3 latent channels and 1 norm group, "
                         f"got {dict(config)}")
    for parameter in vae.parameters():
        parameter.zero_()                   # residual branches (resnet conv2, attention to_out) become 0
    for part in (vae.encoder, vae.decoder):
        _write_in(part.conv_in)
    _write_out(vae.encoder.conv_norm_out, vae.encoder.conv_out, channels)   # conv_out's logvar half stays 0
    _write_out(vae.decoder.conv_norm_out, vae.decoder.conv_out, channels)
    return vae
