"""bench/e2e.py on its smallest settings: the engine's step and the plain sequential loop both run on the same tiny
models and the same number of images, the 2-process separate-reward run finishes, and the JSON report is complete.
A smoke test: it asserts nothing about speed."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH_DIR))

import e2e  # noqa: E402

TINY = dict(e2e.QUICK, repeats=2)          # 2 groups of 2 at 16², 2 sampling steps, 1 warm-up + 2 timed steps


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_loop(result: dict, repeats: int) -> None:
    for key in ("step_s", "images_per_s", "images_per_step", "images_timed", "steps_timed"):
        assert positive(result[key]), (key, result)
    assert result["steps_timed"] == repeats == len(result["step_s_all"])
    assert result["images_timed"] == result["images_per_step"] * repeats
    split = result["split"]
    assert set(split) == {"rollout_s", "score_s", "update_s", "idle_s", "other_s"}
    assert positive(split["rollout_s"]) and positive(split["score_s"]) and positive(split["update_s"])


def test_both_loops_do_the_same_images():
    row = e2e.measure_size(TINY, torch.device("cpu"), lambda text: None)
    assert row["error"] is None, row["error"]
    check_loop(row["engine"], TINY["repeats"])
    check_loop(row["sequential"], TINY["repeats"])
    assert row["same_images"] and row["engine"]["images_timed"] == row["sequential"]["images_timed"] == 2 * 2 * 2
    assert row["engine"]["images_per_step"] == row["sequential"]["images_per_step"] == 4
    assert row["engine"]["ops_backend"] == "default" and row["sequential"]["ops_backend"] == "torch"
    assert row["engine"]["staleness"] == 1 and row["sequential"]["staleness"] == 0
    assert row["engine"]["optimizer_steps"] == TINY["warmup"] + TINY["repeats"] + 1   # every step trained
    assert positive(row["speedup"])
    # the engine's step holds its update, so the bound printed beside the speedup is never below it
    assert row["speedup"] <= row["speedup_bound_by_update"]
    assert row["policy_parameters"] > row["policy_parameters_lora"] > 0


def test_separate_reward_rank_reports_the_hidden_share():
    spec = dict(e2e.QUICK, name="quick-separate", threads=1)
    out = e2e.measure_separate(spec, torch.device("cpu"), lambda text: None)
    assert out["error"] is None, out["error"]
    assert out["threads_per_rank"] == 1 and out["steps_timed"] == spec["repeats"]
    assert 0 <= out["time_idle_s"] and positive(out["time_score_s"]) and positive(out["step_s"])
    assert out["hidden_frac"] <= 1 and out["hidden_frac_whole_run"] <= 1
    steps = spec["warmup"] + spec["repeats"] + 1
    images = spec["group_size"] * spec["groups_per_step"]
    assert out["reward_rank"]["images"] == out["policy_images"] == steps * images   # every image scored once
    assert out["reward_rank"]["jobs"] == steps                                       # one chunk per step
    assert positive(out["reward_rank"]["seconds_scoring"])


def test_main_writes_a_complete_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(e2e, "cpu_busy_fraction", lambda: 0.0)
    assert e2e.main(["--quick", "--device", "cpu", "--skip-separate", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "img/s" in printed and "targets:" in printed and "not evaluated" in printed
    report = json.loads((tmp_path / "e2e-cpu.json").read_text())
    for key in ("benchmark", "date", "device", "versions", "cpu_busy_fraction", "config", "method", "rows",
                "separate", "targets", "notes"):
        assert key in report, key
    assert report["benchmark"] == "e2e" and report["device"]["type"] == "cpu" and report["separate"] is None
    assert report["versions"]["torch"] == torch.__version__
    (row,) = report["rows"]
    assert row["error"] is None and row["same_images"]
    assert row["engine"]["images_timed"] == row["sequential"]["images_timed"]
    assert len(report["targets"]) == 1 and all(t["passed"] is None for t in report["targets"])
    assert any("--quick" in note for note in report["notes"])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_settings_cover_every_device(device):
    args = e2e.parse_args([])
    sizes, separate = e2e.settings(args, torch.device(device))
    assert sizes and separate and all(s["repeats"] >= 3 for s in sizes + [separate])
    if device == "cuda":
        assert sizes[0]["policy"] == e2e.FLUX_POLICY and sizes[0]["reward"] == e2e.SEVEN_B_REWARD
        assert sizes[0]["dtype"] == "bfloat16"
    else:
        assert [s["name"] for s in sizes] == ["tiny", "medium"]
    config = e2e.engine_config(sizes[0], Path("/tmp/unused"), 3)
    assert config.staleness == 1 and config.pipeline.placement == "colocated" and config.algo.name == "nft"
    assert config.log.progress is False and config.checkpoint.every == 0 and config.algo.advantage.filter_std < 0
