"""LoRA adapters on a diffusers transformer (peft): add, switch, the NFT "old" adapter, save for diffusers.

    add_adapter(transformer, "flux-kontext", rank=32, alpha=64)           # trainable adapter "default"
    copy_adapter(transformer, source="default", target="old")            # frozen copy for DiffusionNFT
    soft_update(transformer, nft_decay(step), source="default", target="old")   # θ_old ← d·θ_old + (1−d)·θ
    with use_adapter(transformer, None): ...                             # the reference model (no adapter)
    save_adapter(transformer, FluxKontextPipeline, "ckpt/lora")          # pipeline.load_lora_weights reads it

`LoraMixin` gives an EditPolicy (anything with `.transformer`, `.family` and `.lora_pipeline_class`) the
interface's abstract LoRA methods on top of these functions; EditPolicy.add_old_adapter / update_old_adapter
call copy_adapter / soft_update directly.
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator, Sequence

import torch

# Per family, the module-name suffixes that get LoRA by default: the attention projections of the image and
# text streams (and, for Kontext, the feed-forward layers, as Flow-GRPO's Kontext run does).
_ATTENTION = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
              "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")
ATTENTION_TARGETS = _ATTENTION                                 # attention projections only (UniWorld-V2's Kontext)
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "flux-kontext": _ATTENTION + ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
    "qwen-image-edit": _ATTENTION,
    "qwen-image-edit-plus": _ATTENTION,                         # the same transformer as Qwen-Image-Edit
    "flux2": _ATTENTION + ("attn.to_qkv_mlp_proj",),            # + the single-stream blocks' fused projection
}
NFT_DECAY_SCHEDULES = ("default", "delayed")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_INITS = {"default": True, "gaussian": "gaussian"}        # name -> peft's init_lora_weights (B = 0 in both)


def add_adapter(transformer: torch.nn.Module, family: str, rank: int = 32, alpha: float = 64.0,
                target_modules: Sequence[str] | None = None, adapter: str = "default", init: str = "default") -> None:
    """Attach a trainable LoRA adapter (B = 0, so the model is unchanged until trained) and make it active.
    init: A's initialisation, "default" (peft's Kaiming-uniform) or "gaussian" (normal, std 1 / rank)."""
    if init not in LORA_INITS:
        raise ValueError(f"LoRA init {init!r}: choose one of {list(LORA_INITS)}")
    from peft import LoraConfig
    if target_modules is None:
        if family not in DEFAULT_TARGETS:
            raise ValueError(f"no default LoRA targets for family {family!r}; pass target_modules")
        target_modules = DEFAULT_TARGETS[family]
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules),
                        init_lora_weights=LORA_INITS[init])
    transformer.add_adapter(config, adapter_name=adapter)       # diffusers' PeftAdapterMixin; activates it
    for parameter in adapter_parameters(transformer, adapter):
        parameter.requires_grad_(True)


def adapter_names(transformer: torch.nn.Module) -> list[str]:
    return list(getattr(transformer, "peft_config", {}) or {})


def _require(transformer: torch.nn.Module, *adapters: str) -> None:
    missing = [a for a in adapters if a not in adapter_names(transformer)]
    if missing:
        raise KeyError(f"no LoRA adapter {missing} on the transformer (it has {adapter_names(transformer)})")


def _lora_layers(transformer: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    return (m for m in transformer.modules() if isinstance(m, BaseTunerLayer))


def _paired_parameters(transformer: torch.nn.Module, source: str, target: str
                       ) -> Iterator[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(θ_source, θ_target) for every LoRA weight both adapters have, in module order."""
    for layer in _lora_layers(transformer):
        for name in layer.adapter_layer_names:                  # lora_A, lora_B, (embedding / magnitude)
            container = getattr(layer, name)
            if source in container and target in container:
                src, dst = container[source], container[target]
                if isinstance(src, torch.nn.Parameter):
                    yield src, dst
                else:
                    yield from zip(src.parameters(), dst.parameters(), strict=True)


def adapter_parameters(transformer: torch.nn.Module, adapter: str = "default") -> list[torch.nn.Parameter]:
    """Every parameter of one adapter (lora_A and lora_B of each targeted layer)."""
    _require(transformer, adapter)
    return [p for p, _ in _paired_parameters(transformer, adapter, adapter)]


def copy_adapter(transformer: torch.nn.Module, source: str = "default", target: str = "old") -> None:
    """Add adapter `target` with `source`'s configuration and weights, frozen; the active adapter stays active."""
    _require(transformer, source)
    active = transformer.active_adapters()
    with warnings.catch_warnings():                 # peft warns that the model now holds several adapters
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.add_adapter(copy.deepcopy(transformer.peft_config[source]), adapter_name=target)
    transformer.set_adapter(active)
    soft_update(transformer, 0.0, source=source, target=target)
    for parameter in adapter_parameters(transformer, target):
        parameter.requires_grad_(False)
    for parameter in adapter_parameters(transformer, source):
        parameter.requires_grad_(True)


