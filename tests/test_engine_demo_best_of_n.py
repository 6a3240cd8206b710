"""Best-of-N on the demo's held-out tasks (engine/demo/best_of_n.py) against an independent computation: the
same candidates (task, seed), the pick the highest programmatic reward (first on a tie), and its correctness
judged by the object checks of tests/demo_reference.py, not by the reward's verdicts."""
from __future__ import annotations

import pytest
import torch

from editrl_engine.engine.config import load_config
from editrl_engine.engine.demo import pretrain
from editrl_engine.engine.demo import task as demo_task
from editrl_engine.engine.demo.best_of_n import best_of_n_success
from editrl_engine.engine.evaluation import sample_items
from editrl_engine.engine.tasks import TaskSet
from editrl_engine.reward.programmatic import ProgrammaticReward

from . import demo_reference as evaluate


def test_best_of_n_matches_an_independent_pick_and_check():
    count, ns = 24, (1, 2, 4)
    held_out = TaskSet.from_config(load_config("demo", [f"data.eval_tasks={count}"]).data, held_out=True)
    tasks = list(demo_task.heldout_tasks())[:count]
    policy = pretrain.load_demo_editor()
    rates = best_of_n_success(policy, held_out, ns)

    # candidate k of task t from seed EVAL_SEED + k (sample_items: an item's image depends on its task and seed only)
    items = [(t, demo_task.EVAL_SEED + k) for t in range(count) for k in range(max(ns))]
    images = sample_items(policy, held_out, items, num_steps=demo_task.EVAL_STEPS).view(count, max(ns), 3, 16, 16)
    rewards, correct = torch.zeros(count, max(ns)), torch.zeros(count, max(ns), dtype=torch.bool)
    for t, task in enumerate(tasks):
        rewards[t] = ProgrammaticReward().score([task.source_image()] * max(ns), [task.instruction] * max(ns),
                                                list(images[t]), tasks=[task] * max(ns)).reward
        for k in range(max(ns)):
            removed, kept = evaluate.object_verdicts(task, images[t, k])
            correct[t, k] = removed and kept is not False
    assert correct.any() and not correct.all()                                  # picks can be right or wrong
    for n in ns:
        picks = rewards[:, :n].argmax(1)                                        # the first maximum
        assert rates[n] == pytest.approx(correct[torch.arange(count), picks].float().mean().item()), n


def test_best_of_n_rejects_bad_counts():
    held_out = TaskSet.from_config(load_config("demo", ["data.eval_tasks=1"]).data, held_out=True)
    with pytest.raises(ValueError, match="candidate counts >= 1"):
        best_of_n_success(pretrain.load_demo_editor(), held_out, (0, 4))
