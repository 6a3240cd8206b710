"""The EditScore / VIEScore judge reward: two generated judge answers per sample, averaged over K passes.

Per sample and pass: SC call on [source, edited] -> (prompt following, consistency); PQ call on [edited] ->
(naturalness, artifacts); scores on 0..R (R = 25 for EditScore checkpoints, 10 for VIEScore prompts).
SC = min, PQ = min, rescaled to 0-10; O = sqrt(SC * PQ); reward = mean of O over the passes that parsed / 10
(reduction="mean_overall"), or sqrt(mean SC * mean PQ) / 10 over those passes ("average_first", the publisher's
option). pq_images="edited" (default: VIEScore's and the publisher's single-call protocol, the one their
benchmark figures use) shows PQ the edited image; "both" shows [source, edited], as the publisher's RL reward does.
templates: "auto" (default) gives an EditScore checkpoint (a LoRA given to load(), or checkpoint=True) the
publisher's exact templates when their `editscore` package is installed (editscore_published.py), "editscore"
requires them, "project" or no package: the project's prompts (editscore_prompts.py); metadata()["prompts"].
Avg@K: K sampled passes (temperature 0.7, top-p 0.9, top-k 20), pass i seeded with base_seed + i, so a pass is
reproducible; greedy=True gives one deterministic pass. A pass whose answers cannot be parsed (or lie out of
range) is left out of the mean and counted; a sample none of whose passes parsed is NaN and a failure.
Generation is batched over samples and both calls (left padding); images are capped like mllm_logit's.
score_groups(): the SC prompt is the group's shared prefix + the candidate's suffix; with the VLM the prefix is
prefilled once per group (group_generation.py), a generate_fn judge gets the same prompts as whole calls.
EditScore checkpoints are LoRA adapters on Qwen2.5-VL: `lora=` loads one with peft and merges it once.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Sequence

import torch

from editrl_engine.vlm import VLM
from editrl_engine.vlm import load as load_vlm
from editrl_engine.vlm.images import as_rgb_image

from . import editscore_prompts as prompts
from . import group_generation
from .base import RewardBatch, RewardModel, check_groups, check_triples, per_candidate
from .parsing import EDITSCORE_MAX, VIESCORE_MAX, ParsedScores, combine_sc_pq, parse_judge_scores, rescale_to_ten
from .sources import rgb_sources, source_count

SCALES = {"editscore": EDITSCORE_MAX, "viescore": VIESCORE_MAX}
SCORES_PER_CALL = 2                                          # SC: (following, consistency); PQ: (natural, artifacts)
BACKENDS = ("eager",)
PQ_IMAGES = ("edited", "both")
REDUCTIONS = ("mean_overall", "average_first")


@dataclasses.dataclass(frozen=True)
class JudgeCall:
    sample: int                                              # index of the sample in the scored batch
    kind: str                                                # "sc" or "pq"
    text: str                                                # the full chat prompt
    images: tuple                                            # PIL RGB images in prompt order


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How one pass generates: greedy, or sampled from `seed`."""
    do_sample: bool
    seed: int | None
    max_new_tokens: int
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 20

    def generate_kwargs(self) -> dict:
        sampled = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k) if self.do_sample else {}
        return dict(do_sample=self.do_sample, max_new_tokens=self.max_new_tokens, **sampled)


GenerateFn = Callable[[Sequence[JudgeCall], Decoding], list[str]]   # calls -> one answer text per call


