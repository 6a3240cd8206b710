"""The model worker of the server (editrl_engine.serve.batching.Batcher), without HTTP: a lone request is scored
at once, requests still arriving are waited for and merged, max_batch splits batches, a cancelled request is
skipped, a failing request is isolated, the queue is bounded, and close() drains what was admitted."""
from __future__ import annotations

import threading

import pytest

from editrl_engine.serve.batching import Batcher, CallJob, Closed, GroupRequest, QueueFull

from .serve_fakes import GroupCountingReward, red_mean, solid

LONG_WAIT_S = 60.0            # a max_wait the tests must never sit through


def job(instruction: str, *reds: int) -> GroupRequest:
    return GroupRequest(solid((1, 2, 3)), instruction, [solid((r, 0, 0)) for r in reds])


def test_a_lone_request_is_not_held_for_max_wait():
    batcher = Batcher(GroupCountingReward(), max_batch=64, max_wait_s=LONG_WAIT_S)
    outcome = batcher.submit(job("a", 10, 20)).result(timeout=LONG_WAIT_S / 2)
    assert outcome.batch.reward.tolist() == pytest.approx([10 / 255, 20 / 255]) and outcome.batch_requests == 1
    assert batcher.close(timeout=30)


def test_requests_still_arriving_are_waited_for_and_merged():
    reward = GroupCountingReward()
    batcher = Batcher(reward, max_batch=64, max_wait_s=LONG_WAIT_S)
    with batcher.arriving():                       # a second request is being read while the first is queued
        first = batcher.submit(job("a", 10))
        with batcher.arriving():
            second = batcher.submit(job("b", 20, 30))
    results = first.result(timeout=30), second.result(timeout=30)
    assert reward.calls == [("groups", [1, 2])]
    assert results[0].batch.reward.tolist() == pytest.approx([10 / 255])
    assert results[1].batch.reward.tolist() == pytest.approx([20 / 255, 30 / 255])
    assert all(r.batch_requests == 2 and r.batch_candidates == 3 for r in results)
    assert batcher.close(timeout=30)


def test_max_batch_splits_and_a_large_request_runs_alone():
    gate = threading.Event()
    reward = GroupCountingReward(gate=gate)
    batcher = Batcher(reward, max_batch=4, max_wait_s=0.0)
    blocker = batcher.submit(job("x", 1))
    reward.entered.wait(30)
    futures = [batcher.submit(job("a", 1, 2)), batcher.submit(job("b", 3, 4)), batcher.submit(job("c", *range(6))),
               batcher.submit(job("d", 5))]
    gate.set()
    assert [f.result(timeout=30).batch_requests for f in [blocker, *futures]] == [1, 2, 2, 1, 1]
    assert reward.calls == [("groups", [1]), ("groups", [2, 2]), ("groups", [6]), ("groups", [1])]
    assert batcher.close(timeout=30)


def test_cancelled_requests_are_skipped_and_a_failing_one_is_isolated():
    gate = threading.Event()
    reward = GroupCountingReward(gate=gate, fail_on="explode")
    batcher = Batcher(reward, max_batch=64, max_wait_s=0.0)
    blocker = batcher.submit(job("x", 1))
    reward.entered.wait(30)
    gone = batcher.submit(job("gone", 2))
    bad, good = batcher.submit(job("explode", 3)), batcher.submit(job("fine", 4))
    assert gone.cancel()                            # its caller gave up before the worker reached it
    gate.set()
    assert blocker.result(timeout=30).batch.reward.tolist() == pytest.approx([red_mean(solid((1, 0, 0)))])
    with pytest.raises(RuntimeError, match="crashed on 'explode'"):
        bad.result(timeout=30)
    assert good.result(timeout=30).batch.reward.tolist() == pytest.approx([4 / 255])
    assert reward.calls == [("groups", [1]), ("groups", [1, 1]), ("groups", [1]), ("groups", [1])]
    assert batcher.close(timeout=30)


def test_bounded_queue_and_close_drains_what_was_admitted():
    gate = threading.Event()
    reward = GroupCountingReward(gate=gate)
    batcher = Batcher(reward, max_batch=1, max_wait_s=0.0, max_queue=2)
    running = batcher.submit(job("x", 1))
    reward.entered.wait(30)
    queued = [batcher.submit(job("y", 2)), batcher.submit(CallJob(lambda: "called"))]
    with pytest.raises(QueueFull, match="2 requests waiting"):
        batcher.submit(job("z", 3))
    closer = threading.Thread(target=batcher.close)
    closer.start()
    gate.set()
    closer.join(30)
    assert not closer.is_alive()
    assert running.done() and queued[0].result(timeout=1).batch_requests == 1 and queued[1].result() == "called"
    with pytest.raises(Closed):
        batcher.submit(job("late", 4))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="max_batch >= 1"):
        Batcher(GroupCountingReward(), max_batch=0)
