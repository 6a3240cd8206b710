"""The two judge prompts of the editscore reward (VIEScore structure): SC on [source, edited], PQ on [edited].

The SC prompt puts what a group of candidates shares first (system, instruction, source image), then the edited
image and the questions, so score_groups() can prefill the shared part once per group.
Each asks for two integer scores on 0..max_score and an answer in JSON with the reasoning first and the scores
last, {"reasoning": "...", "score": [a, b]}, which `parsing.parse_judge_scores` reads.
SC: score1 = how well the instruction was carried out (prompt following), score2 = how little beyond it was
changed (consistency: 0 = a different scene, max = a minimal yet effective edit).
PQ: score1 = naturalness, score2 = freedom from artifacts.
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
PQ_TEMPLATE = (                                            # field: max_score
    "This image was made by an AI tool. Judge how it looks, not what it shows.\n"
    "Give two integer scores from 0 to {max_score}.\n"
    "score1: naturalness. 0 means the lighting, shadows, sense of distance or proportions look clearly wrong; "
    "{max_score} means the image looks fully natural.\n"
    "score2: artifacts. 0 means heavy distortion, blur, smudges, broken shapes or unnatural textures; "
    "{max_score} means none at all.\n" + ANSWER_FORMAT
)
CALL_IMAGES = {"sc": 2, "pq": 1}                           # images each call shows: SC [source, edited], PQ [edited]


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


def pq_prompt(max_score: int) -> str:
    """The PQ prompt; its one image slot takes the edited image."""
    return HEAD + IMAGE + PQ_TEMPLATE.format(max_score=max_score) + TAIL


def vocabulary_texts() -> tuple[str, ...]:
    """The prompts' fixed text, for tokenizers learnt in code (tiny presets)."""
    return (sc_prompt("", 10), pq_prompt(10))
