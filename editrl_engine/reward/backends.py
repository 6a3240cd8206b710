"""Scoring backends of the logit reward: the language-model forward on already-embedded inputs, run eagerly,
through torch.compile (static shapes, CUDA graphs on a GPU), as an ONNX model in onnxruntime, or as a TensorRT
engine built from that ONNX file.

    embeds, mask, positions = embedded_inputs(model, processor_outputs)     # vision tower + merge, eager
    scorer = make_scorer("compiled", model, token_ids=digit_ids)
    logits = scorer(embeds, mask, positions)                                # [B, K] at the last position

Batches are left-padded, so the answer is at the last position. The compiled, onnx and tensorrt scorers pad
every batch to a fixed bucket (batch: a power of two up to max_batch; sequence: a multiple of seq_step), more
left padding that the attention mask hides, so each bucket is one static shape.
A backend that cannot run here raises BackendUnavailable naming what is missing.
"""
from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from editrl_engine.backends import BackendUnavailable

from . import prefix_cache

SCORING_BACKENDS = ("eager", "compiled", "onnx", "tensorrt")


class ScoringForward(nn.Module):
    """Decoder + final norm + LM head rows of `token_ids` (all rows if None), at the last position only."""

    def __init__(self, model: nn.Module, token_ids: Sequence[int] | None = None):
        super().__init__()
        self.language_model = model.model.language_model
        weight = model.lm_head.weight                                           # [V, H]
        self.register_buffer("head", weight if token_ids is None else weight[list(token_ids)].clone(),
                             persistent=False)                                  # [K, H]

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [B, S, H], attention_mask [B, S] (1 = token), position_ids [3, B, S] -> logits [B, K]."""
        seq = inputs_embeds.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=inputs_embeds.device).tril()      # [S, S]
        allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]                   # [B, 1, S, S]
        bias = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        bias = bias.masked_fill(~allowed, torch.finfo(inputs_embeds.dtype).min)  # finite: no NaN on padded rows
        hidden = self.language_model(inputs_embeds=inputs_embeds, attention_mask={"full_attention": bias},
                                     position_ids=position_ids, use_cache=False).last_hidden_state
        return hidden[:, -1] @ self.head.T                                                       # [B, K]


@torch.no_grad()
def embedded_inputs(model: nn.Module, inputs: dict[str, torch.Tensor]):
    """(inputs_embeds [B, S, H], attention_mask [B, S], position_ids [3, B, S]) on the model's device from
    left-padded processor outputs: token embeddings with the vision tower's image features merged in."""
    inner = model.model
    input_ids = inputs["input_ids"].to(model.device)
    embeds = inner.get_input_embeddings()(input_ids)                                        # [B, S, H]
    if inputs.get("pixel_values") is not None:
        features = inner.get_image_features(inputs["pixel_values"].to(model.device, model.dtype),
                                            inputs["image_grid_thw"].to(model.device), return_dict=True)
        image = torch.cat(features.pooler_output).to(embeds.dtype)                          # [image tokens, H]
        slots = (input_ids == model.config.image_token_id).unsqueeze(-1)                    # [B, S, 1]
        embeds = embeds.masked_scatter(slots, image)
    positions = prefix_cache.rope_positions(model, inputs).to(model.device)                 # [3, B, S]
    return embeds, inputs["attention_mask"].to(model.device), positions


