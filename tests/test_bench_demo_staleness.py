"""bench/demo_staleness.py's summary: per-staleness means of the demo runs' results (the runs themselves take
minutes each; the script is run by hand)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import demo_staleness  # noqa: E402


def run(reward_after, gain, seconds, removed, kept, one):
    return {"reward_after": reward_after, "gain": gain, "seconds": seconds,
            "rates_after": {"named_removed_two_shapes": removed, "other_kept_two_shapes": kept,
                            "named_removed_one_shape": one}}


def test_summary_means():
    out = demo_staleness.summarise([run(0.9, 0.7, 100.0, 0.8, 1.0, 0.5), run(0.8, 0.5, 120.0, 0.9, 0.75, 1.0)])
    assert out == pytest.approx({"reward_after": 0.85, "gain": 0.6, "seconds": 110.0,
                                 "named_removed_two_shapes_after": 0.85, "other_kept_two_shapes_after": 0.875,
                                 "named_removed_one_shape_after": 0.75})
    assert demo_staleness.STALENESS == (0, 1)
