"""Full-weight safetensors of a policy's modules (e.g. the demo's supervised warm-up): save and load by part.

Keys are "<part>.<parameter name>" with part one of the policy components' modules() names (transformer, vae,
text_encoder, text_encoder_2, ...). Loading checks every part present in the file strictly: a missing or an
unexpected key is an error that names it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..atomic import write_bytes_atomic
from ..errors import InputError, MissingPathError


def policy_modules(policy) -> dict[str, torch.nn.Module]:
    return policy.components.modules()


def save_full_weights(policy, path: str | os.PathLike, parts: Sequence[str] = ("transformer", "vae"),
                      dtype: torch.dtype | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write the named parts' weights (base weights: LoRA layers are not included) atomically."""
    modules = policy_modules(policy)
    state = {}
    for part in parts:
        if part not in modules:
            raise KeyError(f"the policy has no part {part!r}; it has {sorted(modules)}")
        for name, tensor in _base_state(modules[part]).items():
            state[f"{part}.{name}"] = (tensor.to(dtype) if dtype else tensor).detach().cpu().contiguous()
    path = write_bytes_atomic(path, save(state, metadata=metadata or {}))
    return path


def load_full_weights(policy, path: str | os.PathLike) -> list[str]:
    """Load every part found in the file into the policy (in the policy's dtype); returns the parts loaded."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"policy weights {path} do not exist; check policy.init in the config")
    state = load_file(str(path))
    modules = policy_modules(policy)
    by_part: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        part, _, name = key.partition(".")
        if part not in modules:
            raise InputError(f"{path}: key {key!r} names part {part!r}, but the policy has {sorted(modules)}")
        by_part.setdefault(part, {})[name] = tensor
    for part, part_state in by_part.items():
        module = modules[part]
        expected = _base_state(module)
        missing, unexpected = set(expected) - set(part_state), set(part_state) - set(expected)
        if missing or unexpected:
            raise InputError(f"{path}: part {part!r} does not match the policy's architecture: missing "
                             f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]} (built from another preset?)")
        with torch.no_grad():
            for name, tensor in part_state.items():
                target = expected[name]
                if target.shape != tensor.shape:
                    raise InputError(f"{path}: {part}.{name} has shape {tuple(tensor.shape)}, the policy's is "
                                     f"{tuple(target.shape)}")
                target.copy_(tensor.to(target.dtype))
    return sorted(by_part)


def _base_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict (parameters and persistent buffers, as live tensors) without LoRA layers, under the names the
    module has without adapters."""
    return {name.replace(".base_layer.", "."): tensor for name, tensor in module.state_dict(keep_vars=True).items()
            if "lora_" not in name}
