"""Scoring backends of the mllm_logit reward on the tiny Qwen2.5-VL in fp32: the scoring forward equals the full
model's last-position logits, bucket padding changes nothing, and the compiled and ONNX (onnxruntime) backends
give eager's logits and rewards; tensorrt is skipped with its reason where it cannot run."""
from __future__ import annotations

import pytest
import torch

from editrl_engine.backends import BackendUnavailable
from editrl_engine.reward import backends, load_reward

from .test_reward_mllm_logit import EDITED, INSTRUCTIONS, REQUIREMENTS, SOURCES


@pytest.fixture(scope="module")
def eager():
    return load_reward("mllm_logit", preset="tiny", batch_size=3)


@pytest.fixture(scope="module")
def batch(eager):
    """Processor outputs of 3 left-padded samples and eager's digit logits [3, 6] from the full model forward."""
    inputs = eager.inputs(SOURCES[:3], INSTRUCTIONS[:3], EDITED[:3], REQUIREMENTS[:3])
    return inputs, eager.answer_logits(inputs)[:, eager.digit_ids]


def test_the_scoring_forward_equals_the_full_forward(eager, batch):
    inputs, reference = batch
    embedded = backends.embedded_inputs(eager.vlm.model, inputs)
    digits = backends.make_scorer("eager", eager.vlm.model, eager.digit_ids)(*embedded)
    torch.testing.assert_close(digits, reference, rtol=1e-5, atol=1e-5)
    full = backends.make_scorer("eager", eager.vlm.model)(*embedded)                    # [B, V]
    torch.testing.assert_close(full, eager.answer_logits(inputs), rtol=1e-5, atol=1e-5)


def test_bucket_padding_changes_nothing(eager, batch):
    inputs, reference = batch
    embeds, mask, positions = backends.embedded_inputs(eager.vlm.model, inputs)
    padded = backends.pad_to_bucket(embeds, mask, positions, max_batch=8, seq_step=64)
    assert padded[0].shape[:2] == (4, -(-mask.shape[1] // 64) * 64) and padded[2].shape[:2] == (3, 4)
    forward = backends.ScoringForward(eager.vlm.model, eager.digit_ids)
    with torch.no_grad():
        torch.testing.assert_close(forward(*padded)[:3], reference, rtol=1e-5, atol=1e-5)
    assert backends.bucket_shape(5, 130, max_batch=8, seq_step=64) == (8, 192)
    assert backends.bucket_shape(9, 64, max_batch=8, seq_step=64) == (9, 64)


@pytest.mark.parametrize("backend, options", [
    ("compiled", {"compile_backend": "eager"}),        # inductor on the CPU takes ~20 s per bucket: see the report
    ("onnx", {}),
], ids=["compiled", "onnx"])
def test_backend_rewards_equal_eager(eager, batch, backend, options, tmp_path):
    if backend == "onnx":
        pytest.importorskip("onnxruntime", reason="the onnx backend runs in onnxruntime")
        options = {"path": tmp_path / "scoring.onnx"}
    reward = load_reward("mllm_logit", preset="tiny", batch_size=3, backend=backend, backend_options=options)
    inputs, reference = batch
    tol = 1e-5 if backend == "compiled" else 1e-4
    torch.testing.assert_close(reward.digit_logits(inputs), reference, rtol=tol, atol=tol)
    got = reward.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS)
    want = eager.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS)
    assert got.failures == 0 and reward.metadata()["backend"] == backend
    torch.testing.assert_close(got.reward, want.reward, rtol=0, atol=tol)
    if backend == "onnx":
        assert (tmp_path / "scoring.onnx").is_file()


def test_tensorrt_builds_an_engine_or_says_why_not(eager, batch):
    try:
        reward = load_reward("mllm_logit", preset="tiny", batch_size=3, backend="tensorrt")
    except BackendUnavailable as exc:
        assert "tensorrt" in str(exc) or "CUDA" in str(exc)
        pytest.skip(f"tensorrt backend unavailable: {exc}")
    inputs, reference = batch
    torch.testing.assert_close(reward.digit_logits(inputs).cpu(), reference, rtol=1e-3, atol=1e-3)


def test_unknown_scoring_backends_are_refused(eager):
    with pytest.raises(ValueError, match="unknown scoring backend 'bogus'"):
        backends.make_scorer("bogus", eager.vlm.model)


def test_compiled_backends_refuse_a_qwen3_vl_model():
    """Qwen3-VL feeds vision features into its first decoder layers, which the exported forward does not carry."""
    from editrl_engine import vlm

    qwen3 = vlm.load(preset="tiny", family="qwen3-vl")
    for backend in ("compiled", "onnx", "tensorrt"):
        with pytest.raises(BackendUnavailable, match="Qwen2.5-VL models only"):
            backends.make_scorer(backend, qwen3.model)
    assert backends.make_scorer("eager", qwen3.model) is not None