class EditScoreReward(RewardModel):
    kind = "editscore"

    def __init__(self, vlm: VLM | None, *, scale: str = "editscore", passes: int = 1,
                 greedy: bool = False, base_seed: int = 42, max_new_tokens: int = 512, temperature: float = 0.7,
                 top_p: float = 0.9, top_k: int = 20, batch_size: int = 8, max_image_pixels: int = 512 * 512,
                 generate_fn: GenerateFn | None = None, templates: str = "auto", checkpoint: bool = False,
                 pq_images: str = "edited", reduction: str = "mean_overall"):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        if pq_images not in PQ_IMAGES or reduction not in REDUCTIONS:
            raise ValueError(f"pq_images must be one of {', '.join(PQ_IMAGES)} and reduction one of "
                             f"{', '.join(REDUCTIONS)}; got pq_images={pq_images!r}, reduction={reduction!r}")
        if passes < 1 or (greedy and passes != 1):
            raise ValueError(f"passes must be >= 1, and 1 when greedy (greedy passes are identical); got "
                             f"passes={passes}, greedy={greedy}")
        if vlm is None and generate_fn is None:
            raise ValueError("EditScoreReward needs a vlm or a generate_fn")
        self.vlm, self.scale, self.max_score = vlm, scale, SCALES[scale]
        self.passes, self.greedy, self.base_seed, self.batch_size = passes, greedy, base_seed, batch_size
        self.templates, self.pq_images, self.reduction = templates, pq_images, reduction
        family = vlm.model.config.model_type if vlm is not None else None
        self.prompts = prompts.select(templates, checkpoint=checkpoint, family=family)
        self.sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        self.scripted = generate_fn is not None                   # answers come from generate_fn, not the vlm
        self.generate_fn = generate_fn or self.generate
        if vlm is not None:
            vlm.tokenizer.padding_side = "left"                  # generation continues every row at the end
            size = vlm.processor.image_processor.size
            self.image_size = {"shortest_edge": min(size["shortest_edge"], max_image_pixels),
                               "longest_edge": min(size["longest_edge"], max_image_pixels)}

    # ---- the protocol --------------------------------------------------------------------------------------
    def calls(self, sources: Sequence, instructions: Sequence[str], edited: Sequence) -> list[JudgeCall]:
        """[2N] calls: SC then PQ for each sample."""
        r = int(self.max_score)
        out, p = [], self.prompts
        for i, (source, instruction, image) in enumerate(zip(sources, instructions, edited)):
            source, image, k = rgb_sources(source), as_rgb_image(image), source_count(source)
            out.append(JudgeCall(i, "sc", p.sc_prefix(instruction, k) + p.sc_suffix(instruction, r, k),
                                 (*source, image)))
            out.append(self._pq_call(i, source, image))
        return out

    def _pq_call(self, i: int, source: tuple, image) -> JudgeCall:
        """The PQ call of one sample; source: its RGB source images (rgb_sources)."""
        both = self.pq_images == "both"
        return JudgeCall(i, "pq", self.prompts.pq_prompt(int(self.max_score), both, len(source)),
                         (*source, image) if both else (image,))

    def decoding(self, pass_index: int) -> Decoding:
        if self.greedy:
            return Decoding(do_sample=False, seed=None, **self.sampling)
        return Decoding(do_sample=True, seed=self.base_seed + pass_index, **self.sampling)

    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence,
              avg_k: int | None = None, *, rows: Sequence | None = None) -> RewardBatch:
        """avg_k: passes of the self-ensemble for this call (default: the `passes` the reward was built with).
        rows: unused (the judge needs nothing beyond the triples)."""
        n = check_triples(sources, instructions, edited)
        num_passes = self._num_passes(avg_k)
        calls = self.calls(sources, instructions, edited)
        return self._aggregate(n, [self._generate_all(calls, self.decoding(p)) for p in range(num_passes)])

    def score_groups(self, sources: Sequence, instructions: Sequence[str], candidates: Sequence[Sequence],
                     avg_k: int | None = None, *, rows: Sequence | None = None) -> RewardBatch:
        """Group scoring: candidates[g] are the edits of (sources[g], instructions[g]). The SC prompt is built as
        its shared prefix (project prompts: system, instruction, source image; the publisher's: system, source
        image) + the candidate's suffix (edited image, questions; the publisher's: the instruction last); with the
        VLM the prefix is prefilled once per group and its KV cache reused for every candidate and pass
        (group_generation.py), the PQ calls run batched as in score(). One RewardBatch over all
        candidates, group-major; greedy, it equals score() on the flattened triples (sampled passes are seeded and
        reproducible, but draw differently). A generate_fn judge has no cache to share: it gets the same
        prefix + suffix prompts as whole calls, SC and PQ of every candidate in one call per pass."""
        sizes = check_groups(sources, instructions, candidates)
        decodings = [self.decoding(p) for p in range(self._num_passes(avg_k))]
        r = int(self.max_score)
        counts = [source_count(s) for s in sources]
        prefixes = [self.prompts.sc_prefix(i, k) for i, k in zip(instructions, counts)]
        suffixes = [self.prompts.sc_suffix(i, r, k) for i, k in zip(instructions, counts)]   # per group
        flat_edited = [as_rgb_image(image) for group in candidates for image in group]
        flat_sources = per_candidate([rgb_sources(s) for s in sources], sizes)
        pq_calls = [self._pq_call(i, s, image) for i, (s, image) in enumerate(zip(flat_sources, flat_edited))]
        if not self.shares_prefix:                               # whole calls: SC, PQ of each candidate, as score()
            sc_calls = [JudgeCall(i, "sc", prefix + suffix, (*source, image)) for i, (prefix, suffix, source, image)
                        in enumerate(zip(per_candidate(prefixes, sizes), per_candidate(suffixes, sizes),
                                         flat_sources, flat_edited))]
            calls = [call for pair in zip(sc_calls, pq_calls) for call in pair]
            return self._aggregate(len(flat_edited), [self._generate_all(calls, d) for d in decodings])
        sc = group_generation.answers(self.vlm, self.image_size, self.batch_size, prefixes, list(sources), suffixes,
                                      [list(g) for g in candidates], decodings)           # [K][N]
        pq = [self._generate_all(pq_calls, d) for d in decodings]                          # [K][N]
        answers = [[text for pair in zip(sc[p], pq[p]) for text in pair] for p in range(len(decodings))]  # [K][2N]
        return self._aggregate(len(flat_edited), answers)

    @property
    def multi_source(self) -> bool:
        """A source may be several images (the project's prompts label each); not with the publisher's templates."""
        return self.prompts.multi_source

    @property
    def shares_prefix(self) -> bool:
        """True with the VLM's own generation; a generate_fn judge (scripted, remote) has no KV cache to share."""
        return self.vlm is not None and not self.scripted

    def _generate_all(self, calls: Sequence[JudgeCall], decoding: Decoding) -> list[str]:
        texts = list(self.generate_fn(calls, decoding))
        if len(texts) != len(calls):
            raise ValueError(f"the generator returned {len(texts)} answers for {len(calls)} calls")
        return texts

    def _num_passes(self, avg_k: int | None) -> int:
        num_passes = self.passes if avg_k is None else avg_k
        if num_passes < 1 or (self.greedy and num_passes != 1):
            raise ValueError(f"avg_k must be >= 1, and 1 for a greedy judge; got avg_k={avg_k}, greedy={self.greedy}")
        return num_passes

    def _aggregate(self, n: int, answers: list[list[str]]) -> RewardBatch:
        """The RewardBatch of [K][2N] answer texts (SC, PQ of sample 0, then of sample 1, ...)."""
        num_passes = len(answers)
        parsed = [[parse_judge_scores(t, count=SCORES_PER_CALL, max_score=self.max_score) for t in texts]
                  for texts in answers]                                        # [K][2N]
        raw = torch.tensor([[p.scores if p.ok else (math.nan,) * SCORES_PER_CALL for p in row] for row in parsed],
                           dtype=torch.float64).view(num_passes, n, 2, SCORES_PER_CALL)    # [K, N, call, score]
        sc, pq, overall, _ = combine_sc_pq(raw[:, :, 0].reshape(-1, SCORES_PER_CALL),
                                           raw[:, :, 1].reshape(-1, SCORES_PER_CALL), self.max_score)
        sc, pq, overall = (t.view(num_passes, n) for t in (sc, pq, overall))  # [K, N] on 0-10, NaN if unparsed
        reduced = self._reduce(sc, pq, overall)                                # [N] on 0-10, NaN when no pass parsed
        reward = (reduced / 10).float()
        per_ten = rescale_to_ten(raw, self.max_score)                           # [K, N, call, score] on 0-10
        details = [self._details(i, answers, parsed, per_ten, sc, pq, overall, reduced) for i in range(n)]
        return RewardBatch(reward=reward, details=details, failures=int(reward.isnan().sum()))

    def _reduce(self, sc: torch.Tensor, pq: torch.Tensor, overall: torch.Tensor) -> torch.Tensor:
        """[K, N] per-pass SC, PQ, O -> [N] on 0-10, over the passes whose two calls parsed."""
        if self.reduction == "mean_overall":
            return overall.nanmean(dim=0)
        parsed = ~overall.isnan()                                               # [K, N]
        nan = torch.full_like(sc, math.nan)
        return (torch.where(parsed, sc, nan).nanmean(dim=0) * torch.where(parsed, pq, nan).nanmean(dim=0)).sqrt()

    def _details(self, i: int, answers, parsed: list[list[ParsedScores]], per_ten: torch.Tensor,
                 sc: torch.Tensor, pq: torch.Tensor, overall: torch.Tensor, reduced: torch.Tensor) -> dict:
        """Means over parsed passes on 0-10 (each sub-score over the passes whose call parsed), and every pass."""
        def mean(values: torch.Tensor) -> float:
            return float(values.nanmean()) if not values.isnan().all() else math.nan
        passes = []
        for p in range(overall.shape[0]):
            sc_answer, pq_answer = parsed[p][2 * i], parsed[p][2 * i + 1]
            passes.append({"overall": float(overall[p, i]), "sc": float(sc[p, i]), "pq": float(pq[p, i]),
                           "sc_scores": sc_answer.scores, "pq_scores": pq_answer.scores,
                           "sc_text": answers[p][2 * i], "pq_text": answers[p][2 * i + 1],
                           "sc_error": sc_answer.error, "pq_error": pq_answer.error})
        failed = sum(math.isnan(entry["overall"]) for entry in passes)
        detail = {"overall": float(reduced[i]), "sc": mean(sc[:, i]), "pq": mean(pq[:, i]),
                  "prompt_following": mean(per_ten[:, i, 0, 0]), "consistency": mean(per_ten[:, i, 0, 1]),
                  "naturalness": mean(per_ten[:, i, 1, 0]), "artifacts": mean(per_ten[:, i, 1, 1]),
                  "failed_passes": failed, "passes": passes}
        if failed == len(passes):
            first = passes[0]
            detail["error"] = f"no pass parsed (pass 0: sc: {first['sc_error']}; pq: {first['pq_error']})"
        return detail

    # ---- generation with the VLM ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, calls: Sequence[JudgeCall], decoding: Decoding) -> list[str]:
        """One answer per call, in batches of batch_size; a sampled pass draws from its own seed, leaving the
        global RNG untouched."""
        model = self.vlm.model
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if decoding.seed is not None:
                torch.manual_seed(decoding.seed)
            texts = []
            for start in range(0, len(calls), self.batch_size):
                texts += self._generate_batch(calls[start: start + self.batch_size], decoding)
        return texts

    def _generate_batch(self, calls: Sequence[JudgeCall], decoding: Decoding) -> list[str]:
        model, tokenizer = self.vlm.model, self.vlm.tokenizer
        inputs = self.vlm.processor(text=[c.text for c in calls], images=[im for c in calls for im in c.images],
                                    padding=True, size=self.image_size, return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}             # input_ids [B, S], left-padded
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        ids = model.generate(**inputs, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def metadata(self) -> dict:
        return {"kind": self.kind, "origin": self.vlm.origin if self.vlm is not None else "generate_fn",
                "scale": self.scale, "passes": self.passes, "greedy": self.greedy, "base_seed": self.base_seed,
                "prompts": self.prompts.source, "templates": self.templates, "pq_images": self.pq_images,
                "reduction": self.reduction, **self.sampling}


def merge_lora(model: torch.nn.Module, adapter: str | os.PathLike) -> torch.nn.Module:
    """The model with the peft LoRA adapter in folder `adapter` merged into its weights (done once, at load)."""
    from peft import PeftModel
    adapter = os.fspath(adapter)
    if not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise FileNotFoundError(f"LoRA adapter folder {adapter!r} has no adapter_config.json (expected what peft's "
                                f"save_pretrained writes)")
    with warnings.catch_warnings():           # peft reads a property transformers deprecated; not ours to fix
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval().requires_grad_(False)


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, backend: str = "eager", *, lora: str | os.PathLike | None = None,
         seed: int = 0, family: str | None = None, **options) -> EditScoreReward:
    """From a local Qwen2.5-VL or Qwen3-VL folder (`path`; `family` read from its config.json unless given) or a
    preset ("tiny", random weights from `seed`), with an optional LoRA adapter folder `lora` merged in.
    options: EditScoreReward's (scale, passes, greedy, base_seed, templates, pq_images, reduction, ...); a `lora`
    marks the judge as an EditScore checkpoint (templates="auto" then picks the publisher's templates)."""
    if backend not in BACKENDS:
        raise NotImplementedError(f"editscore backend {backend!r} is not implemented yet; available: "
                                  f"{', '.join(BACKENDS)}")
    options.setdefault("checkpoint", lora is not None)
    chosen = prompts.select(options.get("templates", "auto"), checkpoint=options["checkpoint"])
    vocabulary = prompts.vocabulary_texts(None if isinstance(chosen, prompts.ProjectPrompts) else chosen)
    vlm = load_vlm(path=path, preset=preset, device=device, dtype=dtype, family=family, templates=vocabulary,
                   seed=seed)
    if lora is not None:
        vlm = dataclasses.replace(vlm, model=merge_lora(vlm.model, lora), origin=f"{vlm.origin}+lora:{lora}")
    return EditScoreReward(vlm, **options)
