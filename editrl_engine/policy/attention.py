"""The attention implementation of a run: probe which backends run a shape here, time them, apply one.

    choice = select_backend("auto", device=dev, dtype=torch.bfloat16, batch=1, seq_len=4608, heads=24, head_dim=128)
    apply_backend(transformer, choice.backend)        # every attention processor of a diffusers transformer
    choice.as_dict()                                  # what the run records: chosen, timings, skipped with reasons

Backends: PyTorch SDPA restricted to one kernel ("flash", "cudnn", "efficient", "math"), SDPA left to choose
("sdpa"), or the flash-attn package ("flash-attn"). They are applied through diffusers' attention dispatcher, so
the kernel is part of the module's code and gradient-checkpoint recomputation runs the same one. A backend that
cannot run here (no kernel for the device, dtype or mask; package missing) is skipped with PyTorch's own reason;
one that runs but disagrees with the math kernel is skipped too. Nothing is assumed from a datasheet.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

# our name -> diffusers AttentionBackendName value
DIFFUSERS_NAMES = {
    "flash": "_native_flash",
    "cudnn": "_native_cudnn",
    "efficient": "_native_efficient",
    "math": "_native_math",
    "sdpa": "native",
    "flash-attn": "flash",
}
BACKENDS = tuple(DIFFUSERS_NAMES)
AUTO_CANDIDATES = ("flash-attn", "cudnn", "flash", "efficient", "math")   # "sdpa" only when asked for by name


@dataclasses.dataclass
class AttentionChoice:
    """The backend a run uses and how it was chosen (recorded in the policy's metadata)."""
    backend: str
    requested: str
    timings_ms: dict[str, float]          # median forward time per backend that ran the probe
    skipped: dict[str, str]               # backend -> why it cannot run here
    probe: dict[str, Any]                 # the shape, dtype, device and mask the probe used

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def attend(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
           ) -> torch.Tensor:
    """Attention through diffusers' dispatcher with one backend: q, k, v [B, S, H, D] -> [B, S, H, D]."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
    return dispatch_attention_fn(q, k, v, attn_mask=mask, backend=AttentionBackendName(DIFFUSERS_NAMES[backend]))


def unavailable_reason(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> str | None:
    """Why `backend` cannot run attention on q, k, v [B, S, H, D] (+ mask), or None when it runs (and its first
    R query rows match `reference` [B, R, H, D] when given)."""
    if backend not in DIFFUSERS_NAMES:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'")
    if backend == "flash-attn":
        if importlib.util.find_spec("flash_attn") is None:
            return "the flash-attn package is not installed"
        if mask is not None:
            return "flash-attn takes no attention mask"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # SDPA warns about every kernel it rules out, then raises
            out = attend(backend, q, k, v, mask)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if not torch.isfinite(out).all():
        return "produced non-finite values"
    if reference is not None:
        tolerance = 5e-3 if q.dtype == torch.float32 else 5e-2     # a broken kernel, not TF32 / bf16 rounding
        error = (out[:, :reference.shape[1]].float() - reference.float()).abs().max().item()
        if error > tolerance:
            return f"disagrees with the math kernel by {error:.3g} (tolerance {tolerance:g})"
    return None


def _median_ms(backend: str, q, k, v, mask, repeats: int) -> float:
    sync = torch.cuda.synchronize if q.device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats + 1):                      # the first call warms up and is dropped
        sync()
        start = time.perf_counter()
        attend(backend, q, k, v, mask)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times[1:])[len(times[1:]) // 2]


def select_backend(requested: str = "auto", *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, batch: int = 1, seq_len: int = 256, heads: int = 2,
                   head_dim: int = 64, mask: bool = False, repeats: int = 3) -> AttentionChoice:
    """Probe the backends on a [batch, seq_len, heads, head_dim] attention and pick one.

    "auto": the fastest of those that run and agree with the math kernel. A named backend: that one, or a
    RuntimeError with the reason it cannot run here."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, seq_len, heads, head_dim, device=device, dtype=dtype, generator=generator)
               for _ in range(3))
    attn_mask = torch.ones(batch, 1, seq_len, seq_len, device=device, dtype=torch.bool) if mask else None
    if attn_mask is not None:
        attn_mask[..., seq_len // 2:] = False          # a mask that actually masks something
    probe = {"batch": batch, "seq_len": seq_len, "heads": heads, "head_dim": head_dim,
             "dtype": str(dtype).removeprefix("torch."), "device": str(device), "mask": mask}
    with torch.no_grad():
        rows = min(seq_len, 256)           # float32 math on the first query rows: a reference in little memory
        reference = attend("math", q[:, :rows].float(), k.float(), v.float(),
                           None if attn_mask is None else attn_mask[:, :, :rows])
        candidates = AUTO_CANDIDATES if requested == "auto" else (requested,)
        skipped = {name: reason for name in candidates
                   if (reason := unavailable_reason(name, q, k, v, attn_mask, reference)) is not None}
        usable = [name for name in candidates if name not in skipped]
        if not usable:
            raise RuntimeError(f"attention backend {requested!r} cannot run here ({probe}): {skipped}")
        timings = {name: _median_ms(name, q, k, v, attn_mask, repeats) for name in usable}
    chosen = min(timings, key=timings.get)
    return AttentionChoice(backend=chosen, requested=requested, timings_ms=timings, skipped=skipped, probe=probe)


class _DropRecords(logging.Filter):
    """A logging filter that drops the records whose message matches `pattern` and passes every other one."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


@contextlib.contextmanager
def _without_experimental_notice() -> Iterator[None]:
    """Within the block, diffusers' "Attention backends are an experimental feature ..." notice is not logged.

    ModelMixin.set_attention_backend logs it on every call, unconditionally, and it is the only public way to route
    a whole transformer: Qwen-Image's attention modules (the legacy `Attention` class) have no per-module setter,
    and writing their processors' private `_attention_backend` would skip the backend checks diffusers makes. So
    the project cannot avoid the notice; it drops exactly that record, on the logger that emits it, for this call;
    every other record of that logger (and the errors the checks raise) still comes through."""
    from diffusers.models import modeling_utils
    logger = logging.getLogger(modeling_utils.__name__)
    notice = _DropRecords(r"Attention backends are an experimental feature and the API may be subject to change")
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def apply_backend(transformer: torch.nn.Module, backend: str) -> None:
    """Route every attention processor of a diffusers transformer through `backend`.

    diffusers' set_attention_backend also changes its process-wide default; the surrounding
    `attention_backend()` context restores that default, so only this transformer changes."""
    from diffusers.models.attention_dispatch import attention_backend
    if backend not in DIFFUSERS_NAMES:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    with attention_backend(), _without_experimental_notice():
        transformer.set_attention_backend(DIFFUSERS_NAMES[backend])


__all__ = ["AUTO_CANDIDATES", "AttentionChoice", "BACKENDS", "apply_backend", "attend", "select_backend",
           "unavailable_reason"]
