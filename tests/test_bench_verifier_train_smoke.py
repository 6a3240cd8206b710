"""bench/verifier_train.py end to end in its --quick mode: it runs and its JSON report is complete and finite."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "verifier_train.py"


def test_quick_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "verifier.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["benchmark"] == "verifier-train" and report["device"]["type"] == "cpu"
    modes = {row["mode"]: row for row in report["rows"]}
    assert set(modes) == {"sft", "gcpo", "sample-shared", "sample-whole"}
    for row in modes.values():
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0 and row["per_s"] > 0
    assert modes["sample-shared"]["tokens"] > 0 and modes["sample-whole"]["tokens"] > 0
