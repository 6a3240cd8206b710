"""Scoring off the training thread: rewards for a step's images arrive while the next rollouts run.

    scorer = LocalScorer(reward)              # colocated: one worker thread calls reward.score_groups
    scorer = RemoteScorer(placement)          # separate: the images go to this rank's reward rank over gloo
    future = scorer.submit(job)               # returns at once
    scored = future.result()                  # ScoredJob: rewards [n], details, failures, seconds spent scoring

`serve_rewards(reward, placement)` is the loop a reward rank runs until every policy rank it serves says stop.
A job carries its sample ids and its groups (`group_sizes`: the engine's rollouts are group-contiguous), and is
scored through `reward.score_groups` with one manifest row per group. `RewardLedger` counts how often each
sample's reward is consumed by an update, in bounded memory, so a test (and the run's metrics) can check that
every reward is used exactly once.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import itertools
import pickle
import threading
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist

from ..data.manifest import EditRow


@dataclasses.dataclass
class ScoreJob:
    """Samples to score, group-contiguous: group k is the next group_sizes[k] samples (one task's edits)."""
    sample_ids: list[tuple[int, int]]            # (step, global sample index) of each image
    sources: list[torch.Tensor]                  # uint8 [3, H, W] each
    instructions: list[str]
    edited: torch.Tensor                         # uint8 [n, 3, H, W] on the CPU
    rows: list[EditRow]
    group_sizes: list[int]                       # samples per group, in order; sums to n

    def __post_init__(self):
        n = len(self.sample_ids)
        lengths = {"sources": len(self.sources), "instructions": len(self.instructions),
                   "edited": len(self.edited), "rows": len(self.rows)}
        if any(length != n for length in lengths.values()):
            raise ValueError(f"a ScoreJob needs one source, instruction, edited image and row per sample id "
                             f"({n}), got {lengths}")
        if sum(self.group_sizes) != n or any(size < 1 for size in self.group_sizes):
            raise ValueError(f"group_sizes {self.group_sizes} must be positive and sum to the job's {n} samples")
        for a, size in zip(self.group_starts(), self.group_sizes):
            if any(self.instructions[i] != self.instructions[a] or self.rows[i] != self.rows[a]
                   for i in range(a, a + size)):
                raise ValueError(f"samples {a}..{a + size - 1} are one group by group_sizes but differ in instruction "
                                 "or row; build group_sizes from the plan's group of each sample (run_lengths)")

    def group_starts(self) -> list[int]:
        """The index of each group's first sample."""
        return [0, *itertools.accumulate(self.group_sizes)][:-1]


def run_lengths(group_index: Sequence[int]) -> list[int]:
    """Group sizes of group-contiguous samples from each sample's group index: [3, 3, 5, 5, 5] -> [2, 3]."""
    return [len(list(run)) for _, run in itertools.groupby(group_index)]


@dataclasses.dataclass
class ScoredJob:
    sample_ids: list[tuple[int, int]]
    rewards: torch.Tensor                        # float32 [n], NaN where no reward could be had
    details: list[dict]
    failures: int
    seconds: float                               # time spent inside the reward


def score_job(reward, job: ScoreJob) -> ScoredJob:
    """Run the reward on one job's groups (reward.score_groups: its shared-prefix path where it has one); each
    group's row tells the reward what it needs (requirement, principles, spec)."""
    start = time.perf_counter()
    starts = job.group_starts()
    images = list(job.edited)
    batch = reward.score_groups([job.sources[a] for a in starts], [job.instructions[a] for a in starts],
                                [images[a: a + size] for a, size in zip(starts, job.group_sizes)],
                                rows=[job.rows[a] for a in starts])
    if len(batch) != len(images):
        raise RuntimeError(f"the {getattr(reward, 'kind', type(reward).__name__)} reward returned {len(batch)} "
                           f"rewards for a job of {len(images)} samples")
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
    """How many times each sample's reward was consumed by an update (must be exactly once), in bounded memory.

    Updates consume whole steps in step order, so only the sample ids of the last WINDOW steps are kept, to catch
    a second use; the rest of the run is counts: `consumed` (uses in all), `steps` (distinct steps), `first_step`,
    `last_step`. A use of a step that already left the window is a violation too (its earlier uses are no longer
    known; in a run that consumes steps in order it can only be a late repeat). `violations()` maps each sample
    consumed more than once to its count. With `audit = True` (set on the class, as the tests do) every sample's
    count is also kept in `uses` and checkpointed, and `violations()` reads it (any count != 1).
    """

    WINDOW = 2                                   # steps whose sample ids are kept
    audit = False

    def __init__(self):
        self.audit = bool(self.audit)                                # fixed for this ledger's life
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.uses: collections.Counter | None = collections.Counter() if self.audit else None
        self.consumed, self.steps = 0, 0
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.closed_through: int | None = None   # the newest step that left the window
        self.recent: dict[int, collections.Counter] = {}       # step -> Counter of sample index, last WINDOW steps
        self.repeats: dict[tuple[int, int], int] = {}          # the violations seen (each one is a bug)

    def consume(self, sample_ids: Sequence[tuple[int, int]]) -> None:
        with self.lock:
            for step, n in (tuple(s) for s in sample_ids):
                self._use(int(step), int(n))

    def _use(self, step: int, n: int) -> None:
        self.consumed += 1
        if self.uses is not None:
            self.uses[(step, n)] += 1
        if self.closed_through is not None and step <= self.closed_through:
            self.repeats[(step, n)] = self.repeats.get((step, n), 1) + 1           # a late use: a repeat
            return
        if step not in self.recent:
            self.recent[step] = collections.Counter()
            self.steps += 1
            self.first_step = step if self.first_step is None else min(self.first_step, step)
            self.last_step = step if self.last_step is None else max(self.last_step, step)
            while len(self.recent) > self.WINDOW:
                oldest = min(self.recent)
                del self.recent[oldest]
                self.closed_through = oldest if self.closed_through is None else max(self.closed_through, oldest)
        counts = self.recent[step]
        counts[n] += 1
        if counts[n] > 1:
            self.repeats[(step, n)] = counts[n]

    def violations(self) -> dict[tuple[int, int], int]:
        if self.uses is not None:
            return {k: v for k, v in self.uses.items() if v != 1}
        return dict(self.repeats)

    def state_dict(self) -> dict:
        state = {"version": 2, "consumed": self.consumed, "steps": self.steps, "first_step": self.first_step,
                 "last_step": self.last_step, "closed_through": self.closed_through,
                 "recent": {step: sorted(counts.items()) for step, counts in self.recent.items()},
                 "repeats": [[*k, v] for k, v in sorted(self.repeats.items())]}
        if self.uses is not None:
            state["uses"] = [[*k, v] for k, v in sorted(self.uses.items())]
        return state

    def load_state_dict(self, state: dict) -> None:
        """A state of this ledger, or of the old per-sample one ({"uses": [[step, n, count], ...]}, replayed)."""
        self._reset()
        if "version" not in state:                                   # old format: every sample's count
            for step, n, count in sorted(state["uses"]):
                for _ in range(int(count)):
                    self._use(int(step), int(n))
            return
        self.consumed, self.steps = int(state["consumed"]), int(state["steps"])
        self.first_step, self.last_step = state["first_step"], state["last_step"]
        self.closed_through = state["closed_through"]
        self.recent = {int(step): collections.Counter(dict(items)) for step, items in state["recent"].items()}
        self.repeats = {(s, n): v for s, n, v in state["repeats"]}
        if self.audit:
            self.uses = collections.Counter({(s, n): v for s, n, v in state.get("uses", [])})
