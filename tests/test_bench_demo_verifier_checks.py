"""bench/demo_verifier.py's acceptance checks on hand-made seed results: the training reward's rise is read from the
fixed probe where a run has one (the per-step reward's half means beside it), from the half means otherwise."""
from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("demo_verifier_bench", BENCH / "demo_verifier.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def result(rewards, probe=None):
    return {"after_sft": 0.6, "parse_failures_after_sft": 0.0, "gcpo_accuracy_min": 0.59, "seconds": 310.0,
            "probe_seconds": 20.0, "gcpo_train_reward": rewards,
            **({"gcpo_probe_reward": probe} if probe is not None else {})}


def test_half_means_and_their_standard_error(bench):
    halves = bench.half_means([0.5, 0.7, 0.6, 0.9])
    assert halves["first"] == pytest.approx(0.6) and halves["last"] == pytest.approx(0.75)
    expected = (statistics.variance([0.5, 0.7]) / 2 + statistics.variance([0.6, 0.9]) / 2) ** 0.5
    assert halves["stderr"] == pytest.approx(expected)
    assert bench.half_means([0.5, 0.7])["first"] is None


def test_the_probe_decides_where_there_is_one(bench):
    falling_steps = [0.8, 0.8, 0.7, 0.7]
    assert bench.seed_checks(result(falling_steps, [[800, 0.60], [810, 0.62]]))["gcpo_train_reward_rises"]
    assert not bench.seed_checks(result(falling_steps[::-1], [[800, 0.60], [810, 0.59]]))["gcpo_train_reward_rises"]
    assert not bench.seed_checks(result(falling_steps))["gcpo_train_reward_rises"]
    assert bench.seed_checks(result(falling_steps[::-1]))["gcpo_train_reward_rises"]
    checks = bench.seed_checks(result(falling_steps[::-1], [[800, 0.6], [810, 0.7]]))
    assert checks == {"sft_accuracy_at_least_0.55": True, "parse_failures_below_1%": True,
                      "gcpo_never_2_points_below_sft": True, "gcpo_train_reward_rises": True,
                      "demo_within_5_minutes": True}                  # 310 s, 20 of them the bench's probe
    assert not bench.seed_checks({**result(falling_steps), "probe_seconds": 5.0})["demo_within_5_minutes"]


def test_the_probes_change_is_the_mean_per_pair_change_with_its_standard_error():
    from editrl_engine.verifier_train.demo import probe_change
    change = probe_change({800: [0.5, 0.25, 1.0], 805: [0.0, 0.0, 0.0], 810: [0.75, 0.5, 1.0]})
    assert change["pairs"] == 3 and change["mean"] == pytest.approx(1 / 6)
    assert change["stderr"] == pytest.approx(statistics.stdev([0.25, 0.25, 0.0]) / 3 ** 0.5)
    assert probe_change({800: [0.5]}) is None
