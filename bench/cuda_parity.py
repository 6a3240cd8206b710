"""CUDA parity of the fused ops' Triton kernels: each op on CUDA tensors against the float64 torch reference.

The tests in tests/ run the Triton kernels on CPU tensors through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); tests/test_triton_gpu_split.py even fakes a small GPU's launch geometry there. None of them
runs a compiled kernel on a GPU. This module does, on a CUDA device, with the interpreter off:

    TRITON_INTERPRET=0 EDITRL_REQUIRE_BACKENDS=triton python -P -m pytest -q bench/cuda_parity.py

(bench/gpu_suite.py runs it in its pytest_cuda step). Without a CUDA device every case is skipped, or fails when
EDITRL_REQUIRE_BACKENDS names triton (so a GPU run cannot pass by skipping); under TRITON_INTERPRET=1 it is
skipped (the interpreter is not what this checks). It is no part of the CPU suite (pytest's testpaths is tests/).

Inputs are bench/kernel_cases.py's (the shapes bench/fused_ops.py times: FLUX latents at 512² and 1024², whose
rows the GPU launchers cut into several chunks; the per-sample ops at 288 and 4096 samples) plus a "ragged" size
(rows and sample counts that are no multiple of any block) in contiguous and strided layouts, float32 and
bfloat16, with a second variant of most ops (cps kind, no v_ref, valid masks, global std, missing rewards).
Forward outputs and the gradients of the differentiable inputs (random upstream gradients) are compared with
tests/helpers.py's tolerances; outputs a kernel never writes show as the sentinel of tests/helpers.poisoned().
"""
from __future__ import annotations

import importlib.util
import os
import sys
import zlib
from pathlib import Path

import pytest
import torch

from editrl_engine import backends, ops, reference

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda"   # what the kernels run on (a check of this harness may point it at the CPU interpreter)


def _load(name: str, path: Path):
    """A repository module by file path, under a private name (nothing added to sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


kernel_cases = _load("_cuda_parity_kernel_cases", ROOT / "bench" / "kernel_cases.py")
helpers = _load("_cuda_parity_helpers", ROOT / "tests" / "helpers.py")

# a size that is no multiple of any block: rows of 333 x 67 = 22 311 elements, 999 samples in 37 groups
kernel_cases.LATENTS.setdefault("ragged", (3, 333, 67))
kernel_cases.SAMPLES.setdefault("ragged", (999, 37))
LATENT_OPS = ("sde_step", "sde_logprob", "nft_loss", "cfg_combine")
DTYPES = (torch.float32, torch.bfloat16)


def _required() -> set[str]:
    return {n.strip() for n in os.environ.get("EDITRL_REQUIRE_BACKENDS", "").split(",") if n.strip()}


def _why_not_here() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device: the compiled Triton kernels cannot run here"
    if backends.triton_interpret():
        return "TRITON_INTERPRET is set: this checks the compiled kernels; run with TRITON_INTERPRET=0"
    return None


@pytest.fixture(autouse=True)
def _cuda_only():
    reason = _why_not_here()
    if reason is not None:
        if "triton" in _required():
            pytest.fail(f"EDITRL_REQUIRE_BACKENDS names triton, but {reason}")
        pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------------
# variants: (label, changes to the case's kwargs, a function that adjusts one input set)
# ---------------------------------------------------------------------------------------------------------
def _drop_v_ref(inputs: dict) -> None:
    inputs.pop("v_ref", None)


def _nft_valid(inputs: dict) -> None:
    batch = inputs["v"].shape[0]
    valid = torch.ones(batch, dtype=torch.bool, device=inputs["v"].device)
    valid[-1] = batch == 1
    inputs["valid"] = valid


def _missing_rewards(inputs: dict) -> None:
    rewards, index = inputs["rewards"], inputs["group_index"]
    rewards[index == 0] = float("nan")                 # a group with no finite reward: mean NaN, none valid
    rewards[::7] = float("nan")                         # scattered unparseable judge answers


def _away_from_the_clip(inputs: dict, clip: float) -> None:
    """Where the ratio lies within 1e-5 of a clip bound, float32 and float64 could decide the clip differently
    (a clipfrac off by 1/N, a gradient that is zero in one of them): those samples get ratio 1."""
    ratio = torch.exp(inputs["logp"].double() - inputs["logp_old"].double())
    near = ((ratio - (1 - clip)).abs() < 1e-5) | ((ratio - (1 + clip)).abs() < 1e-5)
    inputs["logp_old"] = torch.where(near, inputs["logp"], inputs["logp_old"])


VARIANTS = {
    "sde_step": [("flow_grpo", {}, None), ("cps", {"kind": "cps", "noise_level": 0.8}, None)],
    "sde_logprob": [("flow_grpo", {}, None), ("cps", {"kind": "cps", "noise_level": 0.8}, _drop_v_ref)],
    "nft_loss": [("default", {}, None), ("valid-beta0.7", {"beta": 0.7, "kl_beta": 0.2}, _nft_valid),
                 ("no-v_ref", {"kl_beta": 0.0}, _drop_v_ref)],
    "cfg_combine": [("norm", {}, None), ("plain", {"rescale": "none", "scale": 2.5}, None)],
    "group_advantages": [("group", {}, None), ("global-missing", {"std": "global"}, _missing_rewards)],
    "grpo_loss": [("default", {}, None)],
    "nft_optimality": [("default", {}, None)],
}


def _params():
    """Size-major, the benchmark shapes first: if a short GPU window ends the run early, every op has been
    checked at the shapes that matter most (and each kernel variant compiled once) before the ragged cases."""
    for size in ("1024", "512", "ragged", "quick"):
        for op, variants in VARIANTS.items():
            for label, changes, adjust in variants:
                dtypes = DTYPES if op in LATENT_OPS else (torch.float32,)
                layouts = ("contiguous", "strided") if size == "ragged" and op in LATENT_OPS else ("contiguous",)
                for dtype in dtypes:
                    for layout in layouts:
                        yield pytest.param(op, changes, adjust, size, dtype, layout,
                                           id=f"{op}-{label}-{size}-{str(dtype).removeprefix('torch.')}-{layout}")


# ---------------------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------------------
def _leaves(value, path="out"):
    """(path, tensor or None) for every leaf of an op's output: tensors, tuples, named tuples, dicts."""
    if value is None or torch.is_tensor(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key], f"{path}.{key}")]
    if isinstance(value, (tuple, list)):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, f"{path}[{i}]")]
    return [(path, torch.as_tensor(value, dtype=torch.float64))]


