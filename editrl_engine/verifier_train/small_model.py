"""SmallVerifier: a purpose-built verifier small enough to learn the demo's judgements in minutes on 2 CPU cores.

It writes the verifier's verdict JSON (reward/verifier_prompts.py), which the verifier's parser reads, so the
trainer's SFT, GCPO rewards, evaluation and checkpoints are the same code as for the VLM (model.py); only the network
differs. It sees the source, the edited image and their difference through a small convolutional front end (a
grid of image tokens), reads the instruction and the principles as words, and writes its trace from a vocabulary of
the verdict format's fragments (`{"id": `, `pass`, `7`, ...): 24 tokens a trace, of which 7 carry the
judgement (three verdicts, three scores, the final score).

Why the demo uses it (docs/design.md has the runs): the verifier's own Qwen2.5-VL code path at its demo preset takes
about 1 s an SFT step on these 2 cores, so five minutes buy ~300 steps; after 900 steps it judged 0.53-0.58 of the
held-out pairs and had not learnt the keep principle (target over every-shape-erased 0.14-0.38). GCPO's rollouts
share their prefix as the VLM's do: each candidate's image and prompt are prefilled once and the cache serves its N
traces.

    model = SmallVerifier.for_rows(sft_rows, seed=0)        # word vocabulary from the rows' instructions
    model.save("out/model"); SmallVerifier.load("out/model").judge_texts(items, candidates, max_new_tokens=32)
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import write_bytes_atomic, write_json_atomic
from ..errors import InputError, MissingPathError
from ..reward import verifier_prompts as vp
from .data import load_image
from .model import Item, Traces

# the verdict format's fragments, as reward/verifier_prompts.py's parser reads them (data.verdict_trace writes them)
TRACE_PIECES = ('{"verdicts": [', '{"id": ', ', "verdict": "', '", "score": ', "}, ", '}], "final_score": ', "}",
                *vp.VERDICTS, *(str(i) for i in range(11)))
DIFFERENCE_GAIN = 2.0          # on [-1, 1] images: a changed pixel's difference ~ 1 (4x its [0, 1] difference)
END, PAD, SEP, UNK = "<end>", "<pad>", "<sep>", "<unk>"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@dataclasses.dataclass(frozen=True)
class SmallVerifierConfig:
    words: tuple[str, ...]              # the prompt vocabulary (instruction and principle words)
    image_size: int = 32                # images are resized to image_size x image_size
    grid: int = 4                       # grid x grid image tokens
    width: int = 96
    layers: int = 4
    heads: int = 4
    max_length: int = 192               # text tokens (prompt + trace)

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        if self.image_size < 4 * self.grid:
            raise ValueError(f"image_size {self.image_size} must be at least 4 x grid ({4 * self.grid})")

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The output tokens first (<end> and the trace fragments: the head scores only these), then the rest."""
        return (END, *TRACE_PIECES, PAD, SEP, UNK, *self.words)


class KVCache:
    """One block's keys and values during generation: [B, H, capacity, C/H] buffers written in place (appending by
    concatenation copied the whole cache at every token: 40 % of a sampling call's time), filled up to `length`."""

    def __init__(self, capacity: int):
        self.capacity, self.length = capacity, 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [B, H, L, C/H] after the cached positions -> every position's keys and values so far."""
        if self.keys is None:
            b, h, _, d = k.shape
            self.keys, self.values = (k.new_empty(b, h, self.capacity, d) for _ in range(2))
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot take {end}")
        self.keys[:, :, self.length:end], self.values[:, :, self.length:end] = k, v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def repeat_interleave(self, repeats: int) -> KVCache:
        """Each row's cache serving `repeats` consecutive rows (a prefix shared by its rollouts)."""
        out = KVCache(self.capacity)
        out.length = self.length
        out.keys, out.values = (t.repeat_interleave(repeats, dim=0) for t in (self.keys, self.values))
        return out


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """x [B, L, C] (the newest L positions), allowed [B, 1, L, L_all]; cache: the earlier positions' keys and
        values, extended in place (generation), or None."""
        b, length, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)         # [B, H, L, C/H]
        x = x + self.out(attended.transpose(1, 2).reshape(b, length, c))
        return x + self.mlp(self.norm2(x))


