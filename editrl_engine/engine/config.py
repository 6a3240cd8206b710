"""Run configuration: nested dataclasses read from TOML files, with `--set section.key=value` overrides.

    config = load_config("demo")                                  # a shipped config by name (configs/demo.toml)
    config = load_config("runs/my.toml", ["optim.lr=3e-4", "run.steps=10"])
    text = dump_toml(config)                                      # the resolved config, written into the run folder

Unknown sections or keys are errors that name the key and list the valid ones; a value of the wrong type is an
error naming the key. Override values are parsed as TOML values (numbers, booleans, strings, arrays); a bare word
that is not valid TOML is taken as a string.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import textwrap
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..algo.advantages import AdvantageConfig
from ..algo.grpo import GRPOConfig
from ..algo.nft import NFTConfig
from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the key and the fix."""


LORA_INITS = ("default", "gaussian")
EMA_SCHEDULES = ("fixed", "warmup")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    out_dir: str = "runs/{name}"           # {name} is replaced by run.name
    seed: int = 0
    steps: int = 100                       # training steps (rollout -> score -> update), fixed count
    device: str = "auto"                   # auto: cuda:<local rank> when CUDA is there, else cpu
    dtype: str = "float32"                 # policy weights
    autocast: bool = False                 # bf16 autocast for the transformer
    ops_backend: str = ""                  # fused-op backend (torch | triton | cpp); "" picks by device
    threads: int = 0                       # torch intra-op threads per rank (0: leave torch's default)


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    family: str = "flux-kontext"
    preset: str = ""                       # a preset name (e.g. tiny) or ...
    path: str = ""                         # ... a local diffusers folder
    init: str = ""                         # full-weight safetensors loaded after building (e.g. a warm-up)
    attention: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lora_targets: tuple[str, ...] = ()     # empty: the family's defaults
    lora_init: str = "default"             # LoRA A init: default (peft's Kaiming-uniform) | gaussian (peft's
                                           # init_lora_weights="gaussian", UniWorld-V2); B = 0 either way

    def __post_init__(self):
        if self.lora_init not in LORA_INITS:
            raise ConfigError(f"policy.lora_init must be one of {list(LORA_INITS)}, got {self.lora_init!r}")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    kind: str = "programmatic"             # editscore | mllm_logit | verifier | programmatic
    path: str = ""
    preset: str = ""
    device: str = ""                       # "" = the rank's device
    dtype: str = "float32"
    backend: str = "eager"
    lora: str = ""                         # editscore: the EditScore LoRA adapter folder, merged at load
    avg_k: int = 1                         # editscore: Avg@K self-ensemble passes (sampled); 1 = greedy
    templates: str = "auto"                # editscore: auto (publisher's for a lora if installed) | editscore | project
    pq_images: str = "edited"              # editscore: what the PQ call sees: edited | both (the publisher's RL reward)
    reduction: str = "mean_overall"        # editscore, over passes: mean_overall | average_first (sqrt(mSC*mPQ))
    weights: dict[str, float] = dataclasses.field(default_factory=dict)   # a weighted combination of kinds
    layout: str = "interleaved"            # mllm_logit prompt: interleaved | uniworld (images first, UniWorld-V2) |
                                           # the path of a template file ({instruction}, {requirement})
    jpeg_quality: int = 0                  # mllm_logit: 0 off, else a JPEG round trip of every image (UniWorld-V2: 75)
    endpoint: tuple[str, ...] = ()         # a served judge: OpenAI-compatible /v1 base URLs (vLLM, SGLang, editrl
                                           # serve); each group stays on one. Empty: the judge loads in-process
    model: str = ""                        # with endpoint: the served model name ("" = the first of GET /v1/models)
    api_key_env: str = ""                  # with endpoint: the environment variable holding the API key
    send_top_k: bool = True                # with endpoint: send top_k when sampling (false for hosted APIs without it)

    def __post_init__(self):
        section = "eval.gold" if isinstance(self, GoldConfig) else "reward"
        if isinstance(self.jpeg_quality, bool) or not 0 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{section}.jpeg_quality must be 0 (off) or a JPEG quality 1..100, "
                              f"got {self.jpeg_quality}")
        if not self.endpoint:
            if self.model or self.api_key_env or not self.send_top_k:
                raise ConfigError(f"{section}.model, api_key_env and send_top_k go with {section}.endpoint (a served "
                                  f"judge); set {section}.endpoint = [\"http://host:port/v1\"] or remove them")
            return
        local = [name for name in ("path", "preset", "lora") if getattr(self, name)]
        if self.weights or self.kind not in ("editscore", "mllm_logit", "verifier") or local:
            raise ConfigError(f"{section}.endpoint serves one judge of kind editscore, mllm_logit or verifier, whose "
                              f"weights live on its server; got kind {self.kind!r}"
                              + (f" with {', '.join(section + '.' + n for n in local)}" if local else "")
                              + (" and weights" if self.weights else "") + ": remove those or the endpoint")

    @property
    def remote(self) -> bool:
        return bool(self.endpoint)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    manifest: str = ""                     # JSONL manifest; empty: the synthetic shapes task below
    synthetic_tasks: int = 64
    synthetic_seed: int = 0
    image_size: int = 16
    edits: tuple[str, ...] = ("recolor", "move", "remove", "background")
    max_shapes: int = 3
    eval_tasks: int = 16                   # held-out synthetic tasks for evaluation ...
    eval_seed: int = 1                     # ... drawn from this seed
    exclude_eval: bool = True              # skip training tasks equal to a held-out task (instruction + pixels)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    group_size: int = 8                    # G samples per (instruction, source)
    groups_per_step: int = 8               # global, over all policy ranks
    num_steps: int = 6                     # rollout sampling steps
    solver: str = "dpm2"                   # NFT rollouts: dpm2 (DiffusionNFT) or euler
    guidance: float = 0.0                  # 0: the family's default
    rollout_batch: int = 0                 # rows per rollout chunk (0: all); chunks are scored as they finish
    eval_steps: int = 8                    # Euler steps for evaluation


