"""`editrl rerank` and `editrl serve` through their parsers (add_rerank / add_serve on a bare argparse harness):
the written best image, contact sheet and JSON agree with an independent score of the saved candidates, the
programmatic reward reads its tasks from a manifest, and user errors name the problem and the fix."""
from __future__ import annotations

import argparse
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.cli_serve import add_rerank, add_serve
from editrl_engine.data import read_manifest, write_synthetic
from editrl_engine.reward.programmatic import ProgrammaticReward
from editrl_engine.serve import BackgroundServer, runner

from .serve_fakes import noisy, tiny_judge


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="editrl")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_rerank(subparsers)
    add_serve(subparsers)
    return parser.parse_args(list(argv))


def run(*argv: str) -> None:
    args = parse(*argv)
    args.run(args)


def pixels(path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)   # uint8 [3, H, W]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source.png"
    noisy(11, 32).save(path)
    return path


def test_rerank_writes_best_sheet_and_json(tmp_path, source, capsys):
    out = tmp_path / "out"
    run("rerank", "--policy", "tiny", "--reward", "mllm_logit", "--reward-preset", "tiny", "--n", "4", "--steps", "2",
        "--seed", "3", "--save-candidates", "--out", str(out), str(source), "make it blue")
    result = json.loads((out / "result.json").read_text())
    assert result["n"] == 4 and result["group_path"] and result["error"] is None
    assert [c["seed"] for c in result["candidates"]] == [3, 4, 5, 6]
    candidates = [pixels(out / name) for name in result["files"]["candidates"]]
    with Image.open(source) as image:
        reference = tiny_judge().score([image.convert("RGB")] * 4, ["make it blue"] * 4,
                                                                   candidates).reward
    assert [c["reward"] for c in result["candidates"]] == pytest.approx(reference.tolist(), abs=1e-5)
    assert result["best_reward"] == pytest.approx(float(reference.max()), abs=1e-5)
    assert torch.equal(pixels(out / "best.png"), candidates[result["best_index"]])
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 2 * 32 and sheet.height > 2 * 32
    assert "<- best" in capsys.readouterr().out


def test_rerank_offers_every_policy_family():
    from editrl_engine.cli_serve import FAMILIES
    from editrl_engine.policy import FAMILIES as POLICY_FAMILIES
    assert set(FAMILIES) == set(POLICY_FAMILIES)


@pytest.mark.parametrize("family", ["qwen-image-edit", "qwen-image-edit-plus", "flux2"])
def test_rerank_works_with_each_family(tmp_path, source, family):
    if family == "flux2":                                  # FLUX.2's image processor takes 64 pixels a side or more
        source = tmp_path / "source64.png"
        noisy(11, 64).save(source)
    out = tmp_path / "out"
    run("rerank", "--policy", "tiny", "--family", family, "--reward", "mllm_logit", "--reward-preset", "tiny",
        "--n", "2", "--steps", "2", "--seed", "5", "--save-candidates", "--out", str(out), str(source), "make it red")
    result = json.loads((out / "result.json").read_text())
    candidates = [pixels(out / name) for name in result["files"]["candidates"]]
    with Image.open(source) as image:
        reference = tiny_judge().score([image.convert("RGB")] * 2, ["make it red"] * 2, candidates).reward
    assert result["n"] == 2 and result["error"] is None
    assert [c["reward"] for c in result["candidates"]] == pytest.approx(reference.tolist(), abs=1e-5)
    assert torch.equal(pixels(out / "best.png"), candidates[int(reference.argmax())])


def test_rerank_with_the_programmatic_reward_from_a_manifest(tmp_path):
    manifest = write_synthetic(tmp_path / "tasks", n=1, seed=2, size=32)
    row = read_manifest(manifest)[0]
    out = tmp_path / "out"
    run("rerank", "--policy", "tiny", "--reward", f"programmatic:{manifest}", "--n", "2", "--steps", "1",
        "--save-candidates", "--out", str(out), str(row.source), row.instruction)
    result = json.loads((out / "result.json").read_text())
    candidates = [pixels(out / name) for name in result["files"]["candidates"]]
    expected = ProgrammaticReward(read_manifest(manifest)).score([pixels(row.source)] * 2, [row.instruction] * 2,
                                                                  candidates).reward
    assert [c["reward"] for c in result["candidates"]] == expected.tolist() and not result["group_path"]


