"""Shared-prefix scoring for Qwen2.5-VL: prefill a batch of prefixes once, then run many suffixes on their KV cache.

    prefix = prefill(model, prefix_inputs)                      # B prefixes, left-padded [B, P]
    logits = suffix_logits(model, prefix, rows, suffix_inputs)  # N suffixes, suffix i continues prefix rows[i]

Inputs are processor outputs (input_ids, attention_mask, mm_token_type_ids, optional pixel_values and
image_grid_thw) left-padded, still on the CPU. Multimodal RoPE positions come from the model's own
get_rope_index, run on the CPU (no device syncs): a suffix's positions are those it would get alone, shifted
by the next position of its prefix, which is what the unsplit prompt gets because text and vision positions
only ever advance from the running position. Each suffix forward gets its own copy of the prefix cache,
gathered along batch (rows) — the prefix is never recomputed. The attention mask of a suffix forward is
[prefix mask of its row | suffix mask], so left padding in either part is ignored.
"""
from __future__ import annotations

import dataclasses

import torch
from transformers import DynamicCache

from editrl_engine.vlm.kv_cache import cache_kwargs, output_cache


@dataclasses.dataclass
class Prefix:
    cache: DynamicCache                     # keys / values [B, kv_heads, P, head_dim] per layer
    attention_mask: torch.Tensor            # [B, P] on the model's device, 0 on left padding
    next_position: torch.Tensor             # [B] (CPU, int64): the M-RoPE position the next token takes


def rope_positions(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """M-RoPE position ids [3, B, S] of a left-padded batch, each row starting at 0 (CPU)."""
    positions, _ = model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                              image_grid_thw=inputs.get("image_grid_thw"),
                                              attention_mask=inputs["attention_mask"])
    return positions


def _model_inputs(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    moved = {k: inputs[k].to(model.device) for k in ("input_ids", "pixel_values", "image_grid_thw") if k in inputs}
    if "pixel_values" in moved:
        moved["pixel_values"] = moved["pixel_values"].to(model.dtype)
    return moved


@torch.no_grad()
def prefill(model, inputs: dict[str, torch.Tensor]) -> Prefix:
    """Runs the B prefixes through the decoder once (no LM head) and keeps their KV cache."""
    positions = rope_positions(model, inputs)                                           # [3, B, P]
    mask = inputs["attention_mask"]                                                     # [B, P]
    next_position = torch.where(mask.bool(), positions.amax(dim=0), -1).amax(dim=1) + 1  # [B]
    device_mask = mask.to(model.device)
    out = model.model(**_model_inputs(model, inputs), attention_mask=device_mask,
                      position_ids=positions.to(model.device), use_cache=True)
    return Prefix(cache=output_cache(out), attention_mask=device_mask, next_position=next_position)


def gather_cache(prefix: Prefix, rows: torch.Tensor, config) -> DynamicCache:
    """A fresh cache whose row i is prefix row rows[i] (the suffix forward appends to it, so each forward gets
    its own; the prefix cache stays untouched)."""
    rows = rows.to(prefix.attention_mask.device)
    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, rows), layer.values.index_select(0, rows))
                                        for layer in prefix.cache.layers], config=config)


@torch.no_grad()
def suffix_logits(model, prefix: Prefix, rows: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [N, V] at the last position of each suffix (left-padded [N, S]); suffix i continues prefix rows[i]."""
    rows = torch.as_tensor(rows, dtype=torch.long)                                      # [N] (CPU)
    positions = rope_positions(model, inputs) + prefix.next_position[rows].view(1, -1, 1)  # [3, N, S]
    mask = torch.cat([prefix.attention_mask.index_select(0, rows.to(model.device)),
                      inputs["attention_mask"].to(model.device)], dim=1)                # [N, P + S]
    out = model(**_model_inputs(model, inputs), attention_mask=mask, position_ids=positions.to(model.device),
                **cache_kwargs(model, gather_cache(prefix, rows, model.config)), use_cache=True, logits_to_keep=1)
    return out.logits[:, -1]                                                            # [N, V]
