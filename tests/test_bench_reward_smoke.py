"""bench/reward.py end to end in its --quick mode: it runs, and its JSON report is complete and finite."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "reward.py"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_writes_a_complete_report(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pairs/s" in done.stdout and "targets:" in done.stdout and "not evaluated on CPU" in done.stdout
    report = json.loads((tmp_path / "reward-cpu.json").read_text())

    for key in ("benchmark", "device", "versions", "cpu_busy_fraction", "config", "method", "rows", "targets",
                "notes"):
        assert key in report, key
    assert report["benchmark"] == "reward" and report["device"]["type"] == "cpu"

    measured = [row for row in report["rows"] if row["error"] is None]
    modes = {(row["reward"], row["mode"]) for row in measured}
    assert {("mllm_logit", "per-sample"), ("mllm_logit", "batched"), ("mllm_logit", "group"),
            ("editscore", "sequential"), ("editscore", "batched"), ("mllm_logit", "remote c=8"),
            ("mllm_logit", "no prefix cache"), ("mllm_logit", "2 servers, group"), ("mllm_logit", "2 servers, request")
            } <= modes
    remote = {row["mode"]: row for row in measured if row["backend"] == "remote"}
    assert remote["remote c=8"]["prefix_hits"] > 0 and remote["no prefix cache"]["prefix_hits"] == 0
    for row in measured:
        for key in ("pairs_per_call", "calls", "pairs_per_s", "p50_ms", "p99_ms", "min_ms"):
            assert positive(row[key]), (key, row)
        assert row["min_ms"] <= row["p50_ms"] <= row["p99_ms"]
    for row in report["rows"]:
        assert row["error"] is None or isinstance(row["error"], str) and row["error"]

    assert len(report["targets"]) == 3 and all(t["passed"] is None and t["note"] for t in report["targets"])
    assert any("not evaluated on CPU" in note for note in report["notes"])
