"""bench/fused_ops.py end to end in its --quick mode: it runs, and its JSON report is complete and finite."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from .conftest import required_backends

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fused_ops.py"
OPS = {"sde_step", "sde_logprob", "nft_loss", "cfg_combine", "group_advantages", "grpo_loss", "nft_optimality"}
DIFFERENTIABLE = {"sde_logprob", "nft_loss", "cfg_combine", "grpo_loss"}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "kernels.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "median ms" in done.stdout and "targets:" in done.stdout
    report = json.loads(out.read_text())

    for key in ("device", "versions", "cpu_count", "copy_ceiling", "rows", "targets", "method", "notes"):
        assert key in report, key
    assert report["device"]["slug"] and report["versions"]["torch"]
    assert positive(report["copy_ceiling"]["gb_per_s"]) and positive(report["copy_ceiling"]["median_ms"])

    rows = report["rows"]
    assert {row["op"] for row in rows} == OPS
    assert {row["op"] for row in rows if row["pass"] == "fwd+bwd"} == DIFFERENTIABLE
    fused = "triton" if report["device"]["type"] == "cuda" else "cpp"
    assert {row["variant"] for row in rows} == {"eager", fused}
    for row in rows:
        assert row["shapes"] and positive(row["bytes"]), row
        if row["error"] is not None:
            assert row["variant"] == fused and fused not in required_backends(), row
            continue
        for key in ("median_ms", "min_ms", "gb_per_s", "pct_of_copy", "x_vs_eager"):
            assert positive(row[key]), (key, row)

    assert report["targets"]
    for entry in report["targets"]:
        assert entry["target"] and entry["required"] and entry["passed"] in (True, False, None)
