"""`editrl demo` end to end at a tiny size: the run folder's files, and the held-out numbers it reports (the reward,
and the object-level rates it prints) equal an independent evaluation of the warm-up and of the trained LoRA (the
test's own sampler call, the programmatic verifier for the reward, and object checks written in
tests/demo_reference.py for the rates)."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from editrl_engine.engine.config import load_config
from editrl_engine.engine.demo import pretrain
from editrl_engine.engine.demo import task as demo_task
from editrl_engine.engine.demo.run import run_demo

from . import demo_reference as evaluate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_demo([f"run.out_dir='{out}'", "run.steps=2", "data.eval_tasks=4", "sampling.groups_per_step=2",
                           "sampling.group_size=2", "log.progress=false", "log.tensorboard=false",
                           "log.image_every=1"])
    return out, result, printed.getvalue()


def test_demo_writes_its_run_folder(demo):
    out, result, _ = demo
    for name in ("metrics.jsonl", "reward_curve.png", "before_after.png", "summary.json", "config.toml",
                 "lora/pytorch_lora_weights.safetensors", "images/candidates-000000.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == result
    from diffusers import FluxKontextPipeline
    state = FluxKontextPipeline.lora_state_dict(str(out / "lora"))
    state = state[0] if isinstance(state, tuple) else state
    assert state and all(k.startswith("transformer.") for k in state)


def test_demo_numbers_match_an_independent_evaluation(demo):
    out, result, _ = demo
    tasks = list(demo_task.heldout_tasks())[:4]
    policy = pretrain.load_demo_policy()
    policy.set_attention(load_config("demo").policy.attention)     # the run's kernel: another one moves pixels
    before = evaluate.heldout_rewards(policy, tasks)                        # [4], the warm-up
    assert result["reward_before"] == pytest.approx(before.mean().item(), abs=1e-6)
    policy.transformer.load_lora_adapter(str(out / "lora"), adapter_name="default", prefix="transformer",
                                          weight_name="pytorch_lora_weights.safetensors")
    after = evaluate.heldout_rewards(policy, tasks)
    assert result["reward_after"] == pytest.approx(after.mean().item(), abs=1e-6)
    assert torch.isfinite(before).all() and torch.isfinite(after).all()


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def test_demo_object_rates_match_an_independent_check(demo):
    out, result, printed = demo
    tasks = list(demo_task.heldout_tasks())[:4]
    policy = pretrain.load_demo_policy()
    policy.set_attention(load_config("demo").policy.attention)
    before = evaluate.object_rates(tasks, evaluate.sample_edits(policy, tasks))
    policy.transformer.load_lora_adapter(str(out / "lora"), adapter_name="default", prefix="transformer",
                                          weight_name="pytorch_lora_weights.safetensors")
    after = evaluate.object_rates(tasks, evaluate.sample_edits(policy, tasks))
    assert before["two_shapes"] >= 2 and before["one_shape"] >= 1          # both kinds of task are measured
    for key, value in before.items():
        assert result["rates_before"][key] == pytest.approx(value), key
        assert result["rates_after"][key] == pytest.approx(after[key]), key
    line = (f"named shape removed {_percent(before['named_removed_two_shapes'])} -> "
            f"{_percent(after['named_removed_two_shapes'])}, other shape kept "
            f"{_percent(before['other_kept_two_shapes'])} -> {_percent(after['other_kept_two_shapes'])}")
    assert line in printed
    assert f"shape removed {_percent(before['named_removed_one_shape'])} -> " \
           f"{_percent(after['named_removed_one_shape'])}" in printed
