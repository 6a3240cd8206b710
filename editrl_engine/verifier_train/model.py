"""The verifier being trained: the verifier's own VLM (reward/verifier.py's load: its model, processor, prompts)
with a peft LoRA on the language model, and the two things training asks of it: token log-probs of traces under
their prompts, and sampled traces of a pair (the prompt's shared prefix prefilled once for all 2N rollouts).

A training sequence is the verdict prompt as the judge sees it ([sources..., edited] images) followed by the trace's
tokens and <|im_end|> (where generation stops); only those trace tokens are scored (`mask`). Batches are padded on
the right.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..reward import verifier_prompts as vp
from ..reward.group_generation import Continuation
from ..reward.prefix_cache import prefill
from ..reward.sources import rgb_sources
from ..vlm.images import as_rgb_image

VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclasses.dataclass(frozen=True)
class Item:
    """One judged edit: the verdict prompt's inputs."""
    sources: tuple
    edited: object
    instruction: str
    principles: tuple[vp.Principle, ...]

    def prompt(self) -> str:
        return vp.verdict_prompt(self.instruction, self.principles, len(self.sources))

    def images(self) -> list:
        return [*rgb_sources(list(self.sources)), as_rgb_image(self.edited)]


@dataclasses.dataclass
class Traces:
    """Sampled traces: token ids (list per trace, <|im_end|> included when generated) and their texts."""
    ids: list[list[int]]
    texts: list[str]