def test_rerank_demo_editor_on_a_demo_task(tmp_path, capsys):
    from editrl_engine.engine.demo import task as demo_task
    task = demo_task.task(demo_task.HELDOUT_SEED, 3)
    out = tmp_path / "out"
    run("rerank", "--policy", "demo", "--task", f"{demo_task.HELDOUT_SEED}:3", "--n", "3", "--save-candidates",
        "--out", str(out))
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == task.to_spec() and result["instruction"] == task.instruction
    assert result["num_steps"] == demo_task.EVAL_STEPS
    assert torch.equal(pixels(out / "source.png"), task.source_image())
    assert torch.equal(pixels(out / "target.png"), task.target_image())
    candidates = [pixels(out / name) for name in result["files"]["candidates"]]
    expected = ProgrammaticReward().score([task.source_image()] * 3, [task.instruction] * 3, candidates,
                                          tasks=[task] * 3)
    assert [c["reward"] for c in result["candidates"]] == pytest.approx(expected.reward.tolist(), abs=1e-6)
    assert torch.equal(pixels(out / "best.png"), candidates[int(expected.reward.argmax())])
    printed = capsys.readouterr().out
    assert task.instruction in printed and ("named edited" in printed or "named NOT edited" in printed)


@pytest.mark.parametrize("argv, error, message", [
    (("--task", "9001"), ValueError, "SEED:INDEX"),
    (("--task", "9001:1", "x.png", "remove it"), ValueError, "drop IMAGE and INSTRUCTION"),
    (("--task", "9001:1", "--lora", "nowhere"), FileNotFoundError, "runs/demo/lora"),
    (("--task", "9001:1", "--device", "cuda"), ValueError, "on the CPU in float32"),
    ((), ValueError, "or --task SEED:INDEX"),
])
def test_rerank_demo_errors_name_the_fix(tmp_path, argv, error, message):
    with pytest.raises(error, match=message):
        run("rerank", "--policy", "demo", *argv, "--out", str(tmp_path / "o"))


def test_rerank_lora_needs_the_demo_editor(tmp_path, source):
    with pytest.raises(ValueError, match="--lora goes with --policy demo"):
        run("rerank", "--policy", "tiny", "--reward", "mllm_logit", "--reward-preset", "tiny", "--lora", "x",
            "--out", str(tmp_path / "o"), str(source), "x")


@pytest.mark.parametrize("argv, error, message", [
    (("--reward", "mllm_logit"), ValueError, "--reward-preset tiny"),
    (("--reward", "programmatic"), ValueError, "programmatic:MANIFEST.jsonl"),
    (("--reward", "nope", "--reward-preset", "tiny"), ValueError, "unknown kind 'nope'"),
])
def test_rerank_reward_errors_name_the_fix(tmp_path, source, argv, error, message):
    with pytest.raises(error, match=message):
        run("rerank", "--policy", "tiny", *argv, "--out", str(tmp_path / "o"), str(source), "x")


def test_rerank_missing_files_are_named(tmp_path, source):
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        run("rerank", "--policy", "tiny", "--reward", "mllm_logit", "--reward-preset", "tiny", "--out",
            str(tmp_path / "o"), str(tmp_path / "missing.png"), "x")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run("rerank", "--policy", str(tmp_path / "nowhere"), "--reward", "mllm_logit", "--reward-preset", "tiny",
            "--out", str(tmp_path / "o"), str(source), "x")


def test_serve_parses_its_settings_and_serves(monkeypatch):
    args = parse("serve", "--reward", "mllm_logit", "--reward-preset", "tiny", "--policy", "tiny", "--port", "0",
                 "--max-batch", "16", "--max-wait-ms", "2", "--max-queue", "7", "--timeout-s", "9",
                 "--max-body-mb", "4")
    seen = {}

    def serve_briefly(app, log_level="info"):        # instead of blocking: start, ask, stop
        config = app.state.config
        seen.update(max_batch=config.max_batch, max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
                    timeout_s=config.timeout_s, max_body_mb=config.max_body_mb)
        with BackgroundServer(app) as server:
            seen["health"] = httpx.get(server.url + "/healthz", timeout=30).json()

    monkeypatch.setattr(runner, "serve_forever", serve_briefly)
    args.run(args)
    assert seen["health"]["reward"] == "mllm_logit" and seen["health"]["policy"] == "flux-kontext"
    assert {k: seen[k] for k in ("max_batch", "max_wait_ms", "max_queue", "timeout_s", "max_body_mb")} == \
        dict(max_batch=16, max_wait_ms=2.0, max_queue=7, timeout_s=9.0, max_body_mb=4.0)


def test_serve_rejects_bad_settings_before_loading_models():
    args = parse("serve", "--reward", "mllm_logit:/nowhere", "--max-batch", "0", "--max-wait-ms", "-1")
    with pytest.raises(ValueError, match="max_batch must be > 0.*max_wait_ms must be >= 0"):
        args.run(args)
