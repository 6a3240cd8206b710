"""The run's records and pictures: metrics.jsonl round trip and resume, the disabled logger, TensorBoard scalars,
candidate / before-after grids pixel by pixel, the reward curve, atomic PNG writes."""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.engine import figures
from editrl_engine.engine.metrics import RunLogger, read_metrics, tb_tag

HAS_TB = importlib.util.find_spec("tensorboard") is not None


def _images(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)


# ---- metrics.jsonl ----

def test_jsonl_round_trip_nan_to_null_and_truncated_last_line(tmp_path):
    with RunLogger(tmp_path, total_steps=3, tensorboard=False, progress=False) as log:
        log.log_step(0, {"reward_mean": 0.5, "loss": float("nan"), "grad_norm": float("inf"), "n": 3})
        log.log_step(1, {"reward_mean": torch.tensor(0.75), "loss": np.float32(0.25)})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 0, "reward_mean": 0.5, "loss": None, "grad_norm": None, "n": 3}
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    assert math.isnan(rows[0]["loss"]) and math.isnan(rows[0]["grad_norm"]) and rows[0]["n"] == 3
    assert rows[1] == {"step": 1, "reward_mean": 0.75, "loss": 0.25}

    with open(tmp_path / "metrics.jsonl", "a") as f:          # a crash mid-write
        f.write('{"step": 2, "reward_me')
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]

    (tmp_path / "bad.jsonl").write_text('{"step": 0}\n{"ste\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):          # damage before the last line is an error
        read_metrics(tmp_path / "bad.jsonl")


def test_resume_drops_lines_at_or_after_start_step(tmp_path):
    with RunLogger(tmp_path, total_steps=5, tensorboard=False, progress=False) as log:
        for step in range(4):
            log.log_step(step, {"reward_mean": step / 10})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "rew')                          # killed while writing step 4
    with RunLogger(tmp_path, total_steps=5, start_step=2, tensorboard=False, progress=False) as log:
        assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]
        for step in range(2, 5):
            log.log_step(step, {"reward_mean": 1.0 + step})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["reward_mean"] for r in rows] == [0.0, 0.1, 3.0, 4.0, 5.0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_disabled_logger_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLogger(out, total_steps=2, enabled=False) as log:
        log.log_step(0, {"reward_mean": 1.0})
        log.log_images(0, "grid", torch.zeros(3, 4, 4, dtype=torch.uint8))
        log.log_text("hello")
    assert not out.exists()
    assert capsys.readouterr().out == ""


def test_images_and_text_are_written(tmp_path, capsys):
    gen = torch.Generator().manual_seed(0)
    img = _images(gen, 3, 5, 7)                                 # [3, H, W]
    with RunLogger(tmp_path, total_steps=1, tensorboard=False, progress=False) as log:
        path = log.log_images(12, "train/candidates", img)
        log.log_text("checkpoint saved")
    assert path == tmp_path / "images" / "train_candidates-000012.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img.permute(1, 2, 0).numpy())
    assert "checkpoint saved" in capsys.readouterr().out
    assert (tmp_path / "log.txt").read_text().rstrip().endswith("checkpoint saved")


def test_tb_tag_groups_by_prefix():
    assert tb_tag("reward_mean") == "reward/mean"
    assert tb_tag("time_rollout") == "time/rollout"
    assert tb_tag("clipfrac") == "clipfrac"
    assert tb_tag("eval/reward") == "eval/reward"


@pytest.mark.skipif(not HAS_TB, reason="tensorboard is not installed (pip install tensorboard)")
def test_tensorboard_scalars_images_and_resume_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = [0.25, 0.5, 0.875]
    with RunLogger(tmp_path, total_steps=3, progress=False) as log:
        assert log.tensorboard_on
        for step, v in enumerate(values):
            log.log_step(step, {"reward_mean": v, "clipfrac": v / 2})
        log.log_images(2, "candidates", torch.zeros(3, 8, 8, dtype=torch.uint8))
    acc = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"reward/mean", "clipfrac"} <= set(acc.Tags()["scalars"])
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == list(enumerate(values))
    assert [e.value for e in acc.Scalars("clipfrac")] == [v / 2 for v in values]
    assert [e.step for e in acc.Images("candidates")] == [2]

    with RunLogger(tmp_path, total_steps=3, start_step=1, progress=False) as log:   # resume: steps >= 1 purged
        for step in (1, 2):
            log.log_step(step, {"reward_mean": 10.0 + step})
    acc = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(0, 0.25), (1, 11.0), (2, 12.0)]


