"""The exact verifier of the shapes task: the target scores 1, the source 0, noise about 0, and hand-built
partial edits score what the sub-score formulas give when worked out by hand.

The hand-built scenes use a 30 x 30 canvas (3 x 3 cells of 10 x 10), gray background, 8 x 8 squares: a red one
in the centre cell (rows and columns 11..18) and a blue one in the top-left cell (rows and columns 1..8).
"""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from editrl_engine.data import Edit, Shape, ShapeTask, make_tasks, render, task_images
from editrl_engine.data.shapes import PALETTE
from editrl_engine.reward.programmatic import ProgrammaticReward

RED = Shape("square", "red", "center", 11, 11, 8)
BLUE = Shape("square", "blue", "top left", 1, 1, 8)


def hand_task(edit: Edit, instruction: str) -> ShapeTask:
    return ShapeTask("hand", 30, 30, "gray", (RED, BLUE), edit, instruction)


RECOLOR = hand_task(Edit("recolor", shape=0, color="green"), "Make the red square green.")
MOVE = hand_task(Edit("move", shape=0, cell="bottom right"), "Move the red square to the bottom right.")


def score_one(task: ShapeTask, edited) -> dict:
    batch = ProgrammaticReward().score([task.source_image()], [task.instruction], [edited], tasks=[task])
    assert batch.failures == 0 and len(batch) == 1
    return {"reward": float(batch.reward[0]), **batch.details[0]}


def test_target_scores_one_and_source_zero():
    for task in (RECOLOR, MOVE):
        target = score_one(task, task.target_image())
        assert target["reward"] == pytest.approx(1.0, abs=1e-6)
        assert (target["success"], target["over_editing"], target["quality"]) == (10.0, 10.0, 10.0)
        source = score_one(task, task.source_image())
        assert source["success"] == 0.0 and source["reward"] == 0.0


def test_half_the_shape_recoloured():
    edited = RECOLOR.target_image().clone()
    edited[:, 15:19, 11:19] = torch.tensor(PALETTE["red"], dtype=torch.uint8).view(3, 1, 1)   # bottom 4 rows red
    out = score_one(RECOLOR, edited)
    # success = 10 * 32 / 64 = 5, nothing else touched, flat colours: O = sqrt(5 * 10)
    assert out["success"] == pytest.approx(5.0) and out["over_editing"] == 10.0 and out["quality"] == 10.0
    assert out["reward"] == pytest.approx(math.sqrt(50.0) / 10)


def test_shape_moved_to_the_wrong_cell():
    wrong = Shape("square", "red", "top right", 1, 21, 8)
    out = score_one(MOVE, render(30, 30, "gray", (wrong, BLUE)))
    # edit region = old place (64 px, now background: right) + new place (64 px, still background: wrong)
    # -> success 10 * 64 / 128 = 5; the other 900 - 128 = 772 px lose 64 to the stray square -> 10 * 708 / 772
    assert out["success"] == pytest.approx(5.0)
    assert out["over_editing"] == pytest.approx(10 * 708 / 772)
    assert out["sc"] == pytest.approx(5.0) and out["reward"] == pytest.approx(math.sqrt(50.0) / 10)


def test_background_changed_when_asked_to_recolour():
    edited = render(30, 30, "black", (Shape("square", "green", "center", 11, 11, 8), BLUE))
    out = score_one(RECOLOR, edited)
    # the shape is right (success 10) but of the 836 px outside it only the blue square's 64 are unchanged
    assert out["success"] == 10.0 and out["over_editing"] == pytest.approx(10 * 64 / 836)
    assert out["reward"] == pytest.approx(math.sqrt(10 * 64 / 836 * 10) / 10)


def test_uniform_tint_costs_quality_only():
    edited = (RECOLOR.target_image().to(torch.int16) + 12).to(torch.uint8)   # no channel reaches 255 here
    out = score_one(RECOLOR, edited)
    # every pixel is 12 from its palette colour: matches (12 <= 32), quality 10 * (1 - 12 / 48) = 7.5
    assert out["sc"] == 10.0 and out["quality"] == pytest.approx(7.5)
    assert out["reward"] == pytest.approx(math.sqrt(75.0) / 10)


