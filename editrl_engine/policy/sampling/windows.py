"""Which rollout steps are stochastic (and trained): all but the last, or a window drawn from a shared RNG.

Flow-GRPO trains every step but the last (its Gaussian is too sharp to train). Its "fast" variant runs the SDE
only inside a window of W consecutive steps, with ODE steps before and after. The window's start is drawn
on every call from a generator the caller passes: every rank seeds it the same way, so all ranks train the
same window at a training step, and the window moves from one training step to the next. (Seeding it with
the rank id on every call, as one public trainer does, fixes the window for the whole run.)
"""
from __future__ import annotations

import torch


def sde_window(num_steps: int, window_size: int, generator: torch.Generator,
               window_range: tuple[int, int] | None = None) -> range:
    """Steps [start, start + window_size) with start uniform over the windows that fit in window_range.

    window_range = (lo, hi): the window lies in steps lo .. hi - 1 (default: the first half, (0, num_steps // 2));
    it never includes the last step. `generator` is a CPU generator shared by all ranks (same seed everywhere);
    each call advances it, so consecutive training steps get different windows.
    """
    if generator.device.type != "cpu":
        raise ValueError("the window generator must be a CPU torch.Generator (reading a draw from a device "
                         f"generator would synchronise it), got one on {generator.device}")
    lo, hi = window_range if window_range is not None else (0, num_steps // 2)
    hi = min(hi, num_steps - 1)
    if window_size < 1 or lo < 0 or lo + window_size > hi:
        raise ValueError(f"a window of {window_size} step(s) does not fit in steps [{lo}, {hi}) of a "
                         f"{num_steps}-step rollout (the last step is never stochastic)")
    start = lo + int(torch.randint(hi - window_size - lo + 1, (1,), generator=generator))
    return range(start, start + window_size)


def stochastic_steps(num_steps: int, window_size: int | None = None, generator: torch.Generator | None = None,
                     window_range: tuple[int, int] | None = None) -> range:
    """The steps that run the SDE: a drawn window when window_size is given, else every step but the last."""
    if num_steps < 2:
        raise ValueError(f"a GRPO rollout needs at least 2 steps (the last is never stochastic), got {num_steps}")
    if window_size is None:
        if window_range is not None:
            raise ValueError("window_range is given without window_size")
        return range(0, num_steps - 1)
    if generator is None:
        raise ValueError("window_size needs window_generator: a CPU torch.Generator seeded the same on every rank")
    return sde_window(num_steps, window_size, generator, window_range)
