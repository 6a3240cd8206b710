"""Shared fixtures: the `backend` parametrisation (torch | triton | cpp) and a per-test seeded generator.

TRITON_INTERPRET must be set before anything imports triton (the kernels are decorated at import time), so
this file sets it first. A backend that cannot run is skipped with the reason, unless EDITRL_REQUIRE_BACKENDS
(comma list, e.g. "triton,cpp") names it: then its absence fails the test, so a missing build cannot hide
behind skips in CI.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import zlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from editrl_engine import backends  # noqa: E402

BACKENDS = ("torch", "triton", "cpp")

# public op -> the launcher functions it needs (editrl_engine.autograd documents the protocol)
LAUNCHER_FNS = {
    "group_advantages": ("group_advantages",),
    "sde_step": ("sde_step",),
    "sde_logprob": ("sde_logprob_forward", "sde_logprob_backward"),
    "grpo_loss": ("grpo_loss_forward", "grpo_loss_backward"),
    "nft_loss": ("nft_loss_forward", "nft_loss_backward"),
    "nft_optimality": ("nft_optimality",),
    "cfg_combine": ("cfg_combine_forward", "cfg_combine_backward"),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "ops(*names): the public ops a test runs; the backend fixture checks that "
                                       "the chosen backend implements them")
    # Triton's interpreter evaluates masked-off lanes with numpy too (0 / 0 in a padded tail, log of the unused
    # s = 0 at noise_level 0); numpy's floating-point warnings there say nothing about the results we check.
    config.addinivalue_line("filterwarnings", "ignore::RuntimeWarning:triton.runtime.interpreter")
    unknown = required_backends() - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"EDITRL_REQUIRE_BACKENDS names unknown backends {sorted(unknown)}; "
                                f"choose from {BACKENDS}")


def required_backends() -> set[str]:
    return {name.strip() for name in os.environ.get("EDITRL_REQUIRE_BACKENDS", "").split(",") if name.strip()}


def unavailable_reason(name: str, ops=()) -> str | None:
    """Why backend `name` cannot run the given public ops on CPU tensors here, or None when it can."""
    if name == "torch":
        return None
    try:
        backends.resolve(name, torch.device("cpu"))
        module = backends.launchers(name)
    except (backends.BackendUnavailable, ImportError) as exc:
        return f"backend {name!r} unavailable: {type(exc).__name__}: {exc}"
    missing = [fn for op in ops for fn in LAUNCHER_FNS[op] if not callable(getattr(module, fn, None))]
    if missing:
        return f"backend {name!r}: {module.__name__} does not define {', '.join(missing)}"
    return None


def require_backend(name: str, *ops: str) -> str:
    """Skip (or, when EDITRL_REQUIRE_BACKENDS names it, fail) unless backend `name` can run `ops`."""
    reason = unavailable_reason(name, ops)
    if reason is not None:
        if name in required_backends():
            pytest.fail(f"EDITRL_REQUIRE_BACKENDS requires it, but {reason}")
        pytest.skip(reason)
    return name


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn, after checking it implements the ops named by the test's `ops` markers."""
    ops = [op for marker in request.node.iter_markers("ops") for op in marker.args]
    return require_backend(request.param, *ops)


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded from the test id: reproducible, and a different draw for every parametrisation."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))
