"""The model work behind /v1/chat/completions: a rendered chat prompt and its images -> n completions, with the
log-probabilities of the generated tokens, run on the served judge's own VLM (its model, processor and image size,
so an answer equals the in-process judge's).

A prompt with two or more images is split at the end of the last image before the final one (a special token, so
both parts tokenise as the whole does): the prefix (system, instruction, source images) is prefilled once and kept
in the PrefixStore; later requests of the same group continue its KV cache (reward/group_generation.Continuation)
and only run the candidate's part. Without a store, or with fewer than two images, the whole prompt runs.
Log-probabilities are of the model's raw next-token distribution (before temperature, top-k or top-p), as vLLM
reports them by default.
"""
from __future__ import annotations

import dataclasses

import torch

from ..reward.chat import IMAGE
from ..reward.group_generation import Continuation
from ..reward.prefix_cache import prefill
from .prefix_store import Entry, PrefixStore, cache_bytes, prefix_key


@dataclasses.dataclass(frozen=True)
class Params:
    max_tokens: int = 16
    temperature: float = 1.0                # 0: greedy
    top_p: float = 1.0
    top_k: int = 0                          # 0 or -1: no top-k cut
    seed: int | None = None                 # the n choices are drawn together from this seed
    n: int = 1
    top_logprobs: int | None = None         # None: no logprobs; else this many alternatives per token

    def generate_kwargs(self) -> dict:
        sampled = self.temperature > 0
        options = dict(temperature=self.temperature, top_p=self.top_p, top_k=max(self.top_k, 0)) if sampled else \
            dict(temperature=None, top_p=None, top_k=None)
        return dict(do_sample=sampled, max_new_tokens=self.max_tokens, **options)


@dataclasses.dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]]            # the top_logprobs alternatives, most likely first


@dataclasses.dataclass
class Choice:
    text: str
    finish_reason: str                      # "stop" (an end-of-sequence token) or "length"
    logprobs: list[TokenLogprob] | None


@dataclasses.dataclass
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int                      # prompt tokens served from the prefix store


def judge_vlm(reward):
    """(vlm, image_size) of a served judge: the logit and EditScore judges hold `vlm`, the verifier its generator's;
    None for a reward without a VLM (the programmatic reward)."""
    holder = reward if hasattr(reward, "vlm") else getattr(reward, "generate_fn", None)
    vlm = getattr(holder, "vlm", None)
    if vlm is None:
        return None
    size = getattr(holder, "image_size", None) or dict(vlm.processor.image_processor.size)
    return vlm, size


def split_prompt(prompt: str, count: int) -> tuple[str, str] | None:
    """(prefix, suffix) at the end of image count-1 of a prompt with count >= 2 images; None otherwise."""
    if count < 2:
        return None
    cut = -1
    for _ in range(count - 1):
        cut = prompt.index(IMAGE, cut + 1)
    cut += len(IMAGE)
    return prompt[:cut], prompt[cut:]


class Completer:
    def __init__(self, vlm, image_size: dict, store: PrefixStore | None = None):
        self.vlm, self.image_size, self.store = vlm, image_size, store

    def _process(self, texts: list[str], images: list) -> dict:
        return self.vlm.processor(text=texts, images=images or None, padding=True, size=self.image_size,
                                  return_tensors="pt")

    @torch.no_grad()
    def __call__(self, prompt: str, images: list, params: Params) -> Completion:
        model = self.vlm.model
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            split = split_prompt(prompt, len(images)) if self.store is not None else None
            if split is None:
                return self._whole(prompt, images, params)
            return self._continued(*split, images, params)

    def _whole(self, prompt: str, images: list, params: Params) -> Completion:
        model = self.vlm.model
        inputs = self._process([prompt] * params.n, images * params.n)                  # [n, S]
        moved = {k: v.to(model.device) for k, v in inputs.items()}
        if "pixel_values" in moved:
            moved["pixel_values"] = moved["pixel_values"].to(model.dtype)
        out = model.generate(**moved, **self._generate_options(params))
        return self._completion(out, inputs["input_ids"].shape[1], params, cached=0)

    def _continued(self, prefix_text: str, suffix_text: str, images: list, params: Params) -> Completion:
        model = self.vlm.model
        prefix_inputs = self._process([prefix_text], images[:-1])                       # [1, P]
        key = prefix_key(prefix_inputs["input_ids"], images[:-1])
        entry = self.store.get(key)
        cached = 0
        if entry is None:
            prefix = prefill(model, prefix_inputs)
            entry = Entry(prefix, prefix_inputs, cache_bytes(prefix))
            self.store.put(key, entry)
        else:
            cached = entry.inputs["input_ids"].shape[1]
        suffix = self._process([suffix_text] * params.n, [images[-1]] * params.n)        # [n, S]
        rows = torch.zeros(params.n, dtype=torch.long)
        go = Continuation(model, entry.prefix, entry.inputs, rows, suffix)
        out = go.generate_ids(**self._generate_options(params))
        return self._completion(out, go.ids.shape[1], params, cached=cached)

    def _generate_options(self, params: Params) -> dict:
        return dict(**params.generate_kwargs(), pad_token_id=self.vlm.tokenizer.pad_token_id,
                    return_dict_in_generate=True, output_logits=params.top_logprobs is not None)

    def _completion(self, out, prompt_length: int, params: Params, cached: int) -> Completion:
        tokenizer = self.vlm.tokenizer
        new = out.sequences[:, prompt_length:]                                           # [n, T]
        eos = self.vlm.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        choices, generated = [], 0
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            length = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
            stopped = length < len(ids) or (ids and ids[length - 1] in eos)
            ids = ids[:length]
            generated += len(ids)
            logprobs = None
            if params.top_logprobs is not None:
                logprobs = [self._token_logprob(out.logits[step][row], token, params.top_logprobs)
                            for step, token in enumerate(ids)]
            choices.append(Choice(tokenizer.decode(ids, skip_special_tokens=True), "stop" if stopped else "length",
                                  logprobs))
        return Completion(choices, prompt_length, generated, cached)

    def _token_logprob(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        logp = torch.log_softmax(logits.double(), dim=-1)                                # [V]
        decode = self.vlm.tokenizer.decode
        alternatives = []
        if top:
            values, indices = logp.topk(top)
            alternatives = [(decode([int(i)]), float(v)) for v, i in zip(values.tolist(), indices.tolist())]
        return TokenLogprob(decode([token]), float(logp[token]), alternatives)
