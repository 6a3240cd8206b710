"""The verifier demo's data (verifier_train/demo_task.py) and a tiny end-to-end demo run (verifier_train/demo.py).

References: the candidates' truth against the object-level checks run one image at a time (a separate call from
demo_task's batched one) and against hand facts of the shapes task (the target scores exactly 1, the source 0, a
kept shape erased zeroes "keep"); the traces against the verifier's own parser."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from editrl_engine.data.synthetic import make_tasks
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.reward.programmatic import ProgrammaticReward
from editrl_engine.verifier_train import demo_task as dt

TASKS = make_tasks(12, seed=3, size=32)


def judged():
    generator = torch.Generator().manual_seed(5)
    return [(task, dt.judge(task, dt.candidate_images(task, generator))) for task in TASKS]


def test_candidates_truth_matches_object_level_checks_one_by_one():
    for task, candidates in judged():
        names = [c.name for c in candidates]
        assert {"target", "source", "erased", "noisy"} <= set(names)
        for c in candidates:                              # the checks, one image per call
            one = ProgrammaticReward([task]).score([task.source_image()], [task.instruction], [c.image], tasks=[task])
            details = one.details[0]
            assert c.reward == pytest.approx(float(one.reward[0]), abs=1e-6)
            assert c.scores == pytest.approx((details["success"], details["over_editing"], details["quality"]))
        by = {c.name: c for c in candidates}
        assert by["target"].reward == pytest.approx(1.0) and by["target"].scores == (10.0, 10.0, 10.0)
        assert torch.equal(by["target"].image, task.target_image())
        assert by["source"].reward == pytest.approx(0.0) and by["source"].scores[0] == 0.0
        assert by["noisy"].scores[2] < 9.0                # std-48 noise is far from flat palette colours
        if "wrong" in by:                                 # a kept shape erased: exactly its pixels differ from target
            assert by["wrong"].scores[1] == 0.0 and by["wrong"].reward == pytest.approx(0.0)
            changed = (by["wrong"].image != task.target_image()).any(0)      # [H, W]
            assert 0 < int(changed.sum()) < changed.numel() // 4


def test_traces_parse_with_the_verifiers_parser():
    for task, candidates in judged():
        principles = dt.principles_of(task)
        assert [p.kind for p in principles] == ["follow", "keep", "quality"]
        for c in candidates:
            parsed, error = vp.parse_verdicts(c.trace, len(principles))
            assert error is None, (c.name, c.trace)
            for entry, score in zip(parsed["verdicts"], c.scores):
                expected = "pass" if score >= 9 else "partial" if score >= 5 else "fail"
                assert entry["verdict"] == expected and entry["score"] == round(score)
            assert parsed["final_score"] == round(10 * c.reward)


def test_preference_pairs_prefer_the_higher_object_level_reward():
    sft, pairs, candidates = dt.build(TASKS[:4], seed=1)
    assert len(sft) == sum(len(c) for c in candidates.values())
    assert pairs
    for row in pairs:
        task = next(t for t in TASKS if t.instruction == row.instruction and torch.equal(t.source_image(),
                                                                                           row.sources[0]))
        by_image = [c for c in candidates[task.id]]
        better = next(c for c in by_image if c.image is row.preferred)
        worse = next(c for c in by_image if c.image is row.rejected)
        assert better.reward - worse.reward > dt.PAIR_MARGIN
    rows, which = dt.held_out_pairs(6, seed=9, size=32)
    again, which_again = dt.held_out_pairs(6, seed=9, size=32)    # a fixed, seeded held-out set
    assert [(t.id, a.name, b.name) for t, a, b in which] == [(t.id, a.name, b.name) for t, a, b in which_again]
    assert all(torch.equal(r.preferred, s.preferred) for r, s in zip(rows, again))
    for row, (task, a, b) in zip(rows, which):
        assert row.preferred is a.image and row.rejected is b.image and a.reward - b.reward > dt.PAIR_MARGIN


def test_difference_view_is_the_scaled_change():
    """128 + 2 (edited - source), clipped to uint8, against a hand-computed case; no change is flat grey."""
    source = torch.tensor([[[10, 200, 100, 0]]], dtype=torch.uint8)
    edited = torch.tensor([[[20, 0, 100, 255]]], dtype=torch.uint8)
    assert dt.difference_view(edited, source).tolist() == [[[148, 0, 128, 255]]]
    assert dt.difference_view(source, source).eq(128).all()


def test_the_difference_view_replaces_every_edited_image_and_nothing_else():
    sft, pairs, candidates = dt.build(TASKS[:3], seed=1)
    sft_d, pairs_d, candidates_d = dt.build(TASKS[:3], seed=1, edited_view="difference")
    assert [[c.trace for c in v] for v in candidates.values()] == [[c.trace for c in v] for v in candidates_d.values()]
    for row, shown in zip(sft, sft_d):
        assert shown.trace == row.trace and torch.equal(shown.sources[0], row.sources[0])
        assert torch.equal(shown.edited, dt.difference_view(row.edited, row.sources[0]))
    for row, shown in zip(pairs, pairs_d):
        for field in ("preferred", "rejected"):
            assert torch.equal(getattr(shown, field), dt.difference_view(getattr(row, field), row.sources[0]))
    rows, _ = dt.held_out_pairs(3, seed=9, size=32)
    rows_d, _ = dt.held_out_pairs(3, seed=9, size=32, edited_view="difference")
    assert all(torch.equal(d.rejected, dt.difference_view(r.rejected, r.sources[0])) for r, d in zip(rows, rows_d))
    with pytest.raises(ValueError, match="edited_view must be one of"):
        dt.build(TASKS[:1], seed=1, edited_view="diff")


@pytest.mark.parametrize("verifier", ["small", "vlm"])
def test_quick_demo_runs_end_to_end(tmp_path, capsys, verifier):
    from editrl_engine.verifier_train.demo import main
    summary = main(argparse.Namespace(seed=0, out=str(tmp_path), quick=True, verifier=verifier, edited_view=None))
    assert summary["verifier"] == verifier
    assert summary["edited_view"] == {"small": "image", "vlm": "difference"}[verifier]
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["seed"] == 0 and set(written["per_principle"]) == {"follow", "keep", "quality"}
    for key in ("before", "after_sft", "after_gcpo"):
        assert 0.0 <= summary[key] <= 1.0
    assert len(summary["gcpo_train_reward"]) == 2
    assert summary["after_gcpo"] <= 1 - summary["identical_pairs"]     # an identical pair is a tie: wrong
    kinds = summary["per_pair_kind"]                                       # the breakdown adds up to the whole
    assert sum(k["pairs"] for k in kinds.values()) == 4
    assert sum(k["pairs"] * k["accuracy"] for k in kinds.values()) / 4 == pytest.approx(summary["after_gcpo"])
    kinds = summary["per_pair_kind_after_sft"]
    assert sum(k["pairs"] * k["accuracy"] for k in kinds.values()) / 4 == pytest.approx(summary["after_sft"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r.get("stage") for r in records} >= {"sft", "gcpo"}
    assert (tmp_path / {"small": "model", "vlm": "lora"}[verifier]).is_dir()
    assert "held-out strict pairwise accuracy" in capsys.readouterr().out


def test_the_same_time_on_sft_continues_from_the_same_sft_model(tmp_path):
    from editrl_engine.verifier_train.demo import SETTINGS, run
    summary = run(0, str(tmp_path), SETTINGS["small-quick"], log=lambda *_: None, same_time_sft=True)
    assert summary["extra_sft_steps"] >= 1 and 0.0 <= summary["after_more_sft"] <= 1.0
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]
    sft_steps = SETTINGS["small-quick"]["sft_steps"]
    longer = [r for r in read(tmp_path / "more-sft" / "metrics.jsonl") if r.get("stage") == "sft"]
    assert [r["step"] for r in longer] == list(range(sft_steps + 1, sft_steps + 1 + summary["extra_sft_steps"]))
    gcpo_seconds = sum(r["seconds"] for r in read(tmp_path / "metrics.jsonl") if r.get("stage") == "gcpo")
    assert summary["gcpo_seconds"] == gcpo_seconds


def test_more_sft_starts_from_the_sft_models_parameters(tmp_path):
    """The continued run's first step equals one more step of the SFT run itself: the same LoRA and optimizer."""
    from editrl_engine.verifier_train.demo import SETTINGS, demo_config, more_sft
    from editrl_engine.verifier_train.trainer import VerifierTrainer
    settings = dict(SETTINGS["vlm-quick"], gcpo_steps=0)
    sft, pairs, _ = dt.build(TASKS[:3], seed=0, edited_view="difference")
    eval_rows, _ = dt.held_out_pairs(2, seed=9, size=32, edited_view="difference")
    straight = VerifierTrainer(demo_config(str(tmp_path / "straight"), 0, dict(settings, sft_steps=4)),
                               sft_rows=sft, preference_rows=pairs, eval_rows=eval_rows)
    straight.run()
    first = VerifierTrainer(demo_config(str(tmp_path / "run"), 0, dict(settings, sft_steps=3)),
                            sft_rows=sft, preference_rows=pairs, eval_rows=eval_rows)
    first.run()
    history = [{"stage": "sft", "seconds": 1.0}, {"stage": "gcpo", "seconds": 1.0}]   # buys exactly 1 more step
    summary = more_sft(0, str(tmp_path / "run" / "more-sft"), dict(settings, sft_steps=3), history,
                       (sft, pairs, eval_rows))
    assert summary["extra_sft_steps"] == 1
    continued = VerifierTrainer(demo_config(str(tmp_path / "run" / "more-sft"), 0, dict(settings, sft_steps=4)),
                                sft_rows=sft, preference_rows=pairs, eval_rows=eval_rows)
    continued.run(resume=True)                                          # loads the finished run's last checkpoint
    for (name, a), (_, b) in zip(straight.model.peft.named_parameters(), continued.model.peft.named_parameters()):
        if "lora_" in name:
            assert torch.equal(a, b), name


def test_pair_kind_accuracy_by_hand():
    from editrl_engine.verifier_train.demo import pair_kind_accuracy
    named = lambda name: dt.Candidate(name, None, 0.0, (0.0, 0.0, 0.0), "")
    which = [(None, named("target"), named("erased")), (None, named("target"), named("erased")),
             (None, named("target"), named("source")), (None, named("noisy"), named("wrong"))]
    judged = [{"preferred": 10.0, "rejected": 0.0}, {"preferred": 10.0, "rejected": 10.0},      # right, tie
              {"preferred": float("nan"), "rejected": 0.0}, {"preferred": 2.0, "rejected": 0.0}]  # unparsed, right
    assert pair_kind_accuracy(judged, which) == {"noisy>wrong": {"pairs": 1, "accuracy": 1.0},
                                                 "target>erased": {"pairs": 2, "accuracy": 0.5},
                                                 "target>source": {"pairs": 1, "accuracy": 0.0}}
