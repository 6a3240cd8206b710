"""The two judge prompts of the editscore reward (VIEScore structure): SC on [source, edited], PQ on [edited].

The SC prompt puts what a group of candidates shares first (system, instruction, source image), then the edited
image and the questions, so score_groups() can prefill the shared part once per group.
Each asks for two integer scores on 0..max_score and an answer in JSON with the reasoning first and the scores
last, {"reasoning": "...", "score": [a, b]}, which `parsing.parse_judge_scores` reads.
SC: score1 = how well the instruction was carried out (prompt following), score2 = how little beyond it was
changed (consistency: 0 = a different scene, max = a minimal yet effective edit).
PQ: score1 = naturalness, score2 = freedom from artifacts.
`select` picks these (ProjectPrompts) or the publisher's exact templates (PublishedPrompts, editscore_published.py)
for a judge; both give EditScoreReward the same interface (SC prefix / suffix, PQ prompt).
"""
from __future__ import annotations

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
SYSTEM = ("You are an experienced digital artist who reviews images made and edited by AI tools. You judge "
          "carefully and explain what you see before you give numbers.")
ANSWER_FORMAT = (
    "Answer with a JSON object only, the reasoning first and the scores last, in this form:\n"
    '{{"reasoning": "<what you observed>", "score": [<score1>, <score2>]}}'
)
SC_SHARED = (                                              # field: instruction; then the source image
    "An AI tool edited an image following this instruction: {instruction}\n"
    "The first image is the original: " + IMAGE
)
SC_CANDIDATE = (                                           # field: max_score; the edited image first
    "\nThe second image is the original after the edit: " + IMAGE + "\n"
    "Give two integer scores from 0 to {max_score}.\n"
    "score1: how well the edit carries out the instruction. 0 means the instruction was not followed at all; "
    "{max_score} means it was followed completely.\n"
    "score2: how much the edit changed beyond what the instruction asked. 0 means the second image shows a "
    "different scene altogether; {max_score} means only what was asked changed, the smallest edit that does "
    "the job.\n" + ANSWER_FORMAT
)
PQ_LEAD = "This image was made by an AI tool. Judge how it looks, not what it shows.\n"
PQ_LEAD_BOTH = (                                           # pq_images="both": [source, edited]
    "The first image is an original, shown for reference only: " + IMAGE + "\n"
    "The second image was made from it by an AI tool: " + IMAGE + "\n"
    "Judge how the second image looks, not what it shows.\n"
)
PQ_TEMPLATE = (                                            # field: max_score
    "Give two integer scores from 0 to {max_score}.\n"
    "score1: naturalness. 0 means the lighting, shadows, sense of distance or proportions look clearly wrong; "
    "{max_score} means the image looks fully natural.\n"
    "score2: artifacts. 0 means heavy distortion, blur, smudges, broken shapes or unnatural textures; "
    "{max_score} means none at all.\n" + ANSWER_FORMAT
)
CALL_IMAGES = {"sc": 2, "pq": 1}                           # images each call shows: SC [source, edited], PQ [edited]
TEMPLATES = ("auto", "editscore", "project")


HEAD = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"


def sc_prefix(instruction: str) -> str:
    """The part of the SC prompt a group's candidates share: system, instruction, source image. It ends on the
    special token <|vision_end|>, so prefix and suffix tokenize exactly as the whole prompt does."""
    return HEAD + SC_SHARED.format(instruction=instruction)


def sc_suffix(max_score: int) -> str:
    """The candidate's part of the SC prompt: its image slot takes the edited image."""
    return SC_CANDIDATE.format(max_score=max_score) + TAIL


def sc_prompt(instruction: str, max_score: int) -> str:
    """The SC prompt (shared prefix + candidate suffix); its two image slots take [source, edited]."""
    return sc_prefix(instruction) + sc_suffix(max_score)


def pq_prompt(max_score: int, both: bool = False) -> str:
    """The PQ prompt; its one image slot takes the edited image (both: its two take [source, edited])."""
    lead = PQ_LEAD_BOTH if both else IMAGE + PQ_LEAD
    return HEAD + lead + PQ_TEMPLATE.format(max_score=max_score) + TAIL


class ProjectPrompts:
    """The project's own prompts (this module) behind the interface EditScoreReward uses."""
    source = "project"

    def sc_prefix(self, instruction: str) -> str:
        return sc_prefix(instruction)

    def sc_suffix(self, instruction: str, max_score: int) -> str:       # the instruction sits in the prefix
        return sc_suffix(max_score)

    def pq_prompt(self, max_score: int, both: bool) -> str:
        return pq_prompt(max_score, both)


class PublishedPrompts:
    """The publisher's templates (editscore_published.py): images first, so the shared SC prefix is the chat head
    and the labelled source image; the edited image and the text, instruction last, are the candidate's part."""

    def __init__(self, family: str | None):
        from . import editscore_published
        self.published, self.family = editscore_published, family or "qwen2_5_vl"
        self.templates = editscore_published.PublishedTemplates.load()
        self.source = self.templates.source

    def sc_prefix(self, instruction: str) -> str:
        return self.published.head(self.family) + self.published.image_slot(1, self.family)

    def sc_suffix(self, instruction: str, max_score: int) -> str:
        return (self.published.image_slot(2, self.family) + self.templates.sc_text(instruction, max_score)
                + self.published.TAIL)

    def pq_prompt(self, max_score: int, both: bool) -> str:
        slots = "".join(self.published.image_slot(i, self.family) for i in range(1, 3 if both else 2))
        return self.published.head(self.family) + slots + self.templates.pq_text(max_score) + self.published.TAIL


def select(templates: str, *, checkpoint: bool, family: str | None = None) -> ProjectPrompts | PublishedPrompts:
    """The prompts a judge gets. templates="editscore": the publisher's (their package must be installed);
    "project": this module's; "auto": the publisher's when the judge is an EditScore checkpoint (`checkpoint`,
    set by load() when a LoRA is given) and their package is installed, else the project's.
    family: the judge's model_type ("qwen2_5_vl" or "qwen3_vl"), which sets the publisher's chat layout."""
    from . import editscore_published
    if templates not in TEMPLATES:
        raise ValueError(f"unknown templates {templates!r}; choose one of {', '.join(TEMPLATES)}")
    published = templates == "editscore" or (templates == "auto" and checkpoint
                                             and editscore_published.module_path() is not None)
    return PublishedPrompts(family) if published else ProjectPrompts()


def vocabulary_texts(prompts: ProjectPrompts | PublishedPrompts | None = None) -> tuple[str, ...]:
    """The prompts' fixed text, for tokenizers learnt in code (tiny presets)."""
    if prompts is None:
        return (sc_prompt("", 10), pq_prompt(10))
    return (prompts.sc_prefix("") + prompts.sc_suffix("", 10), prompts.pq_prompt(10, False),
            prompts.pq_prompt(10, True))
