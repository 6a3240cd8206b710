"""The tensorrt scoring backend: a TensorRT engine built from the ONNX export of the scoring forward, run on CUDA
tensors. Importing this module raises BackendUnavailable where the `tensorrt` package or a GPU is missing.

One optimisation profile covers batch 1..max_batch and sequence seq_step..max_seq; batches are padded to the
same buckets as the other static backends (backends.pad_to_bucket).
"""
from __future__ import annotations

import os

import torch

from .backends import BackendUnavailable, Scorer, example_inputs, export_onnx, require_module, scratch_file

trt = require_module("tensorrt", "the tensorrt backend builds its engine with it "
                                "(NVIDIA TensorRT: pip install tensorrt, on a CUDA machine)")
if not torch.cuda.is_available():
    raise BackendUnavailable("the tensorrt backend needs a CUDA GPU, and torch sees none here")

INPUTS = ("inputs_embeds", "attention_mask", "position_ids")


def build_engine(onnx_path: str | os.PathLike, hidden: int, max_batch: int, seq_step: int, max_seq: int,
                 fp16: bool = False, workspace: int = 4 << 30) -> bytes:
    """A serialized engine for the ONNX scoring forward, with one profile over (batch, seq) as above."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shapes = {"inputs_embeds": lambda b, s: (b, s, hidden), "attention_mask": lambda b, s: (b, s),
              "position_ids": lambda b, s: (3, b, s)}
    for name, shape in shapes.items():
        profile.set_shape(name, shape(1, seq_step), shape(max_batch, seq_step), shape(max_batch, max_seq))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(engine)


class TensorRTScorer(Scorer):
    """The engine in the model's dtype (fp16=True lets TensorRT pick half-precision kernels too)."""

    name = "tensorrt"

    def __init__(self, forward, max_batch=8, seq_step=64, *, max_seq: int = 4096, path=None, fp16: bool = False):
        super().__init__(forward, max_batch, seq_step)
        example = example_inputs(forward, seq_step)
        onnx_path = export_onnx(forward, path or scratch_file("scoring.onnx"), example)
        hidden = forward.language_model.config.hidden_size
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
            build_engine(onnx_path, hidden, max_batch, seq_step, max_seq, fp16))
        self.context = self.engine.create_execution_context()
        self.outputs, self.dtype = forward.head.shape[0], forward.head.dtype

    @torch.no_grad()
    def __call__(self, embeds, mask, positions):
        def run(e, m, p):
            stream = torch.cuda.current_stream()
            feeds = dict(zip(INPUTS, (e.to("cuda", self.dtype).contiguous(), m.long().cuda().contiguous(),
                                      p.long().cuda().contiguous())))
            logits = torch.empty(e.shape[0], self.outputs, dtype=self.dtype, device="cuda")      # [B, K]
            for name, tensor in feeds.items():
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            self.context.set_tensor_address("logits", logits.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            return logits.to(embeds.device, embeds.dtype)
        return self.padded(run, embeds, mask, positions)
