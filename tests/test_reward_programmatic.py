"""The exact verifier of the shapes task, judged object by object: the target scores 1, the source 0, noise about
0; destroying any object the instruction does not name (erasing everything, removing the wrong shape, painting the
background over a shape) scores about 0 however few pixels that object has; and hand-built partial edits of each
kind (recolour, move, remove, background) score what the verdicts give when counted by hand.

Every expected number below is counted by hand from the scene's geometry, not computed by the module.

Scene A (30 x 30, 3 x 3 cells of 10 x 10, gray background, 8 x 8 squares = 64 px each): a red square in the
centre cell (rows and columns 11..18) and a blue square in the top-left cell (rows and columns 1..8). Background
pixels there: 900 - 64 - 64 = 772. The red square moved to the bottom right sits at rows and columns 21..28.

Scene B, the demo's size (16 x 16, cells of 5 x 5 / 6 x 6, white background, 3 x 3 squares = 9 px each): a yellow
square in the top-left cell (rows and columns 1..3) and a red square in the centre cell (rows and columns 6..8).
Background pixels: 256 - 9 - 9 = 238. A kept 3x3 square there is 9 / 247 = 3.6 % of the pixels outside the
removed one, which is why the old pixel-fraction consistency scored "erase everything" about 0.98.
"""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from editrl_engine.data import Edit, Shape, ShapeTask, make_tasks, render, task_images
from editrl_engine.data.shapes import PALETTE
from editrl_engine.reward.programmatic import PASS_FRACTION, ProgrammaticReward

RED = Shape("square", "red", "center", 11, 11, 8)
BLUE = Shape("square", "blue", "top left", 1, 1, 8)
SMALL_YELLOW = Shape("square", "yellow", "top left", 1, 1, 3)
SMALL_RED = Shape("square", "red", "center", 6, 6, 3)


def hand_task(edit: Edit, instruction: str) -> ShapeTask:
    return ShapeTask("hand", 30, 30, "gray", (RED, BLUE), edit, instruction)


RECOLOR = hand_task(Edit("recolor", shape=0, color="green"), "Make the red square green.")
MOVE = hand_task(Edit("move", shape=0, cell="bottom right"), "Move the red square to the bottom right.")
REMOVE = hand_task(Edit("remove", shape=0), "Remove the red square.")
BACKGROUND = hand_task(Edit("background", color="black"), "Make the background black.")
SMALL_REMOVE = ShapeTask("small", 16, 16, "white", (SMALL_YELLOW, SMALL_RED), Edit("remove", shape=1),
                         "Remove the red square.")
ALL_KINDS = (RECOLOR, MOVE, REMOVE, BACKGROUND, SMALL_REMOVE)


def score_one(task: ShapeTask, edited) -> dict:
    batch = ProgrammaticReward().score([task.source_image()], [task.instruction], [edited], tasks=[task])
    assert batch.failures == 0 and len(batch) == 1
    return {"reward": float(batch.reward[0]), **batch.details[0]}


def paint(image: torch.Tensor, rows: slice, cols: slice, colour: str) -> torch.Tensor:
    """A copy of `image` with the box [rows, cols] filled with a palette colour."""
    image = image.clone()
    image[:, rows, cols] = torch.tensor(PALETTE[colour], dtype=torch.uint8).view(3, 1, 1)
    return image


def edited_of(out: dict) -> dict:
    (edited,) = [o for o in out["objects"] if o["role"] == "edited"]
    return edited


def kept_of(out: dict) -> dict[str, float]:
    """colour -> the preserved fraction of each kept shape."""
    return {o["colour"]: o["preserved"] for o in out["objects"] if o["role"] == "kept"}


def reward_of(success: float, over_editing: float, quality: float = 10.0) -> float:
    return math.sqrt(min(success, over_editing) * quality) / 10