@dataclasses.dataclass(frozen=True)
class AlgoConfig:
    """[algo]: which algorithm trains, its settings section ([algo.nft], [algo.grpo]: the algorithm's own config
    class, one field per algorithm of engine/algorithms) and the group advantages ([algo.advantage])."""
    name: str = "nft"                      # nft | grpo
    nft: NFTConfig = NFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    advantage: AdvantageConfig = AdvantageConfig()

    def __post_init__(self):
        if self.name not in algorithm_names():
            raise ConfigError(f"algo.name must be one of {algorithm_names()}, got {self.name!r}")

    @property
    def settings(self):
        """The chosen algorithm's own section."""
        return getattr(self, self.name)

    def algorithm_class(self):
        from .algorithms import ALGORITHMS
        return ALGORITHMS[self.name]

    def build(self, config: "TrainConfig", backend: str | None = None):
        """The Algorithm object this section describes (engine/algorithms)."""
        return self.algorithm_class()(self.settings, config, backend)


def algorithm_names() -> list[str]:
    return [f.name for f in dataclasses.fields(AlgoConfig) if f.name not in ("name", "advantage")]


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_steps: int = 0                  # linear LR warm-up, then constant
    micro_batch: int = 0                   # rows per forward/backward (0: the whole local batch)
    updates_per_step: int = 1              # optimizer steps per training step (the batch split in that many)
    ema_decay: float = 0.9                 # EMA of the LoRA weights, for evaluation only
    ema_every: int = 8                     # ... updated every this many steps (0 disables)
    ema_schedule: str = "fixed"            # fixed: ema_decay; warmup: min((1 + s) / (10 + s), ema_decay) with s the
                                           # steps done (UniWorld-V2, with ema_every = 1)
    step_when_filtered: bool = False       # when every group of a part is filtered: false skips the optimizer step
                                           # (nothing to learn, weights untouched); true steps AdamW on zero
                                           # gradients (weight decay and the moments' decay apply, as UniWorld-V2)

    def __post_init__(self):
        if self.ema_schedule not in EMA_SCHEDULES:
            raise ConfigError(f"optim.ema_schedule must be one of {list(EMA_SCHEDULES)}, got {self.ema_schedule!r}")
        if self.ema_every < 0:
            raise ConfigError(f"optim.ema_every must be >= 0 (0 disables the EMA), got {self.ema_every}")

    def ema_decay_at(self, steps_done: int) -> float:
        """The EMA's decay for the update after `steps_done` training steps (1 after the first)."""
        if self.ema_schedule == "warmup":
            return min((1 + steps_done) / (10 + steps_done), self.ema_decay)
        return self.ema_decay


