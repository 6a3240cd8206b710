"""Which implementation of the fused ops runs: torch (reference), triton (kernels/) or cpp (csrc/ via _C).

`backend=None` reads EDITRL_BACKEND, else picks triton for CUDA tensors and cpp for CPU tensors. Asking for
a backend that cannot run raises BackendUnavailable naming what is missing and how to get it.
"""
from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "cpp")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


@functools.lru_cache(maxsize=None)
def _import_reason(module: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # ImportError, or an extension that fails to load
        return None, f"{type(exc).__name__}: {exc}"


def triton_interpret() -> bool:
    """True when Triton runs kernels on CPU tensors through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_module() -> ModuleType | None:
    return _import_reason("triton")[0]


def cpp_module() -> ModuleType | None:
    """The compiled extension `editrl_engine._C`, or None when it is not built."""
    return _import_reason("editrl_engine._C")[0]


def launchers(backend: str) -> ModuleType:
    """The launcher module of a compiled backend (see editrl_engine.autograd for the protocol)."""
    if backend == "triton":
        if triton_module() is None:
            raise BackendUnavailable(
                f"backend 'triton' needs the triton package ({_import_reason('triton')[1]}); "
                "install it with `pip install triton`, or use backend='torch' or 'cpp'")
        module = "editrl_engine.triton_launchers"
    elif backend == "cpp":
        if cpp_module() is None:
            raise BackendUnavailable(
                "backend 'cpp' needs the compiled extension editrl_engine._C "
                f"({_import_reason('editrl_engine._C')[1]}); build it with `pip install -e .` "
                "(needs a C++17 compiler and CMake), or use backend='torch'")
        module = "editrl_engine.cpp_launchers"
    else:
        raise ValueError(f"no launchers for backend {backend!r}")
    launcher_module, reason = _import_reason(module)
    if launcher_module is None:
        raise BackendUnavailable(f"backend {backend!r}: its launchers {module} failed to import ({reason}); "
                                 "reinstall the package, or use backend='torch'")
    return launcher_module


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend to run on tensors living on `device`; raises if it cannot run there."""
    chosen = backend or os.environ.get("EDITRL_BACKEND") or ("triton" if device.type == "cuda" else "cpp")
    if chosen not in BACKENDS:
        source = "backend=" if backend else "EDITRL_BACKEND="
        raise ValueError(f"{source}{chosen!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    if chosen == "triton" and device.type != "cuda" and not triton_interpret():
        raise BackendUnavailable(
            f"backend 'triton' got {device.type} tensors: Triton runs on CUDA tensors, or on CPU tensors only "
            "under TRITON_INTERPRET=1 (set it before importing triton); or use backend='cpp' or 'torch'")
    if chosen == "cpp" and device.type != "cpu":
        raise BackendUnavailable(f"backend 'cpp' runs on CPU tensors, got {device.type} tensors; "
                                 "use backend='triton' or 'torch'")
    if chosen != "torch":
        launchers(chosen)  # raises with the reason when it cannot be imported
    return chosen


def available() -> dict[str, str]:
    """Each backend with a one-line status ('ok: ...' or 'missing: ...'), for editrl_engine.info()."""
    status = {"torch": f"ok: torch {torch.__version__}"}
    triton = triton_module()
    if triton is None:
        status["triton"] = f"missing: {_import_reason('triton')[1]}"
    else:
        where = ["cuda"] if torch.cuda.is_available() else []
        if triton_interpret():
            where.append("cpu (TRITON_INTERPRET=1)")
        status["triton"] = f"ok: triton {triton.__version__} on {', '.join(where)}" if where else (
            f"installed (triton {triton.__version__}) but no CUDA device; set TRITON_INTERPRET=1 to run on CPU")
    cpp = cpp_module()
    if cpp is None:
        status["cpp"] = f"missing: {_import_reason('editrl_engine._C')[1]}"
    else:
        status["cpp"] = f"ok: {cpp.build_info()}"
    return status
