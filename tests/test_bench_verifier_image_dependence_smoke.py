"""bench/verifier_image_dependence.py on a few steps: every variant's curve is complete, the hidden-state shift of a
swapped edited image is zero at the trace tokens' embeddings and not after attention has read the image, and SFT
lowers the loss."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "verifier_image_dependence.py"


def test_short_run_writes_every_variant(tmp_path):
    out = tmp_path / "dependence.json"
    done = subprocess.run([sys.executable, str(BENCH), "--steps", "2", "--every", "1", "--eval-tasks", "2",
                           "--variants", "lora-lm", "full", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert [v["variant"] for v in report["variants"]] == ["lora-lm", "full"]
    for variant in report["variants"]:
        shift = variant["hidden_shift_at_init"]
        assert shift[0] == 0.0 and shift[-1] > 0           # embeddings of the trace tokens; the last layer
        curve = variant["curve"]
        assert [c["step"] for c in curve] == [0, 1, 2]
        assert all(math.isfinite(c["gap"]) and 0 <= c["accuracy"] <= 1 for c in curve)
        assert curve[-1]["loss"] < curve[0]["loss"]

