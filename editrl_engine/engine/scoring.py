"""Scoring off the training thread: rewards for a step's images arrive while the next rollouts run.

    scorer = LocalScorer(reward)              # colocated: one worker thread calls reward.score
    scorer = RemoteScorer(placement)          # separate: the images go to this rank's reward rank over gloo
    future = scorer.submit(job)               # returns at once
    scored = future.result()                  # ScoredJob: rewards [n], details, failures, seconds spent scoring

`serve_rewards(reward, placement)` is the loop a reward rank runs until every policy rank it serves says stop.
A job carries its sample ids; `RewardLedger` counts how often each sample's reward is consumed by an update, so
a test (and the run's metrics) can check that every reward is used exactly once.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import pickle
import threading
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist

from ..data.manifest import EditRow
from .tasks import reward_options


@dataclasses.dataclass
class ScoreJob:
    sample_ids: list[tuple[int, int]]            # (step, global sample index) of each image
    sources: list[torch.Tensor]                  # uint8 [3, H, W] each
    instructions: list[str]
    edited: torch.Tensor                         # uint8 [n, 3, H, W] on the CPU
    rows: list[EditRow]


@dataclasses.dataclass
class ScoredJob:
    sample_ids: list[tuple[int, int]]
    rewards: torch.Tensor                        # float32 [n], NaN where no reward could be had
    details: list[dict]
    failures: int
    seconds: float                               # time spent inside reward.score


def task_fields(reward, rows) -> dict[str, list]:
    """What the manifest tells the reward about each sample's task: the logit reward's prompt carries the task
    requirement (UniWorld-V2's), the verifier judges against the row's principles (generated where a row has
    none). Empty when no row has any."""
    kind = getattr(reward, "kind", None)
    if kind == "mllm_logit" and any(r.requirement for r in rows):
        return {"requirements": [r.requirement for r in rows]}
    if kind == "verifier" and any(r.principles for r in rows):
        return {"principles": [list(r.principles) or None for r in rows]}
    return {}


def score_job(reward, job: ScoreJob) -> ScoredJob:
    """Run the reward on one job: through its shared-prefix group path when it has one (the job's consecutive
    samples of one task form a group), else one batched score() call."""
    start = time.perf_counter()
    images = list(job.edited)
    options = reward_options(reward, job.rows)
    fields = task_fields(reward, job.rows)                                        # per sample, constant per task
    if hasattr(reward, "score_groups") and not options:
        starts = [i for i in range(len(images)) if i == 0 or job.rows[i].id != job.rows[i - 1].id
                  or job.instructions[i] != job.instructions[i - 1]]
        bounds = starts + [len(images)]
        batch = reward.score_groups([job.sources[i] for i in starts], [job.instructions[i] for i in starts],
                                    [images[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
                                    **{name: [values[i] for i in starts] for name, values in fields.items()})
    else:
        batch = reward.score(job.sources, job.instructions, images, **options, **fields)
    rewards = batch.reward.detach().float().cpu()
    return ScoredJob(job.sample_ids, rewards, batch.details, int(batch.failures), time.perf_counter() - start)


class LocalScorer:
    """Colocated scoring on one worker thread (the reward's work releases the GIL inside torch)."""

    def __init__(self, reward):
        self.reward = reward
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="editrl-score")

    def submit(self, job: ScoreJob) -> concurrent.futures.Future:
        return self._pool.submit(score_job, self.reward, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# ---- the wire format between a policy rank and its reward rank ------------------------------------------------
def _send(obj, peer: int, group) -> None:
    buffer = io.BytesIO()
    pickle.dump(obj, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    dist.send(torch.tensor([payload.numel()], dtype=torch.int64), dst=peer, group=group)
    dist.send(payload, dst=peer, group=group)


def _recv(peer: int, group):
    size = torch.zeros(1, dtype=torch.int64)
    dist.recv(size, src=peer, group=group)
    payload = torch.empty(int(size.item()), dtype=torch.uint8)
    dist.recv(payload, src=peer, group=group)
    return pickle.loads(payload.numpy().tobytes())


class RemoteScorer:
    """Separate placement: jobs go to this policy rank's reward rank; one sender thread keeps them in order."""

    def __init__(self, placement):
        self.peer = placement.reward_rank_for(placement.rank)
        self.group = placement.pair_groups[placement.rank]
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="editrl-remote-score")

    def _roundtrip(self, job: ScoreJob) -> ScoredJob:
        _send(("score", job), self.peer, self.group)
        return _recv(self.peer, self.group)

    def submit(self, job: ScoreJob) -> concurrent.futures.Future:
        return self._pool.submit(self._roundtrip, job)

    def close(self) -> None:
        self._pool.submit(_send, ("stop", None), self.peer, self.group).result()
        self._pool.shutdown(wait=True)


def serve_rewards(reward, placement) -> dict[str, float]:
    """A reward rank's loop: score the jobs of the policy ranks it serves until each sends stop.
    Returns {jobs, images, seconds_scoring}. Policy ranks are served round-robin, one job each in turn."""
    clients = placement.policy_ranks_served_by(placement.rank)
    open_clients = list(clients)
    stats = {"jobs": 0, "images": 0, "seconds_scoring": 0.0}
    while open_clients:
        for client in list(open_clients):
            kind, job = _recv(client, placement.pair_groups[client])
            if kind == "stop":
                open_clients.remove(client)
                continue
            scored = score_job(reward, job)
            stats["jobs"] += 1
            stats["images"] += len(job.sample_ids)
            stats["seconds_scoring"] += scored.seconds
            _send(scored, client, placement.pair_groups[client])
    return stats


class RewardLedger:
    """How many times each sample's reward was consumed by an update (must be exactly once)."""

    def __init__(self):
        self.uses: collections.Counter = collections.Counter()
        self.lock = threading.Lock()

    def consume(self, sample_ids: Sequence[tuple[int, int]]) -> None:
        with self.lock:
            self.uses.update(tuple(s) for s in sample_ids)

    def violations(self) -> dict[tuple[int, int], int]:
        return {k: v for k, v in self.uses.items() if v != 1}

    def state_dict(self) -> dict:
        return {"uses": [[*k, v] for k, v in sorted(self.uses.items())]}

    def load_state_dict(self, state: dict) -> None:
        self.uses = collections.Counter({(s, n): v for s, n, v in state["uses"]})
