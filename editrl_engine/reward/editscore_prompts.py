"""The two judge prompts of the editscore reward (VIEScore structure): SC on [source, edited], PQ on [edited].

The SC prompt puts what a group of candidates shares first (system, instruction, source image), then the edited
image and the questions, so score_groups() can prefill the shared part once per group.
Each asks for two integer scores on 0..max_score and an answer in JSON with the reasoning first and the scores
last, {"reasoning": "...", "score": [a, b]}, which `parsing.parse_judge_scores` reads.
SC: score1 = how well the instruction was carried out (prompt following), score2 = how little beyond it was
changed (consistency: 0 = a different scene, max = a minimal yet effective edit).
PQ: score1 = naturalness, score2 = freedom from artifacts.
Several source images: each is shown, labelled "Original image k:", where the one source image is (SC, and PQ with
both images); a one-source prompt is unchanged. The publisher's templates take one source image only.
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
SC_SHARED_MULTI = (                                        # fields: instruction, original-image lines
    "An AI tool edited images following this instruction: {instruction}\n"
    "The original images, in order:\n{originals}"
)
SC_CANDIDATE_MULTI = (
    SC_CANDIDATE.replace("\nThe second image is the original after the edit: ", "\nThe last image is the result of "
                         "the edit: ").replace("0 means the second image shows", "0 means the last image shows")
)
PQ_LEAD_BOTH_MULTI = (                                     # field: original-image lines (no final newline)
    "The first images are originals, shown for reference only:\n{originals}\n"
    "The last image was made from them by an AI tool: " + IMAGE + "\n"
    "Judge how the last image looks, not what it shows.\n"
)
CALL_IMAGES = {"sc": 2, "pq": 1}                           # images each call shows: SC [source, edited], PQ [edited]
TEMPLATES = ("auto", "editscore", "project")


HEAD = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"


def original_lines(count: int) -> str:
    """Labelled source images, one per line: "Original image k: <image>" (no final newline)."""
    return "\n".join(f"Original image {k}: {IMAGE}" for k in range(1, count + 1))


def sc_prefix(instruction: str, sources: int = 1) -> str:
    """The part of the SC prompt a group's candidates share: system, instruction, source image(s). It ends on the
    special token <|vision_end|>, so prefix and suffix tokenize exactly as the whole prompt does."""
    if sources == 1:
        return HEAD + SC_SHARED.format(instruction=instruction)
    return HEAD + SC_SHARED_MULTI.format(instruction=instruction, originals=original_lines(sources))


def sc_suffix(max_score: int, sources: int = 1) -> str:
    """The candidate's part of the SC prompt: its image slot takes the edited image."""
    return (SC_CANDIDATE if sources == 1 else SC_CANDIDATE_MULTI).format(max_score=max_score) + TAIL


def sc_prompt(instruction: str, max_score: int, sources: int = 1) -> str:
    """The SC prompt (shared prefix + candidate suffix); its image slots take [source(s)..., edited]."""
    return sc_prefix(instruction, sources) + sc_suffix(max_score, sources)


def pq_prompt(max_score: int, both: bool = False, sources: int = 1) -> str:
    """The PQ prompt; its one image slot takes the edited image (both: its slots take [source(s)..., edited])."""
    if not both:
        lead = IMAGE + PQ_LEAD
    else:
        lead = PQ_LEAD_BOTH if sources == 1 else PQ_LEAD_BOTH_MULTI.format(originals=original_lines(sources))
    return HEAD + lead + PQ_TEMPLATE.format(max_score=max_score) + TAIL


class ProjectPrompts:
    """The project's own prompts (this module) behind the interface EditScoreReward uses."""
    source = "project"

    multi_source = True

    def sc_prefix(self, instruction: str, sources: int = 1) -> str:
        return sc_prefix(instruction, sources)

    def sc_suffix(self, instruction: str, max_score: int, sources: int = 1) -> str:   # the instruction: in the prefix
        return sc_suffix(max_score, sources)

    def pq_prompt(self, max_score: int, both: bool, sources: int = 1) -> str:
        return pq_prompt(max_score, both, sources)


class PublishedPrompts:
    """The publisher's templates (editscore_published.py): images first, so the shared SC prefix is the chat head
    and the labelled source image; the edited image and the text, instruction last, are the candidate's part."""

    def __init__(self, family: str | None):
        from . import editscore_published
        self.published, self.family = editscore_published, family or "qwen2_5_vl"
        self.templates = editscore_published.PublishedTemplates.load()
        self.source = self.templates.source

    multi_source = False                    # the publisher's text speaks of one original image

    @staticmethod
    def _one_source(sources: int) -> None:
        if sources != 1:
            raise ValueError(f"the publisher's EditScore templates show one original image, and this sample has "
                             f"{sources}: judge several source images with templates='project'")

    def sc_prefix(self, instruction: str, sources: int = 1) -> str:
        self._one_source(sources)
        return self.published.head(self.family) + self.published.image_slot(1, self.family)

    def sc_suffix(self, instruction: str, max_score: int, sources: int = 1) -> str:
        self._one_source(sources)
        return (self.published.image_slot(2, self.family) + self.templates.sc_text(instruction, max_score)
                + self.published.TAIL)

    def pq_prompt(self, max_score: int, both: bool, sources: int = 1) -> str:
        self._one_source(sources)
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
