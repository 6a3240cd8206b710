"""The group sampler: which editing tasks each training step rolls out, and on which rank.

Tasks are grouped by `GroupKey` (instruction, source-image sha256), so equal instructions on different images are
different groups and one image under two file names is one group. A step draws `groups_per_step` distinct keys
from an epoch-style permutation (every key not banned is drawn once before any repeats), repeats each
`group_size` times, and splits the resulting global list of samples into `world_size` contiguous slices, one per
rank; a group may span ranks. Every rank builds the same plan from the same seed and state, with no
communication. The state (epoch, position, the epoch's order, banned keys) is plain JSON-able data.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence

from ..data.manifest import EditRow, GroupKey, group_key


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """The samples of one step. Global sample n belongs to group `group_index[n]` (n // group_size)."""
    step: int
    keys: tuple[GroupKey, ...]        # [G] the step's groups
    rows: tuple[EditRow, ...]         # [G] one task per group (the first manifest row with that key)
    group_size: int
    world_size: int

    @property
    def num_samples(self) -> int:
        return len(self.keys) * self.group_size

    @property
    def group_index(self) -> list[int]:
        """[N] the group of every global sample."""
        return [n // self.group_size for n in range(self.num_samples)]

    def rank_slice(self, rank: int) -> slice:
        """The global samples rank `rank` rolls out: a contiguous slice of N / world_size."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={self.world_size})")
        per = self.num_samples // self.world_size
        return slice(rank * per, (rank + 1) * per)

    def local(self, rank: int) -> list[tuple[int, int, EditRow]]:
        """(global sample index, group index, row) for each sample of `rank`."""
        s = self.rank_slice(rank)
        return [(n, n // self.group_size, self.rows[n // self.group_size]) for n in range(s.start, s.stop)]


class GroupSampler:
    """Deterministic, resumable group sampler over manifest rows.

    keys: the rows' group keys when already known (else `group_key(row)` hashes each source file).
    """

    def __init__(self, rows: Sequence[EditRow], *, group_size: int, groups_per_step: int, seed: int = 0,
                 world_size: int = 1, keys: Sequence[GroupKey] | None = None):
        if group_size < 1 or groups_per_step < 1 or world_size < 1:
            raise ValueError(f"group_size, groups_per_step and world_size must be >= 1, got {group_size}, "
                             f"{groups_per_step}, {world_size}")
        if (group_size * groups_per_step) % world_size:
            raise ValueError(f"groups_per_step x group_size = {groups_per_step * group_size} samples per step do not "
                             f"split evenly over world_size={world_size} ranks")
        if keys is not None and len(keys) != len(rows):
            raise ValueError(f"got {len(keys)} keys for {len(rows)} rows")
        first: dict[GroupKey, EditRow] = {}
        for i, row in enumerate(rows):
            key = GroupKey(*keys[i]) if keys is not None else group_key(row)
            first.setdefault(key, row)
        if not first:
            raise ValueError("the sampler needs at least one row")
        self.keys: list[GroupKey] = list(first)            # in first-appearance order
        self.rows: list[EditRow] = list(first.values())
        self.group_size, self.groups_per_step = group_size, groups_per_step
        self.seed, self.world_size = seed, world_size
        self.step, self.epoch, self.position = 0, 0, 0
        self.banned: set[GroupKey] = set()
        self.order = self._permutation(0, ())

    # ---- drawing -----------------------------------------------------------------------------------------
    def _permutation(self, epoch: int, defer: Iterable[int]) -> list[int]:
        """The key indices of `epoch` in a seeded random order; `defer` (already in the current step) go last."""
        order = list(range(len(self.keys)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        deferred = set(defer)
        return [i for i in order if i not in deferred] + [i for i in order if i in deferred]

    def available(self) -> int:
        """How many keys are not banned."""
        return len(self.keys) - len(self.banned & set(self.keys))

    def next_plan(self) -> StepPlan:
        """Draw the next step's groups and advance the state."""
        if self.available() < self.groups_per_step:
            raise RuntimeError(f"only {self.available()} group keys are not banned, fewer than "
                               f"groups_per_step={self.groups_per_step}")
        chosen: list[int] = []
        while len(chosen) < self.groups_per_step:
            if self.position >= len(self.order):
                self.epoch, self.position = self.epoch + 1, 0
                self.order = self._permutation(self.epoch, chosen)
            i = self.order[self.position]
            self.position += 1
            if self.keys[i] not in self.banned and i not in chosen:
                chosen.append(i)
        plan = StepPlan(self.step, tuple(self.keys[i] for i in chosen), tuple(self.rows[i] for i in chosen),
                        self.group_size, self.world_size)
        self.step += 1
        return plan

    def ban(self, keys: Iterable[GroupKey | Sequence[str]]) -> None:
        """Remove `keys` from every future draw (keys not in the manifest are kept, and ignored)."""
        self.banned.update(GroupKey(*k) for k in keys)

    # ---- resume ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"seed": self.seed, "step": self.step, "epoch": self.epoch, "position": self.position,
                "order": list(self.order), "num_keys": len(self.keys),
                "banned": sorted([k.instruction, k.source_sha256] for k in self.banned)}

    def load_state_dict(self, state: dict) -> None:
        if state["num_keys"] != len(self.keys) or sorted(state["order"]) != list(range(len(self.keys))):
            raise ValueError(f"the saved sampler state covers {state['num_keys']} group keys but this manifest has "
                             f"{len(self.keys)}; resume with the same manifest")
        self.seed, self.step, self.epoch = state["seed"], state["step"], state["epoch"]
        self.position, self.order = state["position"], list(state["order"])
        self.banned = {GroupKey(*k) for k in state["banned"]}
