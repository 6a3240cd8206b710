"""bench/serve.py end to end in its --quick mode: it runs a loopback server, and its JSON report is complete,
finite, and says that every request got exactly one answer."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve.py"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_writes_a_complete_report(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "req/s" in done.stdout and "targets:" in done.stdout and "not evaluated on CPU" in done.stdout
    report = json.loads((tmp_path / "serve-cpu.json").read_text())
    for key in ("benchmark", "device", "versions", "config", "method", "rows", "shutdowns", "nothing_lost", "targets",
                "notes"):
        assert key in report, key
    assert report["benchmark"] == "serve" and report["device"]["type"] == "cpu" and report["nothing_lost"] is True
    assert {(r["mode"], r["clients"]) for r in report["rows"]} == {(m, c) for m in ("dynamic", "batch-1")
                                                                    for c in (1, 4)}
    for row in report["rows"]:
        assert row["every_request_answered"] and row["ok"] == row["sent"] == row["server_answered"], row
        for key in ("requests_per_s", "pairs_per_s", "p50_ms", "p99_ms", "min_ms", "requests_per_model_call"):
            assert positive(row[key]), (key, row)
        assert row["min_ms"] <= row["p50_ms"] <= row["p99_ms"]
    assert all(r["requests_per_model_call"] == 1 for r in report["rows"] if r["mode"] == "batch-1")
    assert all(s["drained"] and s["lost"] == 0 and s["accepted"] == s["answered"] for s in report["shutdowns"])
    assert len(report["targets"]) == 2 and all(t["passed"] is None and t["note"] for t in report["targets"])
