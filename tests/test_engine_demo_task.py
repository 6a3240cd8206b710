"""The embedded demo's pieces: its task sets are fixed and disjoint, the warm-up targets leave a ghost of the
erased shape (and nothing else differs from the exact target), the VAE reconstructs the images, the shipped
warm-up loads and is small, and the warm-up's training step lowers the flow-matching loss."""
from __future__ import annotations

import pytest
import torch

from editrl_engine.engine.demo import pretrain
from editrl_engine.engine.demo import task as demo_task

from . import demo_reference as evaluate


def ids(tasks) -> list[tuple[str, str]]:
    return [(t.id, t.instruction) for t in tasks]


def test_task_sets_are_deterministic():
    demo_task.heldout_tasks.cache_clear()
    demo_task.rl_tasks.cache_clear()
    first = ids(demo_task.heldout_tasks()), ids(demo_task.rl_tasks())
    demo_task.heldout_tasks.cache_clear()
    demo_task.rl_tasks.cache_clear()
    assert (ids(demo_task.heldout_tasks()), ids(demo_task.rl_tasks())) == first
    tasks_a, targets_a = demo_task.warmup_batch(3, 8)
    tasks_b, targets_b = demo_task.warmup_batch(3, 8)
    assert ids(tasks_a) == ids(tasks_b) and torch.equal(targets_a, targets_b)
    assert len(demo_task.heldout_tasks()) == demo_task.HELDOUT_SIZE
    assert {t.edit.kind for t in demo_task.heldout_tasks()} == set(demo_task.EDITS)
    assert all(t.height == t.width == demo_task.SIZE for t in demo_task.heldout_tasks())


def test_heldout_is_disjoint_from_training():
    held = {demo_task.task_key(t) for t in demo_task.heldout_tasks()}
    assert len(held) == demo_task.HELDOUT_SIZE
    assert not held & {demo_task.task_key(t) for t in demo_task.rl_tasks()}
    warmup = [t for step in range(20) for t in demo_task.warmup_batch(step, 32)[0]]
    assert not held & {demo_task.task_key(t) for t in warmup}


def test_warmup_targets_leave_a_ghost_of_the_erased_shape():
    from editrl_engine.data.shapes import PALETTE
    from editrl_engine.reward.programmatic import MATCH_TOLERANCE
    tasks, targets = demo_task.warmup_batch(0, 64)
    _, exact = demo_task.warmup_batch(0, 64, ghost=0)
    assert torch.equal(exact, torch.stack([t.target_image() for t in tasks]))
    for task, target, right in zip(tasks, targets.to(torch.int64), exact.to(torch.int64)):
        differs = (target != right).any(0)                                            # [H, W]
        named = task.shapes[task.edit.shape]
        box = torch.zeros_like(differs)
        box[named.top: named.top + named.size, named.left: named.left + named.size] = True
        assert differs.any() and not (differs & ~box).any()                           # only the erased shape
        background, colour = (torch.tensor(PALETTE[c]) for c in (task.background, named.color))
        ghost = target[:, differs].T                                                  # [n, 3], one colour
        assert (ghost == ghost[0]).all()
        # hand-computed: GHOST levels from the background in the channel where the shape's colour differs most
        distance = (ghost[0] - background).abs()
        channel = int((colour - background).abs().argmax())
        assert int(distance[channel]) == demo_task.GHOST == int(distance.max())
        assert torch.equal(torch.sign(ghost[0] - background), torch.sign(colour - background) * (distance > 0))
        assert demo_task.GHOST > MATCH_TOLERANCE                                      # the verifier sees it


def test_shipped_checkpoint_loads_and_is_small():
    assert pretrain.CHECKPOINT.stat().st_size < 2 * 1024 * 1024
    policy = pretrain.load_demo_policy()
    assert policy.vae_scale_factor == 1
    assert 0.2e6 < policy.metadata()["transformer_parameters"] < 0.35e6


@pytest.mark.parametrize("source", ["built", "shipped"])
def test_vae_reconstructs_shapes_images(source):
    policy = pretrain.build_policy() if source == "built" else pretrain.load_demo_policy()
    tasks, targets = demo_task.warmup_batch(0, 16)
    images = torch.cat([torch.stack([t.source_image() for t in tasks]), targets])  # uint8 [2B, 3, H, W]
    noise = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = torch.cat([images, noise])
    cond = policy.encode(list(images), ["x"] * len(images))
    decoded = policy.decode(cond.tensors["source_latents"], cond)                    # uint8 [N, 3, H, W]
    assert (decoded.to(torch.int16) - images.to(torch.int16)).abs().max() <= 1
    latents = cond.tensors["source_latents"]                                         # [N, 64, 12]: the pixels
    assert latents.shape[1:] == (64, 12) and latents.abs().max() <= 1.0 + 1e-3


def test_pretrain_lowers_the_loss(tmp_path):
    def fixed_loss(policy) -> float:
        with torch.no_grad():
            return pretrain.flow_matching_loss(policy, 0, torch.Generator().manual_seed(7), batch_size=16).item()
    before = fixed_loss(pretrain.build_policy(seed=0))
    path = pretrain.pretrain(tmp_path / "w.safetensors", steps=3, seed=0, batch_size=16, progress=False)
    after = fixed_loss(pretrain.load_demo_policy(path))
    assert after < 0.9 * before


def test_heldout_reward_is_deterministic():
    policy = pretrain.load_demo_policy()
    tasks = demo_task.heldout_tasks()[:6]
    first = evaluate.heldout_rewards(policy, tasks, num_steps=2)
    assert first.shape == (6,) and ((first >= 0) & (first <= 1)).all()
    assert torch.equal(first, evaluate.heldout_rewards(policy, tasks, num_steps=2))


def test_token_weights_mark_the_patches_that_hold_a_shape():
    tasks = [demo_task.task(demo_task.WARMUP_SEED, i) for i in range(8)]
    weights = pretrain.token_weights(tasks, object_weight=10.0)                       # [B, 64]
    for task, row in zip(tasks, weights):
        expected = torch.ones(8, 8)
        for shape in task.shapes:                                                     # hand-computed from boxes
            mask = torch.zeros(16, 16, dtype=torch.bool)
            from editrl_engine.data.shapes import shape_mask
            mask[shape.top: shape.top + shape.size, shape.left: shape.left + shape.size] = \
                shape_mask(shape.kind, shape.size)
            for y, x in mask.nonzero().tolist():
                expected[y // 2, x // 2] = 10.0                                        # token = 2x2 patch, row-major
        assert torch.equal(row, expected.flatten())
