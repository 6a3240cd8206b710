"""The editscore reward's options: the publisher's exact templates read from their package (a stand-in of the
same shape here) vs the project's prompts, which images the PQ call sees, and the two reductions over passes
(hand-computed)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from editrl_engine.reward import editscore_prompts
from editrl_engine.reward.editscore import EditScoreReward

from . import editscore_standin
from .test_reward_editscore import EDITED, INSTRUCTIONS, SOURCES, Script, answer

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN2_5_HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"
CTX, TWO = editscore_standin.TEXTS["_context_no_delimit_reasoning_first"], \
    editscore_standin.TEXTS["_prompts_0shot_two_image_edit_rule"]


def calls(reward, instruction="make it 10 times redder"):
    return reward.calls(SOURCES[:1], [instruction], EDITED[:1])


def test_an_editscore_checkpoint_gets_the_publishers_templates(tmp_path, monkeypatch):
    editscore_standin.install(tmp_path, monkeypatch)
    reward = EditScoreReward(None, generate_fn=Script({}), checkpoint=True)            # templates="auto"
    assert reward.metadata()["prompts"] == "editscore package 9.9" and "editscore" not in sys.modules
    sc, pq = calls(reward)
    # images first, labelled; then context, the two-image rule, the SC rule with 10 -> 25; the instruction last,
    # its own "10" untouched
    assert sc.text == (QWEN2_5_HEAD + "<img1>: " + IMAGE + "<img2>: " + IMAGE + CTX + "\n" + TWO + "\n"
                       + "\nSC: two marks 0 to 25 each, as [a, b].\n\nInstruction was: make it 10 times redder\n"
                       + TAIL)
    assert sc.images == (SOURCES[0].convert("RGB"), EDITED[0].convert("RGB"))
    assert pq.text == QWEN2_5_HEAD + "<img1>: " + IMAGE + CTX + "\n" + "PQ: two marks 0 to 25 each for looks, " \
        "as [a, b].\n" + TAIL and len(pq.images) == 1
    viescore = EditScoreReward(None, scale="viescore", templates="editscore", generate_fn=Script({}))
    assert "0 to 10 each, as" in calls(viescore)[0].text


def test_the_qwen3_layout_has_no_system_turn_and_no_labels(tmp_path, monkeypatch):
    editscore_standin.install(tmp_path, monkeypatch, version=None)
    chosen = editscore_prompts.select("editscore", checkpoint=False, family="qwen3_vl")
    assert chosen.source == "editscore package unknown"
    text = chosen.sc_prefix("x") + chosen.sc_suffix("add a cat", 25)
    assert text.startswith("<|im_start|>user\n" + IMAGE + IMAGE + CTX) and text.endswith("add a cat\n" + TAIL)


def test_without_the_package_or_a_checkpoint_the_project_prompts_are_used(tmp_path, monkeypatch):
    if importlib.util.find_spec("editscore") is None:                  # the real package is not installed here
        reward = EditScoreReward(None, generate_fn=Script({}), checkpoint=True)
        assert reward.metadata()["prompts"] == "project"
        assert calls(reward)[0].text == editscore_prompts.sc_prompt("make it 10 times redder", 25)
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps editscore"):
            EditScoreReward(None, templates="editscore", generate_fn=Script({}))
    editscore_standin.install(tmp_path, monkeypatch)
    for options in (dict(checkpoint=False), dict(checkpoint=True, templates="project")):
        reward = EditScoreReward(None, generate_fn=Script({}), **options)
        assert reward.metadata()["prompts"] == "project"
        assert calls(reward)[1].text == editscore_prompts.pq_prompt(25)
    with pytest.raises(ValueError, match="templates"):
        EditScoreReward(None, templates="vie", generate_fn=Script({}))


def test_a_module_of_another_shape_is_refused(tmp_path, monkeypatch):
    texts = dict(editscore_standin.TEXTS)
    del texts["_prompts_0shot_rule_PQ"]
    editscore_standin.install(tmp_path, monkeypatch, texts=texts)
    with pytest.raises(ValueError, match="_prompts_0shot_rule_PQ.*templates='project'"):
        EditScoreReward(None, checkpoint=True, generate_fn=Script({}))


@pytest.mark.parametrize("published", [False, True])
def test_pq_sees_the_edited_image_or_both(tmp_path, monkeypatch, published):
    if published:
        editscore_standin.install(tmp_path, monkeypatch)
    templates = "editscore" if published else "project"
    edited_only = calls(EditScoreReward(None, templates=templates, generate_fn=Script({})))[1]
    both = calls(EditScoreReward(None, templates=templates, pq_images="both", generate_fn=Script({})))[1]
    assert edited_only.images == (EDITED[0].convert("RGB"),) and edited_only.text.count(IMAGE) == 1
    assert both.images == (SOURCES[0].convert("RGB"), EDITED[0].convert("RGB")) and both.text.count(IMAGE) == 2
    assert ("<img2>: " in both.text) == published and ("second image" in both.text) != published
    with pytest.raises(ValueError, match="pq_images"):
        EditScoreReward(None, pq_images="source", generate_fn=Script({}))


def test_reductions_by_hand():
    table = {(0, 0, "sc"): answer([20, 25]), (0, 0, "pq"): answer([25, 15]),     # SC 8, PQ 6
             (1, 0, "sc"): answer([10, 10]), (1, 0, "pq"): answer([25, 25]),     # SC 4, PQ 10
             (2, 0, "sc"): answer([25, 25]), (2, 0, "pq"): "refused"}            # failed pass: left out
    rewards = {}
    for reduction in ("mean_overall", "average_first"):
        reward = EditScoreReward(None, passes=3, reduction=reduction, generate_fn=Script(table))
        batch = reward.score(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1])
        rewards[reduction] = float(batch.reward[0])
        assert batch.details[0]["overall"] == pytest.approx(rewards[reduction] * 10)
        assert reward.metadata()["reduction"] == reduction and batch.details[0]["failed_passes"] == 1
    assert rewards["mean_overall"] == pytest.approx((math.sqrt(8 * 6) + math.sqrt(4 * 10)) / 2 / 10)
    assert rewards["average_first"] == pytest.approx(math.sqrt(6 * 8) / 10)          # sqrt(mean SC * mean PQ)
    none = EditScoreReward(None, passes=2, reduction="average_first", generate_fn=Script({}))
    assert math.isnan(float(none.score(SOURCES[:1], INSTRUCTIONS[:1], EDITED[:1]).reward[0]))
    with pytest.raises(ValueError, match="reduction"):
        EditScoreReward(None, reduction="median", generate_fn=Script({}))
    assert json.dumps(none.metadata())                                              # plain values only