def _compare(actual, expected, case_dtype: torch.dtype, what: str, relative: bool = False) -> None:
    """Leaf by leaf: integers and masks equal, floats within tests/helpers.py's tolerance for the case's dtype
    ("latent" for a bf16 result, else "stat"), whose atol is relative to max(1, max|expected|). relative=True
    (gradients: elementwise, each of the size 1/numel) drops that floor of 1, so a gradient of values far below
    1 is compared at its own scale: a wrong (or zero) gradient cannot pass as "close to 0"."""
    got, want = _leaves(actual, what), _leaves(expected, what)
    assert [p for p, _ in got] == [p for p, _ in want], f"output structure {got} != {want}"
    for (path, a), (_, e) in zip(got, want):
        if a is None or e is None:
            assert a is None and e is None, f"{path}: {a!r} vs {e!r}"
            continue
        assert a.device.type == DEVICE or a.dim() == 0, f"{path}: on {a.device}"
        if not a.is_floating_point():
            assert torch.equal(a.cpu(), e.cpu()), f"{path}: {a} != {e}"
            continue
        kind = "latent" if a.dtype in (torch.bfloat16, torch.float16) else "stat"
        atol = None
        if relative:
            finite = e[torch.isfinite(e)].abs()
            peak = float(finite.max()) if finite.numel() else 0.0
            atol = helpers.TOLERANCES[(case_dtype, kind)][1] * min(1.0, peak)   # helpers multiplies by max(1, peak)
        helpers.assert_close(a.cpu(), e.cpu(), case_dtype, kind, path, atol=atol)


def _synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _strided(t: torch.Tensor) -> torch.Tensor:
    """t's values with the last two dimensions stored transposed (a non-contiguous view)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else t


@pytest.mark.parametrize("op, changes, adjust, size, dtype, layout", list(_params()))
def test_triton_on_cuda_matches_the_float64_reference(op, changes, adjust, size, dtype, layout, request):
    case = kernel_cases.CASES[op](size, dtype)
    kwargs = {**case.kwargs, **changes}
    gen = torch.Generator(device=DEVICE).manual_seed(zlib.crc32(request.node.nodeid.encode()))
    inputs = case.make_inputs(gen)
    if adjust is not None:
        adjust(inputs)
    if op == "grpo_loss":
        _away_from_the_clip(inputs, kwargs["clip_range"])
    if layout == "strided":
        inputs = {name: _strided(t) if t.dim() == 3 else t for name, t in inputs.items()}
        assert any(not t.is_contiguous() for t in inputs.values())
    grad_inputs = [name for name in case.grad_inputs if name in inputs]

    fused_in = {name: t.detach().requires_grad_() if name in grad_inputs else t for name, t in inputs.items()}
    ref_in = {name: (helpers.f64(t).requires_grad_() if name in grad_inputs else helpers.f64(t))
              for name, t in inputs.items()}
    with helpers.poisoned():
        out = getattr(ops, op)(**fused_in, **kwargs, backend="triton")
    _synchronize()
    expected = getattr(reference, op)(**ref_in, **kwargs)
    _compare(out, expected, case.dtype, op)

    if grad_inputs:
        pairs = [(o, r) for o, r in zip(case.differentiable(out), case.differentiable(expected)) if o is not None]
        outs, ref_outs = [o for o, _ in pairs], [r for _, r in pairs]       # (cps has no kl)
        upstream = [torch.randn(o.shape, generator=gen, device=DEVICE, dtype=torch.float32) for o in outs]
        with helpers.poisoned():
            grads = torch.autograd.grad(outs, [fused_in[n] for n in grad_inputs],
                                        [u.to(o.dtype) for u, o in zip(upstream, outs)])
        _synchronize()
        ref_grads = torch.autograd.grad(ref_outs, [ref_in[n] for n in grad_inputs],
                                        [u.to(o.dtype).double() for u, o in zip(upstream, outs)])
        for name, got, want in zip(grad_inputs, grads, ref_grads):
            assert got.dtype == inputs[name].dtype and got.shape == inputs[name].shape, name
            _compare(got, want, case.dtype, f"{op} grad {name}", relative=True)