# ---- the ends of the scale ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ALL_KINDS, ids=lambda t: f"{t.edit.kind}-{t.width}")
def test_target_scores_one_and_source_zero(task):
    target = score_one(task, task.target_image())
    assert target["reward"] == 1.0
    assert (target["success"], target["over_editing"], target["quality"]) == (10.0, 10.0, 10.0)
    assert target["named_edited"] is True and target["others_kept"] is True
    assert all(o["passed"] for o in target["objects"])
    source = score_one(task, task.source_image())
    assert source["success"] == 0.0 and source["reward"] == 0.0 and source["named_edited"] is False
    assert source["others_kept"] is True                                  # the unedited source keeps the others


# ---- reward hacking: destroying a small kept object costs everything ---------------------------------------------
def test_erasing_everything_scores_zero():
    out = score_one(SMALL_REMOVE, render(16, 16, "white", ()))
    # the red square is gone (9 / 9: success 10), but so is the yellow one (0 / 9 preserved): SC = 0
    assert out["success"] == 10.0 and kept_of(out) == {"yellow": 0.0} and out["background"] == 1.0
    assert out["sc"] == 0.0 and out["reward"] <= 0.1 and out["reward"] == 0.0
    assert out["named_edited"] is True and out["others_kept"] is False and out["background_kept"] is True
    big = score_one(REMOVE, render(30, 30, "gray", ()))
    assert big["success"] == 10.0 and kept_of(big) == {"blue": 0.0} and big["reward"] == 0.0


def test_removing_the_wrong_shape_scores_zero():
    out = score_one(SMALL_REMOVE, render(16, 16, "white", (SMALL_RED,)))
    # red still there (0 / 9 of its pixels are background), yellow gone (0 / 9)
    assert out["success"] == 0.0 and kept_of(out) == {"yellow": 0.0} and out["reward"] <= 0.1
    assert out["named_edited"] is False and out["others_kept"] is False


def test_a_kept_object_shifted_by_one_pixel_is_clearly_penalised():
    shifted = Shape("square", "yellow", "top left", 1, 2, 3)                       # columns 2..4 instead of 1..3
    out = score_one(SMALL_REMOVE, render(16, 16, "white", (shifted,)))
    # yellow keeps columns 2..3 of its 3 rows: 6 / 9; the background loses column 4, rows 1..3: 235 / 238
    assert kept_of(out) == {"yellow": pytest.approx(6 / 9)}
    assert out["background"] == pytest.approx(235 / 238)
    assert out["success"] == 10.0 and out["over_editing"] == pytest.approx(10 * 6 / 9)
    assert out["reward"] == pytest.approx(reward_of(10.0, 10 * 6 / 9)) and out["reward"] < 0.9
    assert out["others_kept"] is False and out["background_kept"] is True
    # the 8x8 square of scene A shifted one pixel right keeps 7 of its 8 columns: 56 / 64 = 0.875 < PASS_FRACTION
    big = score_one(REMOVE, render(30, 30, "gray", (Shape("square", "blue", "top left", 1, 2, 8),)))
    assert kept_of(big) == {"blue": pytest.approx(56 / 64)} and big["background"] == pytest.approx(764 / 772)
    assert big["reward"] == pytest.approx(reward_of(10.0, 10 * 56 / 64)) and big["reward"] < 1.0
    assert big["others_kept"] is False


# ---- recolour ----------------------------------------------------------------------------------------------------
def test_half_the_shape_recoloured():
    edited = paint(RECOLOR.target_image(), slice(15, 19), slice(11, 19), "red")     # bottom 4 rows stay red
    out = score_one(RECOLOR, edited)
    # success = 10 * 32 / 64 = 5, blue and the background untouched, flat colours: O = sqrt(5 * 10)
    assert out["success"] == pytest.approx(5.0) and out["over_editing"] == 10.0 and out["quality"] == 10.0
    assert out["reward"] == pytest.approx(math.sqrt(50.0) / 10)
    assert edited_of(out)["success"] == pytest.approx(0.5) and edited_of(out)["passed"] is False
    assert out["named_edited"] is False and out["others_kept"] is True


