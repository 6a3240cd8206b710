"""GCPO's pieces against hand-computed cases and float64 references: pair rewards (ties, unparseable traces, N = 1),
within-group advantages, the k3 KL estimator, and the clipped token loss's gradient."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine.verifier_train import gcpo

nan = math.nan


def test_pair_rewards_count_the_other_side_beaten():
    r_w, r_l = gcpo.pair_rewards(torch.tensor([0.9, 0.5, 0.2]), torch.tensor([0.5, 0.1, 0.95]))
    # preferred 0.9 beats 0.5, 0.1; 0.5 beats 0.1 (ties beat nothing); 0.2 beats 0.1
    assert r_w.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    # rejected 0.5 is below 0.9 only; 0.1 below all three; 0.95 below none
    assert r_l.tolist() == pytest.approx([1 / 3, 1.0, 0.0])


def test_unparseable_traces_get_zero_and_lose_to_every_parseable_opponent():
    r_w, r_l = gcpo.pair_rewards(torch.tensor([nan, 0.4]), torch.tensor([0.4, nan]))
    assert r_w.tolist() == pytest.approx([0.0, 0.5])       # 0.4 ties 0.4 (no win), wins against the unparseable one
    assert r_l.tolist() == pytest.approx([0.5, 0.0])       # 0.4 is not below 0.4, wins against the unparseable one
    r_w, r_l = gcpo.pair_rewards(torch.tensor([nan]), torch.tensor([nan]))
    assert r_w.tolist() == r_l.tolist() == [0.0]


def test_n_equal_one_is_a_single_comparison():
    assert [t.item() for t in gcpo.pair_rewards(torch.tensor([0.7]), torch.tensor([0.3]))] == [1.0, 1.0]
    assert [t.item() for t in gcpo.pair_rewards(torch.tensor([0.3]), torch.tensor([0.7]))] == [0.0, 0.0]
    assert [t.item() for t in gcpo.pair_rewards(torch.tensor([0.5]), torch.tensor([0.5]))] == [0.0, 0.0]


def test_group_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.25, 0.25]])
    advantages, zero = gcpo.group_advantages(rewards, eps=0.0)
    std = math.sqrt(((0.5 ** 2) * 2) / 3)                                  # population std of 0, .5, 1
    assert advantages[0].tolist() == pytest.approx([-0.5 / std, 0.0, 0.5 / std])
    assert advantages[1].tolist() == [0.0, 0.0, 0.0] and zero.tolist() == [False, True]


def test_k3_is_unbiased_for_the_kl_divergence():
    p = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=torch.float64), 0)
    q = torch.softmax(torch.tensor([1.0, 0.5, -0.5, 0.0], dtype=torch.float64), 0)
    expected_k3 = (p * gcpo.kl_k3(p.log(), q.log())).sum()                # E_{x~p}[k3]
    assert float(expected_k3) == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-12)
    assert (gcpo.kl_k3(p.log(), q.log()) >= 0).all()


def reference_loss(logp, logp_old, logp_ref, advantages, mask, clip_eps, kl_beta):
    """The GCPO token objective written out in float64, token by token."""
    total, count = 0.0, 0
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[b, t]:
                continue
            ratio = torch.exp(logp[b, t] - logp_old[b, t])
            clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
            objective = torch.minimum(ratio * advantages[b], clipped * advantages[b])
            delta = logp_ref[b, t] - logp[b, t]
            total = total - objective + kl_beta * (torch.exp(delta) - delta - 1)
            count += 1
    return total / count


def test_token_loss_gradient_matches_the_float64_reference_on_a_tiny_model():
    torch.manual_seed(0)
    weight = torch.randn(5, 7, requires_grad=True)                       # a tiny "policy": logits = x W
    inputs, tokens = torch.randn(3, 4, 5), torch.randint(0, 7, (3, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    advantages = torch.tensor([1.2, -0.7, 0.3])

    def token_logp(w):
        return torch.log_softmax(inputs.to(w.dtype) @ w, -1).gather(-1, tokens[..., None])[..., 0]   # [3, 4]

    with torch.no_grad():
        old = token_logp(weight) + 0.3 * torch.randn(3, 4)                 # a sampling policy one update back
        ref = token_logp(weight) - 0.2 * torch.randn(3, 4)
    loss, stats = gcpo.token_loss(token_logp(weight), old, advantages, mask, clip_eps=0.2, kl_beta=0.05,
                                  logp_ref=ref)
    (grad,) = torch.autograd.grad(loss, weight)
    weight64 = weight.detach().double().requires_grad_(True)
    expected = reference_loss(token_logp(weight64), old.double(), ref.double(), advantages.double(), mask, 0.2, 0.05)
    (grad64,) = torch.autograd.grad(expected, weight64)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-4, atol=1e-6)
    assert 0 < float(stats["clip_fraction"]) < 1


def test_on_policy_the_ratio_is_one_and_nothing_is_clipped():
    logp = torch.log(torch.rand(2, 5)).requires_grad_(True)
    loss, stats = gcpo.token_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 5, dtype=torch.bool))
    assert float(stats["clip_fraction"]) == 0.0 and float(stats["ratio_max"]) == 1.0
    (grad,) = torch.autograd.grad(loss, logp)                              # -A / tokens on every token
    torch.testing.assert_close(grad, torch.tensor([[-0.1] * 5, [0.1] * 5]))
