"""Reward models: one entry point over the kinds, and weighted combinations of them.

    reward = load_reward("mllm_logit", preset="tiny")                             # random weights, built in code
    reward = load_reward("mllm_logit", path="/models/Qwen2.5-VL-32B-Instruct", device="cuda", dtype=torch.bfloat16)
    reward = load_reward({"mllm_logit": 0.7, "programmatic": 0.3}, preset="tiny")  # a CombinedReward
    reward = load_reward("mllm_logit", endpoint="http://judge:8000/v1", model="...")  # served (vLLM, editrl serve)
    batch = reward.score(sources, instructions, edited)                           # RewardBatch

A kind's module is imported only when asked for and exposes
`load(path, preset, device, dtype, backend, **options) -> RewardModel`; weights load from local folders only.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping

import torch

from .base import RewardBatch, RewardModel, check_triples
from .combined import CombinedReward

KINDS = {
    "editscore": "editrl_engine.reward.editscore",
    "mllm_logit": "editrl_engine.reward.mllm_logit",
    "verifier": "editrl_engine.reward.verifier",
    "programmatic": "editrl_engine.reward.programmatic",
}


def _load_one(kind: str, path, preset, device, dtype, backend, options) -> RewardModel:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown reward kind {kind!r}; choose one of {', '.join(KINDS)} "
                         f"or a {{kind: weight}} mapping of them")
    if options.get("endpoint"):                                 # a judge served over HTTP (reward/remote/)
        if path is not None or preset is not None:
            raise ValueError(f"the {kind} reward got endpoint= and also path= or preset=; a remote judge's weights "
                             "live on its server: give one or the other")
        from .remote import load as load_remote
        return load_remote(kind, **options)
    if importlib.util.find_spec(KINDS[kind]) is None:
        raise NotImplementedError(f"reward kind {kind!r} is not implemented yet ({KINDS[kind]} does not exist)")
    module = importlib.import_module(KINDS[kind])
    if not hasattr(module, "load"):
        raise NotImplementedError(f"reward kind {kind!r} is not implemented yet ({KINDS[kind]} has no load())")
    return module.load(path=path, preset=preset, device=torch.device(device), dtype=dtype, backend=backend,
                       **options)


def load_reward(kind: str | Mapping[str, float | Mapping], path: str | os.PathLike | None = None,
                preset: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                backend: str = "eager", **options) -> RewardModel:
    """A reward model of one kind, or a CombinedReward of several.

    kind: a name in KINDS, or a mapping name -> weight, or name -> {"weight": w, **settings} where settings
    (path, preset, device, dtype, backend, or the kind's options) override the shared arguments for that part."""
    if not isinstance(kind, Mapping):
        return _load_one(kind, path, preset, device, dtype, backend, options)
    shared = dict(path=path, preset=preset, device=device, dtype=dtype, backend=backend)
    parts = {}
    for name, spec in kind.items():
        settings = dict(spec) if isinstance(spec, Mapping) else {"weight": spec}
        if "weight" not in settings:
            raise ValueError(f"part {name!r} of a combined reward has no weight")
        weight = settings.pop("weight")
        call = {**shared, **{k: settings.pop(k) for k in list(settings) if k in shared}}
        part_options = {**options, **settings}
        parts[name] = (_load_one(name, call["path"], call["preset"], call["device"], call["dtype"], call["backend"],
                                 part_options), weight)
    return CombinedReward(parts)


__all__ = ["CombinedReward", "KINDS", "RewardBatch", "RewardModel", "check_triples", "load_reward"]