def test_background_changed_when_asked_to_recolour():
    edited = render(30, 30, "black", (Shape("square", "green", "center", 11, 11, 8), BLUE))
    out = score_one(RECOLOR, edited)
    # the shape is right (success 10) and blue is kept, but none of the 772 background pixels is: SC = 0
    assert out["success"] == 10.0 and kept_of(out) == {"blue": 1.0} and out["background"] == 0.0
    assert out["reward"] == 0.0 and out["background_kept"] is False and out["others_kept"] is True


def test_recolouring_the_other_shape_too():
    edited = paint(RECOLOR.target_image(), slice(1, 9), slice(1, 9), "green")
    out = score_one(RECOLOR, edited)
    assert out["success"] == 10.0 and kept_of(out) == {"blue": 0.0} and out["reward"] == 0.0


# ---- move --------------------------------------------------------------------------------------------------------
def test_shape_moved_to_the_wrong_cell():
    wrong = Shape("square", "red", "top right", 1, 21, 8)
    out = score_one(MOVE, render(30, 30, "gray", (wrong, BLUE)))
    # the old place is vacated (64 / 64) but the new place is still background (0 / 64): success 0;
    # background in both scenes: 900 - 64 (old) - 64 (new) - 64 (blue) = 708, of which the stray square covers 64
    edited = edited_of(out)
    assert (edited["vacated"], edited["arrived"], edited["success"]) == (1.0, 0.0, 0.0)
    assert out["success"] == 0.0 and out["background"] == pytest.approx(644 / 708)
    assert out["over_editing"] == pytest.approx(10 * 644 / 708) and out["reward"] == 0.0


def test_shape_half_arrived():
    edited = paint(MOVE.target_image(), slice(25, 29), slice(21, 29), "gray")       # bottom 4 rows missing
    out = score_one(MOVE, edited)
    # vacated 64 / 64, arrived 32 / 64 -> success 10 * min(1, 0.5) = 5; the 708 background pixels all kept
    assert (edited_of(out)["vacated"], edited_of(out)["arrived"]) == (1.0, 0.5)
    assert out["success"] == pytest.approx(5.0) and out["background"] == 1.0 and kept_of(out) == {"blue": 1.0}
    assert out["reward"] == pytest.approx(math.sqrt(50.0) / 10)


def test_shape_copied_instead_of_moved():
    edited = paint(MOVE.source_image(), slice(21, 29), slice(21, 29), "red")       # arrived, never left
    out = score_one(MOVE, edited)
    assert (edited_of(out)["vacated"], edited_of(out)["arrived"]) == (0.0, 1.0)
    assert out["success"] == 0.0 and out["reward"] == 0.0 and out["named_edited"] is False


# ---- remove ------------------------------------------------------------------------------------------------------
def test_half_the_shape_removed():
    edited = paint(REMOVE.target_image(), slice(11, 15), slice(11, 19), "red")     # top 4 rows still red
    out = score_one(REMOVE, edited)
    # success 10 * 32 / 64 = 5; blue (64 / 64) and the 772 background pixels kept
    assert out["success"] == pytest.approx(5.0) and kept_of(out) == {"blue": 1.0} and out["background"] == 1.0
    assert out["reward"] == pytest.approx(math.sqrt(50.0) / 10)


# ---- background --------------------------------------------------------------------------------------------------
def test_half_the_background_changed():
    source, target = BACKGROUND.source_image(), BACKGROUND.target_image()
    edited = torch.cat([target[:, :15], source[:, 15:]], dim=1)                    # rows 0..14 black
    out = score_one(BACKGROUND, edited)
    # background pixels in rows 0..14: 15 * 30 = 450 minus blue (64, rows 1..8) minus red's rows 11..14 (4 * 8)
    # = 354 of the 772; both squares untouched
    assert out["success"] == pytest.approx(10 * 354 / 772) and out["background"] is None
    assert kept_of(out) == {"red": 1.0, "blue": 1.0} and out["over_editing"] == 10.0
    assert out["reward"] == pytest.approx(reward_of(10 * 354 / 772, 10.0))
    assert out["named_edited"] is False and out["others_kept"] is True and out["background_kept"] is None
    assert edited_of(out)["kind"] == "background" and edited_of(out)["new_colour"] == "black"