@pytest.mark.parametrize("size", [16, 32, 64, (24, 40)])
def test_generated_tasks_target_one_source_zero_noise_near_zero(size):
    tasks = make_tasks(48, seed=3, size=size)
    sources, targets = task_images(tasks)                                     # [48, 3, H, W] each
    reward = ProgrammaticReward(tasks)
    instructions = [t.instruction for t in tasks]
    assert torch.allclose(reward.score(sources, instructions, targets).reward, torch.ones(48), atol=1e-6)
    assert reward.score(sources, instructions, sources).reward.max() == 0.0
    noise = torch.randint(0, 256, targets.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    noisy = reward.score(sources, instructions, noise).reward
    assert noisy.isfinite().all() and noisy.max() < 0.15
    blurred = ((targets.float() + targets.roll(1, -1).float()) / 2).round().to(torch.uint8)   # a one-pixel smear
    smeared = reward.score(sources, instructions, blurred).reward
    changed = (blurred != targets).flatten(1).any(1)                           # a blank target has no edges
    assert smeared.isfinite().all() and (smeared[changed] < 1.0).all() and (smeared[~changed] == 1.0).all()


def test_task_forms_and_pil_images_agree():
    tasks = make_tasks(6, seed=1, size=32)
    sources, targets = task_images(tasks)
    edited = [t.source_image() if i % 2 else t.target_image() for i, t in enumerate(tasks)]
    instructions = [t.instruction for t in tasks]
    reward = ProgrammaticReward(tasks)
    by_lookup = reward.score(sources, instructions, edited).reward
    by_task = reward.score(sources, instructions, edited, tasks=tasks).reward
    by_spec = reward.score(sources, instructions, edited, tasks=[t.to_spec() for t in tasks]).reward
    by_row = reward.score(sources, instructions, edited, tasks=[t.to_row("s.png") for t in tasks]).reward
    pil = [Image.fromarray(e.permute(1, 2, 0).numpy()) for e in edited]
    by_pil = ProgrammaticReward().score(sources, instructions, pil, tasks=tasks).reward
    for other in (by_task, by_spec, by_row, by_pil):
        assert torch.equal(by_lookup, other)
    assert by_lookup.tolist() == [1.0, 0.0] * 3


def test_load_reward_entry():
    from editrl_engine.reward import load_reward
    tasks = make_tasks(4, seed=5, size=32)
    reward = load_reward("programmatic", tasks=tasks)
    assert reward.kind == "programmatic" and reward.metadata()["match_tolerance"] == 32
    sources, targets = task_images(tasks)
    assert reward.score(sources, [t.instruction for t in tasks], targets).reward.tolist() == [1.0] * 4


def test_mixed_canvas_sizes_in_one_batch():
    tasks = make_tasks(3, seed=2, size=32) + make_tasks(3, seed=2, size=(24, 40))
    out = ProgrammaticReward().score([t.source_image() for t in tasks], [t.instruction for t in tasks],
                                     [t.target_image() for t in tasks], tasks=tasks)
    assert out.reward.tolist() == [1.0] * 6 and out.reward.dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    reward = ProgrammaticReward([RECOLOR])
    source, target = RECOLOR.source_image(), RECOLOR.target_image()
    cases = [
        ([source], [RECOLOR.instruction], [target.float()], [RECOLOR], "uint8"),
        ([source], [RECOLOR.instruction], [target[:1]], [RECOLOR], r"\[3, H, W\]"),
        ([source], [RECOLOR.instruction], [target.numpy()], [RECOLOR], "PIL"),
        ([source], [RECOLOR.instruction], [target[:, :20]], [RECOLOR], "canvas"),
        ([source[:, :20]], [RECOLOR.instruction], [target], [RECOLOR], "canvas"),
        ([source], ["Make the blue square red."], [target], [RECOLOR], "instruction"),
        ([source], [RECOLOR.instruction], [target], [RECOLOR, RECOLOR], "tasks"),
        ([source], [RECOLOR.instruction], [target], ["not a task"], "ShapeTask"),
        ([source], ["Make the blue square red."], [target], None, "no registered task"),
        ([source], [RECOLOR.instruction], [target, target], [RECOLOR], "one source"),
    ]
    for sources, instructions, edited, tasks, message in cases:
        with pytest.raises(ValueError, match=message):
            reward.score(sources, instructions, edited, tasks=tasks)
    with pytest.raises(ValueError, match="spec"):
        reward.score([source], [RECOLOR.instruction], [target], tasks=[{"generator": "other"}])
