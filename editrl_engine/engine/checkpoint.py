"""Atomic checkpoints of a run: written into a temporary folder, then renamed into place in one step.

    <out>/checkpoints/step-000040/
        lora/pytorch_lora_weights.safetensors     the trained adapter; the family's diffusers pipeline loads it
        lora_old/...                              DiffusionNFT's old adapter (NFT runs)
        trainer.pt                                adapter tensors, optimizer, LR schedule, EMA, sampler position,
                                                  banned prompts, reward ledger, step
        rank-<r>.pt                               each policy rank's RNG states and its pending (already rolled out,
                                                  already scored) batch when the pipeline runs one step ahead
        config.toml, meta.json
    <out>/checkpoints/latest                      the name of the newest complete checkpoint (replaced atomically)

A crash while writing leaves only a ".tmp-" folder, which is never read and is removed by the next save.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..errors import MissingPathError

LATEST = "latest"


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(out_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives once committed."""
    return checkpoint_root(out_dir) / f"step-{step:06d}"


def staging_dir(out_dir: Path, step: int) -> Path:
    """The temporary folder every rank writes its part of checkpoint `step` into."""
    return checkpoint_root(out_dir) / f".tmp-step-{step:06d}"


def begin(out_dir: Path, step: int) -> Path:
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(out_dir, step)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    return stage


def commit(out_dir: Path, step: int, keep: int) -> Path:
    """Rename the staged folder into place, point `latest` at it, delete older checkpoints beyond `keep`."""
    root = checkpoint_root(out_dir)
    stage, final = staging_dir(out_dir, step), step_dir(out_dir, step)
    write_text_atomic(stage / "meta.json", json.dumps({"step": step, "time": time.time()}))
    if final.exists():                                 # a re-run of the same step: replace the old one
        shutil.rmtree(final)
    os.replace(stage, final)
    write_text_atomic(root / LATEST, final.name + "\n")
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(out_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    root = checkpoint_root(out_dir)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "trainer.pt").is_file():
            return candidate
    done = sorted(p for p in root.glob("step-*") if (p / "trainer.pt").is_file())
    return done[-1] if done else None


def save_torch(obj, path: Path) -> None:
    torch.save(obj, path)


def load_torch(path: Path):
    if not path.is_file():
        raise MissingPathError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
    return torch.load(path, map_location="cpu", weights_only=False)