class VerifierModel:
    saved_as = "lora"                   # the run folder's final model: the LoRA, as peft writes it

    def __init__(self, vlm, *, image_size: dict, lora_rank: int = 16, lora_alpha: float = 32.0, targets: str = "",
                 gradient_checkpointing: bool = False, autocast: bool = False, seed: int = 0):
        from peft import LoraConfig, get_peft_model
        self.vlm, self.image_size, self.autocast = vlm, image_size, autocast
        self.tokenizer = vlm.processor.tokenizer
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        # a trace never holds image placeholders (they would be read as image slots when the trace is trained on)
        self.suppressed = [self.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
        vlm.model.requires_grad_(False)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():   # the LoRA's A drawn from `seed`
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            torch.manual_seed(seed)
            self.peft = get_peft_model(vlm.model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha,
                                                             target_modules=targets or LANGUAGE_TARGETS))
        self.model = self.peft.base_model.model                # the HF model, LoRA layers injected
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.device = next(self.model.parameters()).device

    def parameters(self, adapter: str = "default") -> list[torch.nn.Parameter]:
        return [p for n, p in self.peft.named_parameters() if f".{adapter}." in n and "lora_" in n]

    def autocast_context(self):
        import contextlib
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    # ---- sequences -------------------------------------------------------------------------------------------------
    def encode_trace(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids + [self.end_id]

    def batch(self, items: Sequence[Item], traces: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-padded [prompt | trace] sequences with the processor's image inputs, and mask [B, S] on trace
        tokens (the positions whose token is scored)."""
        prompts = [self.vlm.processor(text=[item.prompt()], images=item.images(), size=self.image_size,
                                      return_tensors="pt") for item in items]
        lengths = [p["input_ids"].shape[1] + len(t) for p, t in zip(prompts, traces)]
        width, pad = max(lengths), self.tokenizer.pad_token_id
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        attention = torch.zeros(len(items), width, dtype=torch.long)
        types = torch.zeros(len(items), width, dtype=torch.long)
        mask = torch.zeros(len(items), width, dtype=torch.bool)
        for b, (p, t) in enumerate(zip(prompts, traces)):
            n = p["input_ids"].shape[1]
            ids[b, :n], ids[b, n:n + len(t)] = p["input_ids"][0], torch.tensor(t, dtype=torch.long)
            attention[b, :n + len(t)] = 1
            if "mm_token_type_ids" in p:
                types[b, :n] = p["mm_token_type_ids"][0]
            mask[b, n:n + len(t)] = True
        return {"input_ids": ids, "attention_mask": attention, "mm_token_type_ids": types, "mask": mask,
                "pixel_values": torch.cat([p["pixel_values"] for p in prompts]),
                "image_grid_thw": torch.cat([p["image_grid_thw"] for p in prompts])}

    def token_logp(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p of each token given the ones before it: [B, S] (0 where mask is False); grad flows to the LoRA."""
        inputs = {k: v.to(self.device) for k, v in batch.items() if k != "mask"}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with self.autocast_context():
            logits = self.model(**inputs, use_cache=False).logits.float()                     # [B, S, V]
        logp = torch.log_softmax(logits[:, :-1], dim=-1)                                      # [B, S-1, V]
        picked = logp.gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]                   # [B, S-1]
        out = torch.zeros(batch["input_ids"].shape, device=self.device)
        out[:, 1:] = picked
        return out * batch["mask"].to(self.device)

    # ---- sampling --------------------------------------------------------------------------------------------------
    def sample_pairs(self, shared: Sequence[Item], candidates: Sequence[Sequence], n: int, *, seed: int,
                     **sampling) -> list[Traces]:
        """sample_pair for several pairs (pair i from seed + i); a model may batch them instead, drawing all from
        `seed`."""
        return [self.sample_pair(item, group, n, seed=seed + i, **sampling)
                for i, (item, group) in enumerate(zip(shared, candidates))]

    @torch.no_grad()
    def sample_pair(self, shared: Item, candidates: Sequence, n: int, *, temperature: float, top_p: float,
                    max_new_tokens: int, seed: int, shared_prefix: bool = True) -> Traces:
        """n traces for each candidate edit of one (sources, instruction, principles), len(candidates) * n in all,
        candidate-major. The prefix (instruction, principles, source images) is prefilled once and serves every
        rollout (shared_prefix=False: every rollout runs its whole prompt, for comparison); sampled from `seed`
        (temperature 0: greedy)."""
        if not shared_prefix:
            return self._sample_whole(shared, candidates, n, temperature=temperature, top_p=top_p,
                                      max_new_tokens=max_new_tokens, seed=seed)
        processor, model = self.vlm.processor, self.model
        prefix_text = vp.verdict_prefix(shared.instruction, shared.principles, len(shared.sources))
        prefix_inputs = processor(text=[prefix_text], images=list(rgb_sources(list(shared.sources))),
                                  size=self.image_size, return_tensors="pt")
        count = len(candidates) * n
        edited = [as_rgb_image(c) for c in candidates for _ in range(n)]
        suffix = processor(text=[vp.verdict_suffix()] * count, images=edited, size=self.image_size,
                           return_tensors="pt", padding=True)
        with self.autocast_context():
            prefix = prefill(model, prefix_inputs)
            rows = torch.zeros(count, dtype=torch.long)
            go = Continuation(model, prefix, prefix_inputs, rows, suffix)
            sampled = temperature > 0
            options = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sampled else \
                dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = go.generate_ids(max_new_tokens=max_new_tokens, eos_token_id=self.end_id,
                                      pad_token_id=self.tokenizer.pad_token_id, suppress_tokens=self.suppressed,
                                      **options)
        return self._traces(out[:, go.ids.shape[1]:])

    def _sample_whole(self, shared: Item, candidates: Sequence, n: int, *, temperature: float, top_p: float,
                      max_new_tokens: int, seed: int) -> Traces:
        items = [dataclasses.replace(shared, edited=c) for c in candidates for _ in range(n)]
        inputs = self.vlm.processor(text=[item.prompt() for item in items],
                                    images=[im for item in items for im in item.images()], size=self.image_size,
                                    return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        options = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
            dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self.autocast_context(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda"
                                                              else []):
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=self.end_id,
                                      pad_token_id=self.tokenizer.pad_token_id, suppress_tokens=self.suppressed,
                                      **options)
        return self._traces(out[:, inputs["input_ids"].shape[1]:])

    def _traces(self, new: torch.Tensor) -> Traces:
        """Generated ids [B, T] cut after <|im_end|> (kept), and their texts."""
        rows = new.tolist()
        ids = [row[:row.index(self.end_id) + 1] if self.end_id in row else row for row in rows]
        return Traces(ids, [self.tokenizer.decode(t, skip_special_tokens=True) for t in ids])

    @torch.no_grad()
    def judge_texts(self, rows: Sequence[Item], candidates: Sequence[Sequence], max_new_tokens: int,
                    batch_groups: int = 16) -> list[str]:
        """Greedy traces for every candidate of each row, row-major. The rows' prefixes are prefilled batch_groups
        at a time (left-padded) and each candidate continues its row's cache (reward/group_generation.answers, the
        verifier's own batched shared-prefix path)."""
        from ..reward.group_generation import answers
        from ..reward.verifier import GroupDecoding, Sampling
        decoding = GroupDecoding(Sampling(max_new_tokens=max_new_tokens), self.end_id)
        prefixes = [vp.verdict_prefix(r.instruction, r.principles, len(r.sources)) for r in rows]
        with self.autocast_context():
            return answers(self.vlm, self.image_size, batch_groups, prefixes, [list(r.sources) for r in rows],
                           vp.verdict_suffix(), candidates, [decoding])[0]

    # ---- the KL reference: the SFT model, frozen -------------------------------------------------------------------
    def freeze_reference(self) -> None:
        """A frozen copy of the LoRA as adapter "ref" (once)."""
        peft_model = self.peft
        if "ref" in peft_model.peft_config:
            return
        peft_model.add_adapter("ref", peft_model.peft_config["default"])
        state = {n: p for n, p in peft_model.named_parameters() if ".default." in n}
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if ".ref." in name:
                    parameter.copy_(state[name.replace(".ref.", ".default.")])
        self._activate("default")

    @contextlib.contextmanager
    def reference(self):
        """Within: the model computes with the reference adapter."""
        self._activate("ref")
        try:
            yield
        finally:
            self._activate("default")

    def _activate(self, adapter: str) -> None:
        self.peft.set_adapter(adapter)              # peft marks the active adapter trainable: keep "ref" frozen
        for name, parameter in self.peft.named_parameters():
            if ".ref." in name:
                parameter.requires_grad_(False)

    # ---- checkpoints and saving ------------------------------------------------------------------------------------
    def adapters(self) -> list[str]:
        return [name for name in ("default", "ref") if name in self.peft.peft_config]

    def save_adapters(self, directory: Path) -> list[str]:
        """Every adapter (the trained LoRA, and the reference once GCPO has started) into a checkpoint folder."""
        names = self.adapters()
        self.peft.save_pretrained(str(directory), selected_adapters=names)
        return names

    def load_adapters(self, directory: Path, names: Sequence[str]) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file
        if "ref" in names:
            self.freeze_reference()
        for adapter in names:
            folder = directory / ("" if adapter == "default" else adapter)        # peft's layout
            weights = load_file(str(folder / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft, weights, adapter_name=adapter)
        self._activate("default")

    def save(self, directory: str | os.PathLike) -> str:
        """The LoRA as peft writes it (adapter_config.json + adapter_model.safetensors)."""
        self.peft.save_pretrained(os.fspath(directory), selected_adapters=["default"])
        return os.fspath(directory)
