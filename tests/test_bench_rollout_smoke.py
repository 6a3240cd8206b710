"""bench/rollout.py end to end in its --quick mode: it runs, and its JSON report is complete and finite."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "rollout.py"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "rollout.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "img/s" in done.stdout and "targets:" in done.stdout and "not evaluated" in done.stdout
    report = json.loads(out.read_text())

    for key in ("device", "versions", "config", "policy", "method", "matmul_ceiling", "rows", "loaders", "targets",
                "notes"):
        assert key in report, key
    assert report["device"]["type"] == "cpu" and report["policy"]["family"] == "flux-kontext"
    assert positive(report["matmul_ceiling"]["tflops"])

    measured = [row for row in report["rows"] if row["error"] is None]
    assert {row["rollout"] for row in measured} == {"grpo", "nft"}
    assert {(row["family"], row["references"]) for row in measured} == {
        ("flux-kontext", 1), ("qwen-image-edit-plus", 1), ("qwen-image-edit-plus", 2)}   # flux2 needs >= 64 px
    assert set(report["policies"]) == {"flux-kontext", "qwen-image-edit-plus", "flux2"}
    for row in measured:
        for key in ("rollout_ms", "images_per_s", "forward_ms", "forward_flops", "forward_tflops", "pct_of_matmul"):
            assert positive(row[key]), (key, row)
        assert row["forwards_per_rollout"] == row["steps"] == 3             # the tiny Qwen presets: no CFG
        assert math.isfinite(row["non_forward_pct"])

    assert {row["backend"] for row in report["loaders"]} == {"pillow", "dali"}
    pillow = next(row for row in report["loaders"] if row["backend"] == "pillow")
    assert pillow["error"] is None and positive(pillow["images_per_s"]) and pillow["skipped"] == 0

    assert report["targets"] and all(t["passed"] is None for t in report["targets"])   # GPU targets, on CPU
    assert any("not evaluated" in note for note in report["notes"])
