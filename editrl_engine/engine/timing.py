"""The timing metrics of a training step (what bench/e2e.py and the logs read).

    time_rollout        seconds this rank spent rolling out (and decoding) since the previous step ended
    time_score          seconds the reward spent on this step's images (on the scoring thread or a reward rank)
    time_idle           seconds the step waited for its rewards after its own work was done
    time_update         seconds of advantages, gradients, optimizer steps, old adapter and EMA
    time_step           wall time since the previous step ended (its rollouts included); images_per_s from it
    score_hidden_frac   the share of scoring hidden behind other work: 1 - idle / score
"""
from __future__ import annotations

import math
import time


class StepClock:
    def __init__(self):
        self._mark = time.perf_counter()
        self._rollout = 0.0

    def add_rollout(self, seconds: float) -> None:
        self._rollout += seconds

    def exclude(self, seconds: float) -> None:
        """Time that is not part of the step (the watch's evaluation)."""
        self._mark += seconds

    def step_metrics(self, *, waited: float, update: float, score: float, images: int) -> dict[str, float]:
        """The step's metrics; the next step is timed from now."""
        now = time.perf_counter()
        wall, self._mark = now - self._mark, now
        rollout, self._rollout = self._rollout, 0.0
        return {"time_rollout": rollout, "time_score": score, "time_update": update, "time_idle": waited,
                "time_step": wall, "images_per_s": images / wall if wall > 0 else math.nan,
                "score_hidden_frac": 1 - waited / score if score > 0 else math.nan}