@torch.no_grad()
def soft_update(transformer: torch.nn.Module, decay: float, source: str = "default", target: str = "old") -> None:
    """θ_target ← decay·θ_target + (1 − decay)·θ_source on every LoRA weight (decay = 0 copies)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    _require(transformer, source, target)
    for theta, theta_target in _paired_parameters(transformer, source, target):
        theta_target.mul_(decay).add_(theta.to(theta_target.dtype), alpha=1.0 - decay)


def nft_decay(step: int, schedule: str = "default") -> float:
    """DiffusionNFT's old-adapter decay d at optimizer step `step`.
    default: min(0.001·step, 0.5); delayed: 0 before step 75, then min(0.0075·(step − 75), 0.999)."""
    if schedule == "default":
        return min(0.001 * step, 0.5)
    if schedule == "delayed":
        return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.999)
    raise ValueError(f"unknown NFT decay schedule {schedule!r}; choose one of {NFT_DECAY_SCHEDULES}")


@contextlib.contextmanager
def use_adapter(transformer: torch.nn.Module, adapter: str | None) -> Iterator[None]:
    """Within the block only `adapter` acts (None: no adapter, the base model). Which adapter was active and
    every LoRA parameter's requires_grad (peft toggles them when switching) are restored on exit. With gradient
    checkpointing, call backward outside the block: the recomputed forward uses whichever adapter is active then."""
    if adapter is not None:
        _require(transformer, adapter)
    layers = list(_lora_layers(transformer))
    active = transformer.active_adapters() if adapter_names(transformer) else []
    was_disabled = [layer.disable_adapters for layer in layers]
    grads = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    try:
        if adapter is None:
            for layer in layers:
                layer.enable_adapters(False)
        else:
            for layer in layers:
                layer.enable_adapters(True)
            transformer.set_adapter(adapter)
        yield
    finally:
        if active:
            transformer.set_adapter(active)
        for layer, disabled in zip(layers, was_disabled):
            layer.enable_adapters(not disabled)
        for parameter, requires_grad in grads.items():
            parameter.requires_grad_(requires_grad)


def adapter_state_dict(transformer: torch.nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """One adapter's weights under peft's adapter-free names ('…to_q.lora_A.weight'), on the CPU. Sharded (FSDP2)
    weights are gathered whole, a collective that every rank of the mesh must call."""
    from peft.utils import get_peft_model_state_dict
    from torch.distributed.tensor import DTensor
    _require(transformer, adapter)
    state = get_peft_model_state_dict(transformer, adapter_name=adapter)
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().to("cpu").contiguous()
            for k, v in state.items()}


def save_adapter(transformer: torch.nn.Module, pipeline_class: type, directory: str | os.PathLike,
                 adapter: str = "default", weight_name: str = LORA_WEIGHT_NAME,
                 state: dict[str, torch.Tensor] | None = None) -> str:
    """Write one adapter as safetensors (with its rank and alpha in the metadata) through the diffusers
    pipeline class's own save_lora_weights, so `pipeline_class.load_lora_weights(directory)` loads it.
    Returns the file's path. `state`: the adapter_state_dict already gathered (sharded runs)."""
    state = adapter_state_dict(transformer, adapter) if state is None else state
    metadata = transformer.peft_config[adapter].to_dict()
    os.makedirs(directory, exist_ok=True)
    pipeline_class.save_lora_weights(directory, transformer_lora_layers=state, weight_name=weight_name,
                                     safe_serialization=True, transformer_lora_adapter_metadata=metadata)
    return os.path.join(os.fspath(directory), weight_name)


class LoraMixin:
    """EditPolicy's LoRA methods for a policy with `.transformer`, `.family` and `.lora_pipeline_class`."""
    transformer: torch.nn.Module
    family: str
    lora_pipeline_class: type

    def add_lora(self, rank: int = 32, alpha: float = 64.0, target_modules: Sequence[str] | None = None,
                 adapter: str = "default", init: str = "default") -> None:
        add_adapter(self.transformer, self.family, rank, alpha, target_modules, adapter, init)

    def lora_parameters(self, adapter: str = "default") -> list[torch.nn.Parameter]:
        return adapter_parameters(self.transformer, adapter)

    def save_lora(self, directory: str, adapter: str = "default") -> str:
        return save_adapter(self.transformer, self.lora_pipeline_class, directory, adapter)

    def use_adapter(self, adapter: str | None):
        return use_adapter(self.transformer, adapter)


__all__ = ["ATTENTION_TARGETS", "DEFAULT_TARGETS", "LORA_INITS", "LORA_WEIGHT_NAME", "LoraMixin", "NFT_DECAY_SCHEDULES",
           "adapter_names", "adapter_parameters", "adapter_state_dict", "add_adapter", "copy_adapter", "nft_decay",
           "save_adapter", "soft_update", "use_adapter"]
