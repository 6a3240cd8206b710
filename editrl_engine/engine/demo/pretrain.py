"""The demo's supervised warm-up: flow matching of the demo transformer and text encoders on imperfect edits
(task.py: the erased shape stays as a faint ghost), written as the shipped checkpoint; `load_demo_policy`, the
policy with those weights, and `load_demo_editor`, the same as the demo samples it (plus a LoRA).

    python -m editrl_engine.engine.demo.pretrain editrl_engine/engine/demo/warmup.safetensors   # reproduce it

Loss ||v - (eps - x0)||^2 at x_t = (1 - t) x0 + t eps, t ~ U(0, 1), x0 the packed latents of the warm-up
target, conditioned on the source and the instruction exactly as RL and evaluation condition it; the tokens
that hold a shape weigh OBJECT_WEIGHT times the others (token_weights). Measured on the held-out tasks with exact
targets: unweighted, the model ignored the instruction (its velocity changed by ~0.2 % when the named shape
changed, after 3000 or 8000 steps); weighted, 8000 steps gave named shape removed 94 %, other shape kept 87 %.
With the ghost targets, 8000 steps kept the other shape in 84 % of the two-shape tasks and 16000 (STEPS) in 100 %. The
transformer and both text encoders train (the text encoders in eval mode, no dropout); the VAE is the exact
identity (vae.py) and is not trained. The checkpoint holds every module (trained ones in fp16, the VAE in
fp32), so a generic loader of '<part>.<name>' keys rebuilds the same policy from the "demo" preset.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

from ...atomic import write_bytes_atomic
from ...data.shapes import owners
from ...errors import MissingPathError
from ...policy.flux_kontext import FluxKontextPolicy, load
from ...policy.flux_kontext.model import pack
from . import task as demo_task
from .vae import make_identity

PRESET = "demo"
CHECKPOINT = Path(__file__).with_name("warmup.safetensors")
STEPS = 16000
BATCH_SIZE = 16
LR = 3e-3
WARMUP_FRACTION = 0.05                       # linear LR warm-up, then cosine to 0
SHIPPED = ("transformer", "text_encoder", "text_encoder_2", "vae")   # the whole policy: any loader gets it right
FP32_PARTS = ("vae",)                        # the identity VAE's constants need fp32; the rest ships as fp16
TRAINED = ("transformer", "text_encoder", "text_encoder_2")   # the VAE is the fixed identity
OBJECT_WEIGHT = 10.0                         # loss weight of the tokens that hold a shape (token_weights)
TEXT_LR_SCALE = 1.0                          # the text encoders' learning rate relative to the transformer's
COMMAND = "python -m editrl_engine.engine.demo.pretrain editrl_engine/engine/demo/warmup.safetensors"


def build_policy(seed: int = 0) -> FluxKontextPolicy:
    """The demo policy with random weights from `seed` and the identity VAE."""
    policy = load(preset=PRESET, seed=seed, attention="sdpa")
    make_identity(policy.components.vae)
    return policy


@torch.no_grad()
def image_latents(policy: FluxKontextPolicy, images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> packed latents [B, L, C] float32, the way policy.encode encodes a source."""
    vae = policy.components.vae
    pixels = images.to(policy.device, policy.dtype) / 127.5 - 1                     # [B, 3, H, W] in [-1, 1]
    latents = vae.encode(pixels).latent_dist.mode()                                 # [B, c, h, w]
    latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    return pack(latents).float()                                                    # [B, L, 4c]


def flow_matching_loss(policy: FluxKontextPolicy, step: int, generator: torch.Generator,
                       batch_size: int = BATCH_SIZE, ghost: int = demo_task.GHOST,
                       object_weight: float = OBJECT_WEIGHT) -> torch.Tensor:
    """The mean squared velocity error of warm-up batch `step` (t and eps drawn from `generator`)."""
    tasks, targets = demo_task.warmup_batch(step, batch_size, ghost=ghost)
    instructions = [t.instruction for t in tasks]
    cond = policy.encode([t.source_image() for t in tasks], instructions)
    if any(p.requires_grad for p in policy.components.text_encoder_2.parameters()):
        embeds, pooled = policy._encode_text(instructions)                         # with grad: [B, T, D], [B, P]
        cond = dataclasses.replace(cond, tensors={**cond.tensors, "prompt_embeds": embeds,
                                                  "pooled_prompt_embeds": pooled})
    x0 = image_latents(policy, targets)                                             # [B, L, C]
    eps = torch.randn(x0.shape, generator=generator)                                # [B, L, C]
    t = torch.rand(x0.shape[0], generator=generator)                                # [B]
    x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps                      # [B, L, C]
    v = policy.velocity(x_t, t, cond)                                               # [B, L, C]
    weight = token_weights(tasks, object_weight).to(v.device)                       # [B, L]
    error = (v - (eps - x0)).square().mean(-1)                                      # [B, L]
    return (error * weight).sum() / weight.sum()


