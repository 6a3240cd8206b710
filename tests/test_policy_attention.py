"""Attention backend selection: what runs here is probed (not assumed), the choice is applied to every attention
processor and recorded; what cannot run is skipped with its reason."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from editrl_engine.policy import attention, load_policy

CPU_SHAPE = dict(device="cpu", batch=1, seq_len=48, heads=2, head_dim=16)


def test_auto_picks_the_fastest_backend_that_runs():
    choice = attention.select_backend("auto", **CPU_SHAPE)
    assert choice.backend in choice.timings_ms
    assert choice.timings_ms[choice.backend] == min(choice.timings_ms.values())
    assert set(choice.timings_ms) | set(choice.skipped) == set(attention.AUTO_CANDIDATES)
    assert "math" in choice.timings_ms                              # the math kernel runs everywhere
    assert all(isinstance(reason, str) and reason for reason in choice.skipped.values())
    record = choice.as_dict()
    assert record["backend"] == choice.backend and record["probe"]["seq_len"] == 48


def test_cpu_has_no_cuda_kernels():
    choice = attention.select_backend("auto", **CPU_SHAPE)
    assert {"cudnn", "efficient"} <= set(choice.skipped)            # CUDA-only SDPA kernels
    with pytest.raises(RuntimeError, match="cudnn"):
        attention.select_backend("cudnn", **CPU_SHAPE)


def test_flash_attn_package_is_probed_not_assumed():
    choice = attention.select_backend("auto", **CPU_SHAPE)
    if importlib.util.find_spec("flash_attn") is None:
        assert choice.skipped["flash-attn"] == "the flash-attn package is not installed"
    else:
        assert "flash-attn" in choice.timings_ms or choice.skipped["flash-attn"]


def test_a_mask_rules_out_kernels_that_take_none():
    choice = attention.select_backend("auto", mask=True, dtype=torch.bfloat16, **CPU_SHAPE)
    assert "flash" in choice.skipped and "mask" in choice.skipped["flash"]
    assert choice.backend in choice.timings_ms


def test_every_usable_backend_agrees_with_math():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 40, 2, 16, generator=generator) for _ in range(3))
    reference = attention.attend("math", q, k, v, None)
    usable = [name for name in attention.BACKENDS if attention.unavailable_reason(name, q, k, v) is None]
    assert "math" in usable and "sdpa" in usable
    for name in usable:
        torch.testing.assert_close(attention.attend(name, q, k, v, None), reference, rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention.select_backend("xformers", **CPU_SHAPE)


def test_policy_applies_and_records_the_choice():
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
    default_before = _AttentionBackendRegistry._active_backend
    policy = load_policy("flux-kontext", preset="tiny", attention="math")
    assert policy.attention_backend == "math"
    processors = [m.processor for m in policy.transformer.modules() if hasattr(m, "processor")]
    assert processors and all(p._attention_backend == AttentionBackendName._NATIVE_MATH for p in processors)
    assert _AttentionBackendRegistry._active_backend == default_before  # diffusers' process default untouched
    meta = policy.metadata()
    assert meta["attention"] == "math" and meta["attention_probe"]["requested"] == "math"
    text, image = policy.components.max_sequence_length, 2 * 8 * 8   # T5 tokens + target and source tokens
    assert meta["attention_probe"]["probe"]["seq_len"] == text + image


def test_auto_on_the_policy_gives_the_same_velocity_as_math():
    auto = load_policy("flux-kontext", preset="tiny", attention="auto")
    math = load_policy("flux-kontext", preset="tiny", attention="math")
    assert auto.metadata()["attention_probe"]["requested"] == "auto"
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cond = auto.encode([image], ["make it red"])
    x = torch.randn(1, *cond.latent_shape)
    torch.testing.assert_close(auto.velocity(x, torch.tensor([0.5]), cond),
                               math.velocity(x, torch.tensor([0.5]), cond), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU kernels cannot be probed here")
def test_auto_on_cuda_bf16_picks_a_fused_kernel():
    choice = attention.select_backend("auto", device="cuda", dtype=torch.bfloat16, batch=1, seq_len=1024, heads=8,
                                      head_dim=128)
    assert choice.backend != "math"
    assert {"flash", "efficient", "math"} <= set(choice.timings_ms)


def test_applying_a_backend_drops_only_diffusers_experimental_notice():
    """set_attention_backend logs "Attention backends are an experimental feature ..." on every call; apply_backend
    drops exactly that record of exactly that logger, during the call, and nothing else."""
    import logging

    from diffusers.models import modeling_utils
    logger = logging.getLogger(modeling_utils.__name__)
    notice = "Attention backends are an experimental feature and the API may be subject to change."
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler, filters = Collect(level=logging.DEBUG), list(logger.filters)
    logger.addHandler(handler)
    try:
        with attention._without_experimental_notice():
            logger.warning(notice)
            logger.warning("another warning of the same logger")
        assert seen == ["another warning of the same logger"]
        logger.warning(notice)                                         # outside the call it is diffusers' again
        assert seen[-1] == notice and logger.filters == filters
        seen.clear()
        policy = load_policy("qwen-image-edit", preset="tiny", attention="math")   # legacy Attention modules
        attention.apply_backend(policy.transformer, "sdpa")
        assert seen == [] and logger.filters == filters
    finally:
        logger.removeHandler(handler)
