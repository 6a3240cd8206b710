"""editrl_engine: reinforcement learning of instruction-guided image editors with vision-language rewards.

`editrl_engine.ops` holds the fused RL ops (torch, triton and cpp backends); `info()` reports what this
installation can run. `editrl_engine.rerank` / `RerankResult` (Best-of-N reranking) import editrl_engine.serve on
first use, so importing the package stays light.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops  # noqa: E402


def info() -> str:
    """Version, the backends of the fused ops that can run here, and the torch / Triton / CUDA versions."""
    import torch

    from . import backends

    triton = backends.triton_module()
    lines = [
        f"editrl_engine {__version__}",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}; "
        f"{'a CUDA device: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'})",
        f"triton {triton.__version__ if triton else 'not installed'}",
        "backends:",
    ]
    lines += [f"  {name:7s} {status}" for name, status in backends.available().items()]
    return "\n".join(lines)


_LAZY = {"rerank": "serve", "RerankResult": "serve"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "info", "ops", "rerank", "RerankResult"]