STALENESS_NOTE = ("pipeline.staleness: 1 overlaps: step k + 1's rollouts are sampled from the old adapter before step "
                  "k's update and old-adapter update (one step older); 0 is the exact order (update, old-adapter "
                  "update, then sample), as DiffusionNFT / UniWorld-V2 run it; -1: the algorithm's default")
SECTION_NOTES = {"pipeline": STALENESS_NOTE}   # comment lines dump_toml writes above a section (--print-config)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    staleness: int = -1                    # -1: the algorithm's default (NFT 1, GRPO 0); 0 / 1: STALENESS_NOTE
    placement: str = "colocated"           # colocated | separate (reward ranks score, policy ranks train)
    reward_ranks: int = 0                  # with placement = separate: how many of the world's ranks score
    backend: str = ""                      # torch.distributed backend; "" = nccl on CUDA, gloo on CPU
    fsdp: bool = False                     # shard the transformer over the policy ranks (FSDP2) instead of DDP


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 50                        # steps between checkpoints (0: only at the end and on a signal)
    keep: int = 2                          # checkpoints kept (older ones deleted)


@dataclasses.dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = True
    image_every: int = 10                  # steps between image grids (0: never)
    eval_every: int = 0                    # steps between held-out evaluations (0: before and after only)
    progress: bool = True