def token_weights(tasks, object_weight: float = OBJECT_WEIGHT) -> torch.Tensor:
    """float32 [B, L]: `object_weight` for the latent tokens (2x2 pixel patches) that hold any shape pixel of the
    source, 1 elsewhere. The shapes are ~4 % of the canvas; unweighted, copying the background dominates the
    loss and the text (which only decides what happens to the shapes) is ignored."""
    masks = torch.stack([owners(t.height, t.width, list(enumerate(t.shapes))) >= 0 for t in tasks])  # [B, H, W]
    patches = torch.nn.functional.max_pool2d(masks[:, None].float(), 2).flatten(1)              # [B, L]
    return 1 + (object_weight - 1) * patches


def _lr_factor(step: int, steps: int) -> float:
    warm = max(1, int(steps * WARMUP_FRACTION))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def save_checkpoint(policy: FluxKontextPolicy, out_path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """The shipped modules' weights as safetensors (fp16, the VAE fp32), written atomically (temp file +
    os.replace), with keys '<part>.<name>' as engine.weights.load_full_weights reads them."""
    from safetensors.torch import save
    modules = policy.components.modules()
    state = {f"{name}.{key}": value.detach().to("cpu", torch.float32 if name in FP32_PARTS else torch.float16)
             .contiguous() for name in SHIPPED for key, value in modules[name].state_dict().items()}
    return write_bytes_atomic(out_path, save(state, metadata=metadata))


def pretrain(out_path: str | os.PathLike = CHECKPOINT, steps: int = STEPS, seed: int = 0, *,
             batch_size: int = BATCH_SIZE, lr: float = LR, ghost: int = demo_task.GHOST,
             progress: bool = True) -> Path:
    """Train the demo transformer and text encoders from random weights (seed) for `steps` steps; write the
    checkpoint (its metadata records the settings and the command that rebuilds the shipped file)."""
    torch.manual_seed(seed)
    policy = build_policy(seed)
    transformer = policy.transformer
    trained = [policy.components.modules()[name].requires_grad_(True) for name in TRAINED]
    transformer.train()                     # the text encoders stay in eval mode: no dropout
    params = [p for module in trained for p in module.parameters()]
    text = [p for module in trained if module is not transformer for p in module.parameters()]
    optimizer = torch.optim.AdamW([{"params": list(transformer.parameters()), "lr": lr},
                                   {"params": text, "lr": lr * TEXT_LR_SCALE}], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps))
    generator = torch.Generator().manual_seed(seed)
    start, running = time.perf_counter(), None
    for step in range(steps):
        loss = flow_matching_loss(policy, step, generator, batch_size, ghost)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if progress and ((step + 1) % max(1, steps // 20) == 0 or step + 1 == steps):
            elapsed = time.perf_counter() - start
            print(f"warm-up {step + 1}/{steps}  loss {running:.4f}  {elapsed:.0f}s  "
                  f"eta {elapsed / (step + 1) * (steps - step - 1):.0f}s", file=sys.stderr, flush=True)
    for module in trained:
        module.eval().requires_grad_(False)
    metadata = {"preset": PRESET, "steps": str(steps), "seed": str(seed), "batch_size": str(batch_size),
                "lr": str(lr), "ghost": str(ghost), "warmup_seed": str(demo_task.WARMUP_SEED), "command": COMMAND}
    return save_checkpoint(policy, out_path, metadata)


def load_demo_policy(checkpoint: str | os.PathLike | None = None) -> FluxKontextPolicy:
    """The demo policy with the warm-up weights of `checkpoint` (default: the shipped warmup.safetensors)."""
    from safetensors.torch import load_file
    state = load_file(str(checkpoint or CHECKPOINT))
    policy = build_policy()
    modules = policy.components.modules()
    for name in SHIPPED:
        prefix = name + "."
        part = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
        modules[name].load_state_dict(part, strict=True)
    return policy


def load_demo_editor(lora: str | os.PathLike | None = None) -> FluxKontextPolicy:
    """The demo editor as `editrl demo` samples it: the shipped warm-up with the demo config's attention kernel
    (another kernel moves pixels), plus the LoRA folder a demo run wrote (runs/demo/lora) when given."""
    from ..config import load_config
    policy = load_demo_policy()
    policy.set_attention(load_config("demo").policy.attention)
    if lora is not None:
        weights = Path(lora) / "pytorch_lora_weights.safetensors"
        if not weights.is_file():
            raise MissingPathError(f"LoRA folder {lora}: no {weights.name} there; give the lora/ folder of a demo "
                                   "run, e.g. runs/demo/lora")
        policy.transformer.load_lora_adapter(str(lora), adapter_name="default", prefix="transformer",
                                             weight_name=weights.name)
    return policy


def main(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description="Reproduce the demo's warm-up checkpoint.")
    parser.add_argument("out", nargs="?", default=str(CHECKPOINT))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ghost", type=int, default=demo_task.GHOST)
    args = parser.parse_args(argv)
    print(pretrain(args.out, steps=args.steps, seed=args.seed, ghost=args.ghost))


if __name__ == "__main__":
    main()