class SmallVerifierNet(nn.Module):
    def __init__(self, config: SmallVerifierConfig):
        super().__init__()
        width = config.width
        # [B, 9, S, S] -> [B, C, grid, grid]; max-pooled: an edit covers a few percent of the image, and averaging
        # dilutes it (a probe naming the candidate kind from the image: 0.34 held-out accuracy after 300 steps
        # average-pooled with the difference unscaled, 0.63 max-pooled with it scaled by DIFFERENCE_GAIN)
        self.front = nn.Sequential(
            nn.Conv2d(9, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, width, 3, stride=2, padding=1), nn.GELU(), nn.AdaptiveMaxPool2d(config.grid))
        self.image_position = nn.Parameter(torch.zeros(config.grid ** 2, width))
        self.embed = nn.Embedding(len(config.vocabulary), width)
        self.position = nn.Embedding(config.max_length, width)
        self.blocks = nn.ModuleList(Block(width, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1 + len(TRACE_PIECES))
        self.image_norm = nn.LayerNorm(width)
        self.summary = nn.Linear(width, width)      # the pooled image, added to every text position
        # the word and position tables keep torch's N(0, 1) start: at std 0.02 (the summary zero at the start) the
        # same SFT read the image later and less (held-out accuracy 0.13 at step 300 and 0.43 at 800, against 0.53
        # and 0.75; docs/design.md)
        nn.init.normal_(self.image_position, std=0.02)

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """pixels [B, 9, S, S], ids [B, T] (padding either side), real [B, T] (False on padding) -> logits of the
        next output token after each text position [B, T, K]."""
        return self.start(pixels, ids, real, caches=None)[0]

    def start(self, pixels: torch.Tensor, ids: torch.Tensor, real: torch.Tensor, caches: list[KVCache] | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """forward, also filling caches (one KVCache per block) for `step`; returns the logits and the image
        summary."""
        image = self.image_norm(self.front(pixels).flatten(2).transpose(1, 2)) + self.image_position  # [B, G, C]
        summary = self.summary(image.mean(1))[:, None]                                     # [B, 1, C]
        positions = (real.long().cumsum(1) - 1).clamp_min(0)                               # [B, T]
        x = torch.cat([image, self.embed(ids) + self.position(positions) + summary], dim=1)  # [B, G + T, C]
        g, length = image.shape[1], x.shape[1]
        keys = torch.cat([torch.ones_like(real[:, :1]).expand(-1, g), real], dim=1)        # [B, L]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = (causal[None] & keys[:, None, :])[:, None]                               # [B, 1, L, L]
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, None if caches is None else caches[i])
        return self.head(self.norm(x[:, g:])), summary

    def step(self, ids: torch.Tensor, position: torch.Tensor, keys: torch.Tensor, summary: torch.Tensor,
             caches: list[KVCache]) -> torch.Tensor:
        """One new token per row after `start`: ids [B], its text position [B], keys [B, L_all] (the image, prompt
        and generated positions a token may attend to, itself last) -> next-token logits [B, K]."""
        x = self.embed(ids)[:, None] + self.position(position)[:, None] + summary           # [B, 1, C]
        for block, cache in zip(self.blocks, caches):
            x = block(x, keys[:, None, None, :], cache)
        return self.head(self.norm(x))[:, 0]


class SmallVerifier:
    """The trainer's model interface (model.VerifierModel's) around SmallVerifierNet: every weight is trained (it
    has no pretrained base), and the KL reference is a frozen copy of the network."""
    saved_as = "model"

    def __init__(self, config: SmallVerifierConfig, seed: int = 0, device: str | torch.device = "cpu"):
        self.config, self.device = config, torch.device(device)
        self.vocabulary = config.vocabulary
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        self.end_id, self.pad_id, self.sep_id, self.unk_id = (self.index[t] for t in (END, PAD, SEP, UNK))
        self.outputs = 1 + len(TRACE_PIECES)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = SmallVerifierNet(config).to(self.device)
        self.reference_net: SmallVerifierNet | None = None

    @classmethod
    def for_rows(cls, rows: Sequence, seed: int = 0, **options) -> SmallVerifier:
        """A fresh model whose prompt vocabulary is every word of the rows' instructions and principles."""
        found = {w for r in rows for text in (r.instruction, *(f"{p.kind} {p.text}" for p in r.principles))
                 for w in words(text)}
        return cls(SmallVerifierConfig(words=tuple(sorted(found)), **options), seed=seed)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def autocast_context(self):
        return contextlib.nullcontext()

    # ---- tokens and images -----------------------------------------------------------------------------------------
    def encode_trace(self, text: str) -> list[int]:
        """The trace's fragments (longest first at each place) and <end>; a trace outside the verdict format (a
        reason, free reasoning) cannot be written by this model."""
        ids, at = [], 0
        while at < len(text):
            piece = max((p for p in TRACE_PIECES if text.startswith(p, at)), key=len, default=None)
            if piece is None:
                raise InputError(f"trace {text!r:.80}: {text[at:at + 20]!r} at character {at} is not a fragment of "
                                 "the verdict format SmallVerifier writes (verdicts, scores and a final score, no "
                                 "reasons); train the VLM verifier on traces with reasoning")
            ids.append(self.index[piece])
            at += len(piece)
        return ids + [self.end_id]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocabulary[i] for i in ids if i < self.outputs and i != self.end_id)

    def prompt_ids(self, item: Item) -> list[int]:
        if len(item.sources) != 1:
            raise InputError(f"SmallVerifier judges an edit of one source image; this row has {len(item.sources)}")
        text = " ".join([item.instruction, *(f"{p.kind} {p.text}" for p in item.principles)])
        return [self.index.get(w, self.unk_id) for w in words(text)] + [self.sep_id]

    def pixels(self, source, edited) -> torch.Tensor:
        """Source and edited in [-1, 1] and DIFFERENCE_GAIN x their difference, as one [9, S, S] input."""
        size = self.config.image_size
        source, edited = (torch.from_numpy(np.asarray(load_image(im).resize((size, size)), dtype=np.float32))
                          .permute(2, 0, 1) / 127.5 - 1 for im in (source, edited))
        return torch.cat([source, edited, DIFFERENCE_GAIN * (edited - source)])

    def images(self, items: Sequence[Item]) -> torch.Tensor:
        return torch.stack([self.pixels(item.sources[0], item.edited) for item in items])       # [B, 9, S, S]

    # ---- the trainer's interface -----------------------------------------------------------------------------------
    def batch(self, items: Sequence[Item], traces: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-padded [prompt | trace] ids, the images, and mask [B, T] on trace tokens."""
        prompts = [self.prompt_ids(item) for item in items]
        width = max(len(p) + len(t) for p, t in zip(prompts, traces))
        if width > self.config.max_length:
            raise InputError(f"a prompt and trace of {width} tokens exceed max_length {self.config.max_length}")
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        real = torch.zeros(len(items), width, dtype=torch.bool)
        mask = torch.zeros(len(items), width, dtype=torch.bool)
        for b, (p, t) in enumerate(zip(prompts, traces)):
            ids[b, :len(p) + len(t)] = torch.tensor(p + list(t))
            real[b, :len(p) + len(t)] = True
            mask[b, len(p):len(p) + len(t)] = True
        return {"input_ids": ids, "real": real, "mask": mask, "pixels": self.images(items)}

    def token_logp(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p of each trace token given the ones before it: [B, T] (0 where mask is False)."""
        ids, mask = batch["input_ids"].to(self.device), batch["mask"].to(self.device)
        logits = self.net(batch["pixels"].to(self.device), ids, batch["real"].to(self.device))  # [B, T, K]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)                               # [B, T-1, K]
        target = ids[:, 1:].clamp(max=self.outputs - 1)           # prompt tokens are never scored (mask)
        out = torch.zeros(ids.shape, device=self.device)
        out[:, 1:] = logp.gather(-1, target[..., None])[..., 0]
        return out * mask

    @torch.no_grad()
    def sample_pair(self, shared: Item, candidates: Sequence, n: int, *, temperature: float, top_p: float,
                    max_new_tokens: int, seed: int, shared_prefix: bool = True) -> Traces:
        """n traces for each candidate, candidate-major, each candidate's prefix (its image and the prompt) prefilled
        once and its cache serving all n (shared_prefix=False: every rollout prefills its own, for comparison)."""
        if shared_prefix:
            items, repeats = [dataclasses.replace(shared, edited=c) for c in candidates], n
        else:
            items, repeats = [dataclasses.replace(shared, edited=c) for c in candidates for _ in range(n)], 1
        return self._generate(items, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                              repeats=repeats)

    @torch.no_grad()
    def sample_pairs(self, shared: Sequence[Item], candidates: Sequence[Sequence], n: int, *, temperature: float,
                     top_p: float, max_new_tokens: int, seed: int) -> list[Traces]:
        """sample_pair for several pairs in one batch, all drawn from `seed`, each candidate prefilled once."""
        items = [dataclasses.replace(item, edited=c) for item, group in zip(shared, candidates) for c in group]
        sampled = self._generate(items, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                 seed=seed, repeats=n)
        out, at = [], 0
        for group in candidates:
            count = len(group) * n
            out.append(Traces(sampled.ids[at:at + count], sampled.texts[at:at + count]))
            at += count
        return out

    @torch.no_grad()
    def judge_texts(self, rows: Sequence[Item], candidates: Sequence[Sequence], max_new_tokens: int,
                    batch_groups: int = 16) -> list[str]:
        """Greedy traces for every candidate of each row, row-major."""
        items = [dataclasses.replace(row, edited=c) for row, group in zip(rows, candidates) for c in group]
        return self._generate(items, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=0).texts

    def _generate(self, items: Sequence[Item], *, temperature: float, top_p: float, max_new_tokens: int,
                  seed: int, repeats: int = 1) -> Traces:
        """Traces for each item, `repeats` a row (row-major), each item's prefix prefilled once."""
        prompts = [self.prompt_ids(item) for item in items]
        width = max(map(len, prompts))
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)                   # left-padded
        real = torch.zeros(len(items), width, dtype=torch.bool)
        for b, p in enumerate(prompts):
            ids[b, width - len(p):], real[b, width - len(p):] = torch.tensor(p), True
        pixels = self.images(items).to(self.device)
        ids, real = ids.to(self.device), real.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        steps = min(max_new_tokens, self.config.max_length - width)
        caches = [KVCache(self.net.image_position.shape[0] + width + steps) for _ in self.net.blocks]
        logits, summary = self.net.start(pixels, ids, real, caches)
        logits = logits[:, -1].float()                                                          # [I, K]
        if repeats > 1:                                                 # each prefix serves its `repeats` rollouts
            expand = lambda t: t.repeat_interleave(repeats, dim=0)                              # [I, ...] -> [B, ...]
            caches = [cache.repeat_interleave(repeats) for cache in caches]
            logits, summary, ids, real = map(expand, (logits, summary, ids, real))
        done = torch.zeros(len(ids), dtype=torch.bool, device=self.device)
        keys = torch.cat([torch.ones(len(ids), self.net.image_position.shape[0], dtype=torch.bool,
                                     device=self.device), real], dim=1)                        # [B, G + P]
        position = real.long().sum(1)                                                           # [B]
        for _ in range(steps):
            if temperature > 0:
                picked = sample_top_p(logits / temperature, top_p, generator)
            else:
                picked = logits.argmax(-1)
            picked = torch.where(done, torch.full_like(picked, self.end_id), picked)
            ids = torch.cat([ids, picked[:, None]], 1)
            done |= picked == self.end_id
            if bool(done.all()):
                break
            keys = torch.cat([keys, torch.ones_like(keys[:, :1])], dim=1)
            logits = self.net.step(picked, position, keys, summary, caches).float()
            position = position + 1
        new = ids[:, width:].tolist()
        cut = [row[:row.index(self.end_id) + 1] if self.end_id in row else row for row in new]
        return Traces(cut, [self.decode(t) for t in cut])

    # ---- the KL reference ------------------------------------------------------------------------------------------
    def freeze_reference(self) -> None:
        if self.reference_net is None:
            self.reference_net = copy.deepcopy(self.net).requires_grad_(False)

    @contextlib.contextmanager
    def reference(self):
        trained, self.net = self.net, self.reference_net
        try:
            yield
        finally:
            self.net = trained

    # ---- checkpoints and saving ------------------------------------------------------------------------------------
    def adapters(self) -> list[str]:
        return ["default"] + (["ref"] if self.reference_net is not None else [])

    def save_adapters(self, directory: Path) -> list[str]:
        from safetensors.torch import save_file
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.adapters():
            net = self.net if name == "default" else self.reference_net
            save_file(net.state_dict(), str(directory / f"{name}.safetensors"))
        return self.adapters()

    def load_adapters(self, directory: Path, names: Sequence[str]) -> None:
        from safetensors.torch import load_file
        if "ref" in names:
            self.freeze_reference()
        for name in names:
            (self.net if name == "default" else self.reference_net).load_state_dict(
                load_file(str(directory / f"{name}.safetensors")))

    def save(self, directory: str | os.PathLike) -> str:
        """config.json (the vocabulary and sizes) and model.safetensors, each written whole or not at all."""
        from safetensors.torch import save
        directory = Path(directory)
        write_bytes_atomic(directory / WEIGHTS, save(self.net.state_dict()))
        write_json_atomic(directory / CONFIG, dataclasses.asdict(self.config))
        return os.fspath(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> SmallVerifier:
        from safetensors.torch import load_file
        directory = Path(directory)
        missing = [name for name in (CONFIG, WEIGHTS) if not (directory / name).is_file()]
        if missing:
            raise MissingPathError(f"{directory}: no SmallVerifier here ({', '.join(missing)} missing); give the "
                                    "folder SmallVerifier.save wrote (a demo run's model/)")
        options = json.loads((directory / CONFIG).read_text())
        model = cls(SmallVerifierConfig(**{**options, "words": tuple(options["words"])}), device=device)
        model.net.load_state_dict(load_file(str(directory / WEIGHTS)))
        return model


def sample_top_p(logits: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits) [B, K] cut to its smallest top set of mass >= top_p."""
    probs = torch.softmax(logits, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = ordered.cumsum(-1) - ordered >= top_p                   # the mass before a token already reaches top_p
    ordered = ordered.masked_fill(outside, 0.0)
    choice = torch.multinomial(ordered, 1, generator=generator)[:, 0]
    return order.gather(-1, choice[:, None])[:, 0]