REWARD_KINDS = ("editscore", "mllm_logit", "verifier", "programmatic")   # reward.KINDS (kept light: no torch here)
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class GoldConfig(RewardConfig):
    """[eval.gold]: the gold judge of the watch, described like [reward] (a kind with its path / preset / lora /
    avg_k, or `weights`, a weighted combination of kinds). kind "" = no gold judge: the watch then logs the held-out
    training reward only and has no alarm."""
    kind: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.kind and self.kind not in REWARD_KINDS and not self.weights:
            raise ConfigError(f"eval.gold.kind must be one of {list(REWARD_KINDS)} (or \"\" for none), got "
                              f"{self.kind!r}")
        for name, weight in self.weights.items():
            if name not in REWARD_KINDS:
                raise ConfigError(f"eval.gold.weights.{name}: unknown reward kind; choose from {list(REWARD_KINDS)}")
            if not (math.isfinite(weight) and weight > 0):
                raise ConfigError(f"eval.gold.weights.{name} must be a finite number > 0, got {weight!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"eval.gold.dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.avg_k < 1:
            raise ConfigError(f"eval.gold.avg_k must be >= 1, got {self.avg_k}")

    @property
    def enabled(self) -> bool:
        return bool(self.kind or self.weights)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """[eval]: the gold-judge watch. Every `every` steps (and at step 0) the policy samples the held-out tasks from
    fixed seeds; the same images are scored by the training reward and by the gold judge; a divergence alarm
    watches the two (engine/watch.py). every = 0 (the default) turns all of it off."""
    every: int = 0                         # steps between evaluations (0: off); evaluated before that step's update
    manifest: str = ""                     # held-out JSONL manifest; "" = [data]'s held-out synthetic tasks
                                           # (data.eval_tasks from data.eval_seed, kept out of training)
    tasks: int = 0                         # the first N held-out tasks (0: all of them)
    samples: int = 1                       # samples per task, each from its own fixed seed
    seed: int = 1234                       # sample j of task i starts from the noise of seed + i * samples + j
    steps: int = 0                         # Euler steps (0: sampling.eval_steps)
    batch_size: int = 0                    # rows per sampling batch (0: sampling.rollout_batch, or all)
    use_ema: bool = False                  # evaluate the EMA weights (optim.ema_every > 0) instead of the live ones
    alarm_evals: int = 2                   # K: the alarm fires when the gold reward fell for K consecutive
    alarm_tolerance: float = 0.01          # evaluations (by more than this) while the training reward rose
    stop_on_divergence: bool = False       # on the alarm: finish the step, write a checkpoint and stop
    gold: GoldConfig = GoldConfig()

    def __post_init__(self):
        for name in ("every", "tasks", "steps", "batch_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("samples", "alarm_evals"):
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.alarm_tolerance) and self.alarm_tolerance >= 0):
            raise ConfigError(f"eval.alarm_tolerance must be a finite number >= 0, got {self.alarm_tolerance!r}")
        if self.stop_on_divergence and not self.gold.enabled:
            raise ConfigError("eval.stop_on_divergence needs a gold judge: set eval.gold.kind (or eval.gold.weights)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    run: RunConfig = RunConfig()
    policy: PolicyConfig = PolicyConfig()
    reward: RewardConfig = RewardConfig()
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    algo: AlgoConfig = AlgoConfig()
    optim: OptimConfig = OptimConfig()
    pipeline: PipelineConfig = PipelineConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        algorithm = self.algo.algorithm_class()
        limit = algorithm.max_staleness
        if self.pipeline.staleness > limit:
            why = "deeper pipelines are not supported" if limit == 1 else f"{self.algo.name} needs on-policy samples"
            raise ConfigError(f"pipeline.staleness is {self.pipeline.staleness} but {why}: set pipeline.staleness "
                              f"= {limit} (or -1 for the algorithm's default)")
        if self.reward.remote and self.pipeline.placement == "separate":
            raise ConfigError("reward.endpoint scores on a judge server, so no rank needs to hold a judge: set "
                              "pipeline.placement = \"colocated\" (every rank trains and sends its own requests)")

    @property
    def staleness(self) -> int:
        """Steps between the policy that rolled a batch out and the one it trains (-1 in the file: the default)."""
        if self.pipeline.staleness >= 0:
            return self.pipeline.staleness
        return self.algo.algorithm_class().default_staleness

    @property
    def out_dir(self) -> Path:
        return Path(self.run.out_dir.format(name=self.run.name))


# ---- reading -----------------------------------------------------------------------------------------------------
def shipped_configs() -> dict[str, Path]:
    """The configs that ship with the package, by name."""
    found: dict[str, Path] = {}
    packaged = importlib.resources.files("editrl_engine") / "configs"          # in an installed wheel
    source_tree = Path(__file__).resolve().parents[2] / "configs"             # in a checkout / editable install
    for folder in (Path(str(packaged)), source_tree):
        if folder.is_dir():
            for f in sorted(folder.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == ".toml":
        raise ConfigError(f"config file {path} does not exist")
    shipped = shipped_configs()
    if str(name_or_path) not in shipped:
        raise ConfigError(f"no config {str(name_or_path)!r}: give a .toml file or one of {sorted(shipped)}")
    return shipped[str(name_or_path)]


def load_config(name_or_path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A TrainConfig from a TOML file (or a shipped config's name), then `section.key=value` overrides."""
    data: dict[str, Any] = {}
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    for override in overrides:
        key, value = parse_override(override)
        _set_nested(data, key, value)
    return from_dict(TrainConfig, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=3e-4' -> (['optim', 'lr'], 0.0003)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. optim.lr=3e-4)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def _set_nested(data: dict, key: list[str], value: Any) -> None:
    for part in key[:-1]:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"cannot set {'.'.join(key)}: {part} is a value, not a section")
    data[key[-1]] = value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = ""):
    """Build dataclass `cls` from a mapping, checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(fields)
    if unknown:
        where = f"section [{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(f"unknown key(s) {sorted(prefix + k for k in unknown)} in {where}; valid keys: "
                          f"{sorted(fields)}")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, prefix + name)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as error:                  # a section's own validation (e.g. algo.nft)
        raise ConfigError(str(error)) from None


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be an array, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        return tuple(_coerce(item, v, key) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return {str(k): _coerce(typing.get_args(hint)[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint in (int, float, str) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


# ---- writing -----------------------------------------------------------------------------------------------------
def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_toml(config: TrainConfig) -> str:
    """The config as TOML text that load_config reads back to an equal config."""
    lines: list[str] = []

    def table(prefix: str, values: dict) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict) or not v or k == "weights"}
        if prefix:
            lines.append("")
            lines.extend(f"# {line}" for line in _wrap(SECTION_NOTES.get(prefix, "")))
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in values.items():
            if isinstance(v, dict) and v and k != "weights":
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", to_dict(config))
    return "\n".join(lines).lstrip() + "\n"


def _wrap(text: str, width: int = 118) -> list[str]:
    return textwrap.wrap(text, width - 2) if text else []


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")
