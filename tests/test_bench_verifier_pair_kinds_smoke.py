"""bench/verifier_pair_kinds.py on a --quick demo run's folder: it finds the SFT checkpoint, counts every held-out
pair under the kind the demo gave it (with the greedy accuracy the demo measured at the end of SFT) and two sampled
GCPO groups a pair."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from editrl_engine.verifier_train.demo import SETTINGS, run

BENCH = Path(__file__).resolve().parents[1] / "bench" / "verifier_pair_kinds.py"


def test_quick_run_matches_the_demo_after_sft(tmp_path):
    summary = run(0, str(tmp_path / "work" / "seed-0"), SETTINGS["small-quick"], log=lambda *_: None)
    out = tmp_path / "kinds.json"
    done = subprocess.run([sys.executable, str(BENCH), str(tmp_path / "work"), "--seeds", "0", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = json.loads(out.read_text())["seeds"][0]["kinds"]
    after_sft = summary["per_pair_kind_after_sft"]
    assert {k: {"pairs": v["pairs"], "accuracy": v["accuracy"]} for k, v in kinds.items()} == after_sft
    for kind in kinds.values():
        assert kind["groups"] == 2 * kind["pairs"]
        assert 0 <= kind["zero_variance"] <= 1 and 0 <= kind["mean_reward"] <= 1