def bucket_shape(batch: int, seq: int, max_batch: int, seq_step: int) -> tuple[int, int]:
    """The static (batch, seq) a batch is padded to: the next power of two (at most max_batch, else batch itself)
    and the next multiple of seq_step."""
    padded_batch = 1 << (batch - 1).bit_length()
    return (padded_batch if padded_batch <= max_batch else batch), -(-seq // seq_step) * seq_step


def pad_to_bucket(embeds, mask, positions, max_batch: int, seq_step: int):
    """Left-pads the sequence and appends copies of row 0 to fill the bucket; rows past the input's are dropped
    by the caller. Shapes as in ScoringForward.forward."""
    batch, seq = mask.shape
    to_batch, to_seq = bucket_shape(batch, seq, max_batch, seq_step)
    left, extra = to_seq - seq, to_batch - batch
    embeds = nn.functional.pad(embeds, (0, 0, left, 0))
    mask = nn.functional.pad(mask, (left, 0))
    positions = nn.functional.pad(positions, (left, 0))
    if extra:
        embeds = torch.cat([embeds, embeds[:1].expand(extra, -1, -1)])
        mask = torch.cat([mask, mask[:1].expand(extra, -1)])
        positions = torch.cat([positions, positions[:, :1].expand(-1, extra, -1)], dim=1)
    return embeds.contiguous(), mask.contiguous(), positions.contiguous()


class Scorer:
    """Calls the scoring forward on one batch; subclasses choose how it runs."""

    name = "eager"

    def __init__(self, forward: ScoringForward, max_batch: int = 8, seq_step: int = 64):
        self.forward, self.max_batch, self.seq_step = forward, max_batch, seq_step

    @torch.no_grad()
    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.forward(embeds, mask, positions)                                      # [B, K]

    def padded(self, run, embeds, mask, positions) -> torch.Tensor:
        batch = mask.shape[0]
        return run(*pad_to_bucket(embeds, mask, positions, self.max_batch, self.seq_step))[:batch]


class CompiledScorer(Scorer):
    """torch.compile with static shapes; mode defaults to "reduce-overhead" (CUDA graphs) on a GPU."""

    name = "compiled"

    def __init__(self, forward, max_batch=8, seq_step=64, *, mode: str | None = None, compile_backend="inductor"):
        super().__init__(forward, max_batch, seq_step)
        on_gpu = next(forward.parameters()).is_cuda
        self.mode = mode if mode is not None else ("reduce-overhead" if on_gpu else None)
        self.compiled = torch.compile(forward, mode=self.mode, dynamic=False, backend=compile_backend)

    @torch.no_grad()
    def __call__(self, embeds, mask, positions):
        return self.padded(lambda *args: self.compiled(*args).clone(), embeds, mask, positions)   # [B, K]


def export_onnx(forward: ScoringForward, path: str | os.PathLike, example: tuple[torch.Tensor, ...]) -> str:
    """Writes the scoring forward to `path` (ONNX; batch and sequence axes dynamic); returns the path."""
    require_module("onnx", "the onnx and tensorrt backends export with it (pip install onnx)")
    names = ("inputs_embeds", "attention_mask", "position_ids")
    axes = {"inputs_embeds": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "position_ids": {1: "batch", 2: "seq"}, "logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)    # shape checks traced at seq > 1, which holds
        torch.onnx.export(forward, example, os.fspath(path), input_names=list(names), output_names=["logits"],
                          dynamic_axes=axes, dynamo=False, opset_version=17)
    return os.fspath(path)


class OnnxScorer(Scorer):
    """The exported scoring forward in onnxruntime (CPU unless providers say otherwise)."""

    name = "onnx"

    def __init__(self, forward, max_batch=8, seq_step=64, *, path: str | os.PathLike | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        super().__init__(forward, max_batch, seq_step)
        ort = require_module("onnxruntime", "the onnx backend runs the exported model with it "
                                            "(pip install onnxruntime)")
        if forward.head.dtype != torch.float32:
            raise ValueError(f"the onnx backend runs float32 models, got {forward.head.dtype}")
        example = example_inputs(forward, seq_step)
        self.path = export_onnx(forward, path or scratch_file("scoring.onnx"), example)
        self.session = ort.InferenceSession(self.path, providers=list(providers))

    @torch.no_grad()
    def __call__(self, embeds, mask, positions):
        def run(e, m, p):
            feeds = {"inputs_embeds": e.float().cpu().numpy(), "attention_mask": m.long().cpu().numpy(),
                     "position_ids": p.long().cpu().numpy()}
            return torch.from_numpy(self.session.run(["logits"], feeds)[0]).to(embeds.device, embeds.dtype)
        return self.padded(run, embeds, mask, positions)                                  # [B, K]


def require_module(module: str, why: str):
    """The imported module, or BackendUnavailable naming it and why the backend needs it."""
    try:
        return importlib.import_module(module)
    except Exception as exc:                                    # ImportError, or a library that fails to load
        raise BackendUnavailable(f"the Python package {module!r} is not importable here ({type(exc).__name__}: "
                                 f"{exc}); {why}") from exc


def scratch_file(name: str) -> str:
    return os.path.join(tempfile.mkdtemp(prefix="editrl-scoring-"), name)


def example_inputs(forward: ScoringForward, seq: int) -> tuple[torch.Tensor, ...]:
    """A batch to trace the export with, in the model's dtype: embeds [2, S, H], mask [2, S], positions [3, 2, S]."""
    param = next(forward.parameters())
    hidden = forward.language_model.config.hidden_size
    positions = torch.arange(seq, device=param.device).expand(3, 2, seq).contiguous()
    return (torch.zeros(2, seq, hidden, dtype=param.dtype, device=param.device),
            torch.ones(2, seq, dtype=torch.long, device=param.device), positions)


def make_scorer(backend: str, model: nn.Module, token_ids: Sequence[int] | None = None, **options) -> Scorer:
    """A scorer of `backend` (SCORING_BACKENDS) for a Qwen2.5-VL model; options go to the scorer's constructor
    (max_batch, seq_step; compiled: mode, compile_backend; onnx: path, providers; tensorrt: path, workspace)."""
    if backend not in SCORING_BACKENDS:
        raise ValueError(f"unknown scoring backend {backend!r}; choose one of {', '.join(SCORING_BACKENDS)}")
    model_type = getattr(model.config, "model_type", "")
    if backend != "eager" and model_type != "qwen2_5_vl":
        # the exported forward merges image features into the embeddings only; Qwen3-VL also feeds "deepstack"
        # vision features into its first decoder layers, which this forward would silently drop
        raise BackendUnavailable(f"scoring backend {backend!r} supports Qwen2.5-VL models only, got model_type "
                                 f"{model_type!r}; use backend='eager'")
    if backend == "tensorrt":
        from .tensorrt_scorer import TensorRTScorer  # raises BackendUnavailable without it
        scorer_type = TensorRTScorer
    else:
        scorer_type = {"eager": Scorer, "compiled": CompiledScorer, "onnx": OnnxScorer}[backend]
    return scorer_type(ScoringForward(model, token_ids).eval(), **options)
