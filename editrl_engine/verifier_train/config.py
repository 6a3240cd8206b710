"""`editrl train-verifier` configuration: TOML sections with `--set section.key=value` overrides, each section a
dataclass that checks itself (the editor's config machinery, engine/config.py, reads them).

    [model]  the verifier's VLM (a local Qwen2.5-VL / Qwen3-VL folder or a preset) and its LoRA
    [data]   JSONL manifests: sft (SftRow), preferences (PreferenceRow), eval (held-out PreferenceRow)
    [sft]    the cold start: steps, batch, lr and its schedule (warmup, constant or cosine)
    [gcpo]   steps, pairs per step, traces per image N, sampling, PPO clip, KL to the SFT model, updates per batch,
             the held-out evaluations and the train-reward probe (probe_pairs)
    [run]    out_dir, seed, eval_every, checkpoint_every, keep, tensorboard, progress
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.config import ConfigError, _set_nested, from_dict, parse_override


def _check(name: str, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    path: str = ""                          # a local Qwen2.5-VL / Qwen3-VL folder ...
    preset: str = ""                        # ... or a preset ("tiny")
    family: str = ""                        # "" = from the folder's config.json
    dtype: str = "float32"                  # weights: float32 | bfloat16
    device: str = "cpu"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: str = ""                  # a peft target regex; "" = the language model's projections
    gradient_checkpointing: bool = False
    autocast: bool = False                  # bf16 autocast around forwards
    max_image_pixels: int = 512 * 512

    def __post_init__(self):
        _check("model", bool(self.path) != bool(self.preset), "give exactly one of model.path and model.preset")
        _check("model.dtype", self.dtype in ("float32", "bfloat16"), f"float32 or bfloat16, got {self.dtype!r}")
        _check("model.lora_rank", self.lora_rank > 0, "must be > 0")


@dataclasses.dataclass(frozen=True)
class DataSection:
    sft: str = ""
    preferences: str = ""
    eval: str = ""


@dataclasses.dataclass(frozen=True)
class SftSection:
    steps: int = 100
    batch: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 0                         # steps of linear warmup from lr / warmup
    schedule: str = "constant"              # after warmup: constant | cosine (to min_lr_ratio * lr at sft.steps)
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        _check("sft", self.steps >= 0 and self.batch > 0 and self.lr > 0, "steps >= 0, batch > 0 and lr > 0")
        _check("sft.schedule", self.schedule in ("constant", "cosine"), f"constant or cosine, got {self.schedule!r}")
        _check("sft", self.warmup >= 0 and 0 <= self.min_lr_ratio <= 1, "warmup >= 0 and 0 <= min_lr_ratio <= 1")

    def lr_at(self, step: int) -> float:
        """The learning rate of SFT step `step` (1-based): linear warmup, then constant or cosine decay."""
        if step <= self.warmup:
            return self.lr * step / self.warmup
        if self.schedule == "constant" or self.steps <= self.warmup:
            return self.lr
        progress = min(1.0, (step - self.warmup) / (self.steps - self.warmup))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclasses.dataclass(frozen=True)
class GcpoSection:
    steps: int = 0
    pairs: int = 8                          # preference pairs per step
    traces: int = 8                         # N traces per image (2N per pair)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    lr: float = 3e-5
    clip_eps: float = 0.2
    kl_beta: float = 0.01                   # KL (k3) to the SFT model
    updates_per_batch: int = 1
    micro_batch: int = 8                    # traces per backward
    eval_every: int = 0                     # GCPO steps between held-out evaluations (0: at the stage's end only)
    probe_pairs: int = 0                    # fixed training pairs whose GCPO reward each evaluation measures (0: off)

    def __post_init__(self):
        _check("gcpo.probe_pairs", self.probe_pairs >= 0, "probe_pairs >= 0 (0: no probe)")
        _check("gcpo", self.steps >= 0 and self.pairs > 0 and self.traces > 0 and self.lr > 0,
               "steps >= 0, pairs > 0, traces > 0 and lr > 0")
        _check("gcpo.temperature", self.temperature > 0, "sampled traces need temperature > 0")
        _check("gcpo", self.clip_eps > 0 and self.kl_beta >= 0 and self.updates_per_batch >= 1 and
               self.micro_batch > 0, "clip_eps > 0, kl_beta >= 0, updates_per_batch >= 1, micro_batch > 0")


@dataclasses.dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/verifier"
    seed: int = 0
    eval_every: int = 20                    # SFT steps between held-out evaluations (0: at the start and each
                                            # stage's end only)
    checkpoint_every: int = 50
    keep: int = 2
    tensorboard: bool = False
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class VerifierTrainConfig:
    model: ModelSection = ModelSection(preset="tiny")
    data: DataSection = DataSection()
    sft: SftSection = SftSection()
    gcpo: GcpoSection = GcpoSection()
    run: RunSection = RunSection()

    @property
    def total_steps(self) -> int:
        return self.sft.steps + self.gcpo.steps


def load_verifier_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> VerifierTrainConfig:
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    for override in overrides:
        key, value = parse_override(override)
        _set_nested(data, key, value)
    return from_dict(VerifierTrainConfig, data)
