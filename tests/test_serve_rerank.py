"""Best-of-N reranking (editrl_engine.serve.rerank): the best is the argmax of an independent reward.score of the
same candidates, the N candidates are one group (the pair encoded once, one ode_sample call, one score_groups
call), candidate i is the sample of seed + i, NaN never wins, and the written outputs (JSON, contact sheet)."""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from editrl_engine.data import make_tasks, task_images
from editrl_engine.reward.programmatic import ProgrammaticReward
from editrl_engine.serve import RerankResult, rerank
from editrl_engine.serve.outputs import contact_sheet, jsonable, write_json_atomic, write_png_atomic

from .serve_fakes import FixedReward, tiny_judge, tiny_policy

STEPS = 2
rerank_module = importlib.import_module("editrl_engine.serve.rerank")   # the module, not the function


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.fixture(scope="module")
def judge():
    return tiny_judge()


@pytest.fixture(scope="module")
def task():
    return make_tasks(1, seed=3, size=32)[0]


def test_best_is_the_argmax_of_an_independent_score(policy, judge, task):
    result = rerank(policy, judge, task.source_image(), task.instruction, n=6, seed=0, num_steps=STEPS)
    images = [c.image for c in result.candidates]
    reference = judge.score([task.source_image()] * 6, [task.instruction] * 6, images).reward   # [6], unshared
    assert isinstance(result, RerankResult) and result.group_path
    torch.testing.assert_close(result.rewards, reference, atol=1e-5, rtol=0)
    assert math.isclose(result.best_reward, float(reference.max()), abs_tol=1e-5)
    top2 = reference.topk(2).values
    if float(top2[0] - top2[1]) > 1e-4:            # a clear winner: the same index
        assert result.best_index == int(reference.argmax())
    assert torch.equal(result.best_image, images[result.best_index])
    assert result.failures == 0 and result.error is None


class CraftedPolicy:
    """The tiny policy, but its decode returns known images (source, blends, the exact target), so the
    programmatic verifier's ranking of the candidates is known."""

    def __init__(self, policy, images: torch.Tensor):
        self.policy, self.images, self.family = policy, images, "crafted"

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def decode(self, x0, cond):
        assert x0.shape[0] == self.images.shape[0]
        return self.images


def test_programmatic_reward_picks_the_exact_target(policy, task):
    sources, targets = task_images([task])                                          # uint8 [1, 3, H, W]
    source, target = sources[0], targets[0]
    blend = lambda a: (a * target.float() + (1 - a) * source.float()).round().to(torch.uint8)  # noqa: E731
    images = torch.stack([source, blend(0.3), target, blend(0.6), torch.zeros_like(source)])   # [5, 3, H, W]
    reward = ProgrammaticReward([task])
    result = rerank(CraftedPolicy(policy, images), reward, source, task.instruction, n=5, num_steps=STEPS)
    reference = reward.score([source] * 5, [task.instruction] * 5, list(images)).reward
    assert not result.group_path                    # the verifier has no group path: reward.score ran
    assert result.best_index == 2 == int(reference.argmax()) and result.best_reward == pytest.approx(1.0)
    assert torch.equal(result.rewards, reference)


def test_candidates_are_one_group(policy, judge, task, monkeypatch):
    encodes, samples, groups = [], [], []
    real_encode, real_ode, real_groups = policy.encode, rerank_module.ode_sample, judge.score_groups
    monkeypatch.setattr(policy, "encode", lambda s, i: encodes.append(len(s)) or real_encode(s, i))
    monkeypatch.setattr(rerank_module, "ode_sample",
                        lambda p, cond, **kw: samples.append((cond.batch_size, kw["group_size"]))
                        or real_ode(p, cond, **kw))
    monkeypatch.setattr(judge, "score_groups",
                        lambda s, i, c: groups.append([len(g) for g in c]) or real_groups(s, i, c))
    rerank(policy, judge, task.source_image(), task.instruction, n=5, num_steps=STEPS)
    assert encodes == [1]                           # the pair encoded once
    assert samples == [(1, 5)]                      # one sampling call: 1 condition row, G = 5
    assert groups == [[5]]                          # one shared-prefix call with one group of 5


def test_candidate_i_is_the_sample_of_seed_plus_i(policy, task):
    reward = FixedReward([0.1, 0.2, 0.3])
    both = rerank(policy, reward, task.source_image(), task.instruction, n=2, seed=7, num_steps=STEPS)
    second = rerank(policy, reward, task.source_image(), task.instruction, n=1, seed=8, num_steps=STEPS)
    assert [c.seed for c in both.candidates] == [7, 8]
    assert torch.equal(both.candidates[1].image, second.candidates[0].image)
    assert not torch.equal(both.candidates[0].image, both.candidates[1].image)


def test_nan_never_wins_and_all_nan_says_so(policy, task):
    nan = float("nan")
    some = rerank(policy, FixedReward([nan, 0.3, nan, 0.2]), task.source_image(), task.instruction, n=4,
                  num_steps=STEPS)
    assert some.best_index == 1 and some.failures == 2 and some.error is None
    assert some.candidates[0].error == "unparseable judge answer" and some.candidates[1].error is None

    none = rerank(policy, FixedReward([nan] * 3), task.source_image(), task.instruction, n=3, num_steps=STEPS)
    assert none.best_index is None and none.best is None and none.best_image is None and none.best_reward is None
    assert none.failures == 3 and "all 3 rewards are NaN" in none.error and "unparseable" in none.error
    assert json.loads(json.dumps(jsonable(none.to_dict()), allow_nan=False))["best_index"] is None


@pytest.mark.parametrize("bad, message", [(dict(n=0), r"n \(candidates"), (dict(num_steps=0), "num_steps"),
                                          (dict(instruction=" "), "instruction"), (dict(solver="rk4"), "solver")])
def test_bad_arguments_name_the_problem(policy, task, bad, message):
    arguments = dict(source=task.source_image(), instruction=task.instruction, n=2, num_steps=STEPS) | bad
    with pytest.raises(ValueError, match=message):
        rerank(policy, FixedReward([0.5, 0.5]), **arguments)


def test_outputs_are_atomic_and_json_safe(tmp_path):
    path = write_json_atomic(tmp_path / "r.json",
                             {"reward": float("nan"), "rewards": torch.tensor([0.5, float("inf")])})
    assert json.loads(path.read_text()) == {"reward": None, "rewards": [0.5, None]}
    images = [torch.full((3, 16, 16), v, dtype=torch.uint8) for v in (0, 128, 255)]
    sheet = contact_sheet(images, [0.1, float("nan"), 0.9], best=2)
    assert sheet.mode == "RGB" and sheet.width >= 3 * 16 and sheet.height > 16
    png = write_png_atomic(tmp_path / "sheet.png", sheet)
    with Image.open(png) as reread:
        assert reread.size == sheet.size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "sheet.png"]     # no temporary files left
    with pytest.raises(ValueError, match="one reward per image"):
        contact_sheet(images, [0.1])


def test_package_import_stays_light():
    code = ("import sys, editrl_engine; assert 'editrl_engine.serve' not in sys.modules; "
            "from editrl_engine import rerank, RerankResult; import editrl_engine.serve as s; "
            "assert rerank is s.rerank and RerankResult is s.RerankResult; "
            "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, 'the web stack was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