def test_missing_tensorboard_is_noted_once(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tb(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with RunLogger(tmp_path, total_steps=1, progress=False) as log:
        assert not log.tensorboard_on
        log.log_step(0, {"reward_mean": 1.0})
    assert capsys.readouterr().out.count("pip install tensorboard") == 1
    assert not (tmp_path / "tb").exists()


# ---- figures ----

def _tile(image: Image.Image, i: int, j: int, h: int, w: int, top: int = 0) -> np.ndarray:
    """The [h, w, 3] tile in row i, column j, per the layout in figures' docstring."""
    x = figures.PAD + j * (w + figures.PAD)
    y = top + figures.PAD + i * (h + figures.CAPTION_H + figures.PAD)
    return np.asarray(image)[y:y + h, x:x + w]


def _upscaled(img: torch.Tensor, s: int) -> np.ndarray:
    return img.permute(1, 2, 0).numpy().repeat(s, axis=0).repeat(s, axis=1)   # [3, H, W] -> [H*s, W*s, 3]


def test_candidate_grid_size_and_pixels():
    gen = torch.Generator().manual_seed(1)
    P, G, H, W, s = 3, 4, 16, 12, 4
    sources = _images(gen, P, 3, H, W)                          # [P, 3, H, W]
    candidates = _images(gen, P, G, 3, H, W)                    # [P, G, 3, H, W]
    rewards = torch.rand(P, G, generator=gen)                   # [P, G]
    rewards[1, 2] = float("nan")
    grid = figures.candidate_grid(sources, candidates, rewards, scale=s)
    pad, cap = figures.PAD, figures.CAPTION_H
    assert grid.size == (pad + (G + 1) * (W * s + pad), pad + P * (H * s + cap + pad))
    for i, j in [(0, 0), (1, 0), (0, 1), (1, 3), (2, 4)]:
        want = sources[i] if j == 0 else candidates[i, j - 1]
        np.testing.assert_array_equal(_tile(grid, i, j, H * s, W * s), _upscaled(want, s))

    few = figures.candidate_grid(sources, candidates, rewards, scale=1, max_groups=2)
    assert few.size == (pad + (G + 1) * (W + pad), pad + 2 * (H + cap + pad))
    with pytest.raises(ValueError, match="candidates"):
        figures.candidate_grid(sources, candidates[:, :, :, :8], rewards)


def test_before_after_grid_size_and_pixels():
    gen = torch.Generator().manual_seed(2)
    N, H, W, s = 2, 16, 16, 3
    src, before, after, target = (_images(gen, N, 3, H, W) for _ in range(4))   # each [N, 3, H, W]
    grid = figures.before_after_grid(src, before, after, target, torch.tensor([0.1, 0.2]),
                                     torch.tensor([0.8, float("nan")]), scale=s)
    pad, cap, top = figures.PAD, figures.CAPTION_H, figures.HEADER_H
    assert grid.size == (pad + 4 * (W * s + pad), top + pad + N * (H * s + cap + pad))
    for i in range(N):
        for j, imgs in enumerate((src, before, after, target)):
            np.testing.assert_array_equal(_tile(grid, i, j, H * s, W * s, top), _upscaled(imgs[i], s))
    no_target = figures.before_after_grid(src, before, after, scale=s)
    assert no_target.size[0] == pad + 3 * (W * s + pad)


def _plot_area(image: Image.Image) -> np.ndarray:
    left, top, right, bottom = figures.PLOT_MARGINS
    w, h = image.size
    return np.asarray(image)[top + 1:h - bottom - 1, left + 1:w - right]      # inside the axes


def _has(area: np.ndarray, color) -> bool:
    return bool((area == np.array(color, dtype=np.uint8)).all(-1).any())


def test_reward_curve_draws_the_data():
    steps = list(range(40))
    rewards = [0.5 + 0.01 * s for s in steps]
    rewards[10:13] = [float("nan")] * 3
    image = figures.reward_curve(steps, rewards, eval_points=[(0, 0.5), (39, 0.9)], size=(500, 300))
    assert image.size == (500, 300) and image.mode == "RGB"
    area = _plot_area(image)
    assert _has(area, figures.TRAIN_COLOR) and _has(area, figures.EMA_COLOR) and _has(area, figures.EVAL_COLOR)


def test_reward_curve_degenerate_inputs():
    nan = float("nan")
    for steps, rewards, evals in [([0, 1, 2], [nan, nan, nan], ()), ([5], [0.3], ()), ([], [], [(3, 0.7)]),
                                  ([], [], ()), ([0, 1], [0.5, 0.5], ())]:
        image = figures.reward_curve(steps, rewards, eval_points=evals, size=(320, 200))
        assert image.size == (320, 200)
    assert _has(_plot_area(figures.reward_curve([5], [0.3], size=(320, 200))), figures.EMA_COLOR)
    with pytest.raises(ValueError, match="length"):
        figures.reward_curve([0, 1], [0.5])


def test_save_png_is_atomic(tmp_path):
    image = Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3))
    path = figures.save_png(image, tmp_path / "sub" / "grid.png")
    assert path == tmp_path / "sub" / "grid.png"
    figures.save_png(image, path)                                # overwrite in place
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(image))

    class Broken(Image.Image):
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        figures.save_png(Broken(), path)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]   # the old file survives, no temp left
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(image))