def test_background_painted_over_a_shape():
    edited = paint(BACKGROUND.target_image(), slice(1, 9), slice(1, 9), "black")
    out = score_one(BACKGROUND, edited)
    assert out["success"] == 10.0 and kept_of(out) == {"red": 1.0, "blue": 0.0} and out["reward"] == 0.0
    assert out["named_edited"] is True and out["others_kept"] is False


# ---- quality, details --------------------------------------------------------------------------------------------
def test_uniform_tint_costs_quality_only():
    edited = (RECOLOR.target_image().to(torch.int16) + 12).to(torch.uint8)   # no channel reaches 255 here
    out = score_one(RECOLOR, edited)
    # every pixel is 12 from its palette colour: matches (12 <= 32), quality 10 * (1 - 12 / 48) = 7.5
    assert out["sc"] == 10.0 and out["quality"] == pytest.approx(7.5)
    assert out["reward"] == pytest.approx(math.sqrt(75.0) / 10)


def test_details_hold_every_verdict():
    edited = paint(RECOLOR.target_image(), slice(1, 9), slice(1, 2), "gray")      # blue loses column 1: 56 / 64
    out = score_one(RECOLOR, edited)
    assert out["objects"] == [
        {"role": "edited", "index": 0, "kind": "square", "colour": "red", "cell": "center", "new_colour": "green",
         "success": 1.0, "passed": True},
        {"role": "kept", "index": 1, "kind": "square", "colour": "blue", "cell": "top left",
         "preserved": pytest.approx(56 / 64), "passed": False}]
    assert (out["task_id"], out["edit"], out["background"]) == ("hand", "recolor", 1.0)
    assert (out["named_edited"], out["others_kept"], out["background_kept"]) == (True, False, True)
    assert out["sc"] == pytest.approx(10 * 56 / 64) and out["pq"] == out["quality"] == 10.0
    assert out["overall"] == pytest.approx(math.sqrt(10 * 56 / 64 * 10))
    assert PASS_FRACTION == 0.9
    # a one-shape scene has no other object to keep
    lone = ShapeTask("lone", 30, 30, "gray", (RED,), Edit("remove", shape=0), "Remove the red square.")
    alone = score_one(lone, lone.target_image())
    assert alone["others_kept"] is None and [o["role"] for o in alone["objects"]] == ["edited"]


def test_pass_threshold_on_the_demo_size():
    # 3x3 squares: 9 / 9 passes; 8 / 9 = 0.889 < 0.9 does not
    one_off = paint(SMALL_REMOVE.target_image(), slice(1, 2), slice(1, 2), "white")
    out = score_one(SMALL_REMOVE, one_off)
    assert kept_of(out) == {"yellow": pytest.approx(8 / 9)} and out["others_kept"] is False
    assert out["reward"] == pytest.approx(reward_of(10.0, 10 * 8 / 9))


# ---- generated tasks, input forms, errors ------------------------------------------------------------------------
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


def test_generated_remove_tasks_erase_everything():
    tasks = make_tasks(64, seed=4, size=16, edits=("remove",), max_shapes=3)
    sources, _ = task_images(tasks)
    blank = torch.stack([torch.tensor(PALETTE[t.background], dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16)
                         for t in tasks])
    out = ProgrammaticReward().score(sources, [t.instruction for t in tasks], blank, tasks=tasks)
    several = torch.tensor([len(t.shapes) > 1 for t in tasks])
    assert several.any() and (~several).any()
    assert (out.reward[several] == 0.0).all() and (out.reward[~several] == 1.0).all()   # one shape: that IS the edit
    assert [d["others_kept"] for d in out.details] == [False if s else None for s in several.tolist()]


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
    meta = reward.metadata()
    assert reward.kind == "programmatic" and meta["match_tolerance"] == 32 and meta["pass_fraction"] == 0.9
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
