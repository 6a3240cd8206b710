"""The principle verifier's text side: the principle format, the two prompts, and reading the judge's answers.

Principles come in three kinds: keep (something that must stay as it is), follow (a change the instruction asks
for) and quality (how the result must look). Given principles are `Principle`s, {"kind": ..., "text": ...}
mappings, or strings with a kind prefix ("keep: the sky stays blue"), which is how manifest rows store them.

Several source images: "This is the original image: <image>" becomes "These are the original images, in order:"
and one "Original image k: <image>" line per image; a one-source prompt is unchanged.

Answers are read with `parsing.find_json_object` (fences, stray text, smart quotes, trailing commas, cut-off
ends). Nothing is guessed: an answer that cannot be read, misses a principle, names an unknown verdict or gives
a score outside 0-10 yields an error string (the caller makes the reward NaN and counts it).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

from .parsing import find_json_object, missing_reason

KINDS = ("keep", "follow", "quality")
VERDICTS = ("pass", "partial", "fail")
MAX_SCORE = 10.0
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_HEAD = "<|im_start|>system\nYou are a careful judge of image edits.<|im_end|>\n<|im_start|>user\n"
_TAIL = "<|im_end|>\n<|im_start|>assistant\n"
PRINCIPLES_TEMPLATE = (                                  # slot: instruction
    f"{_HEAD}This is the original image: {IMAGE}\nThe editing instruction is: {{}}\n"
    "List the principles a correct edit must satisfy. Each has a kind: follow (a change the instruction asks "
    "for), keep (a part of the image that must stay as it is), quality (the result must look natural, without "
    'artifacts). Answer with JSON only: {{"principles": [{{"kind": "follow", "text": "..."}}, '
    '{{"kind": "keep", "text": "..."}}, {{"kind": "quality", "text": "..."}}]}}' + _TAIL
)
VERDICT_SHARED = (                                       # slots: instruction, numbered principle lines
    f"{_HEAD}The editing instruction is: {{}}\nThe principles are:\n{{}}This is the original image: {IMAGE}"
)
VERDICT_CANDIDATE = (                                    # the edited image first
    f"\nThis is the edited image: {IMAGE}\nCheck the edited image against each principle in turn. Think step by "
    "step first, then give each principle a verdict (pass, partial or fail) and a score from 0 to 10, and the "
    'edit a final score from 0 to 10. Answer with JSON only: {"reasoning": "...", "verdicts": [{"id": 1, '
    '"verdict": "pass", "score": 9, "reason": "..."}], "final_score": 8}' + _TAIL
)
VERDICT_TEMPLATE = VERDICT_SHARED + VERDICT_CANDIDATE.replace("{", "{{").replace("}", "}}")
ONE_SOURCE = f"This is the original image: {IMAGE}"      # replaced, for several sources, by labelled images:
MULTI_SOURCE = "These are the original images, in order:\n{}"      # slot: "Original image k: <image>" lines
_PREFIX = re.compile(r"^\s*\[?\s*(keep|follow|quality)\s*\]?\s*[:\-]\s*(.+)$", re.IGNORECASE | re.DOTALL)
# a final score written out completely (followed by , } or a newline): proof that a cut-off answer ended later
_COMPLETE_FINAL = re.compile(r"""final_score["'\u201c\u201d\u2018\u2019]?\s*:\s*["'\u201c\u201d]?[-+.\w]+"""
                             r"""["'\u201c\u201d]?\s*[,}\n]""", re.IGNORECASE)
_ANY_SCORE = re.compile(r"""["'\u201c\u201d\u2018\u2019]score["'\u201c\u201d\u2018\u2019]?\s*:""", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Principle:
    kind: str                                            # one of KINDS
    text: str

    def __post_init__(self):
        if self.kind not in KINDS or not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"a principle needs a kind in {KINDS} and a non-empty text, got {self.kind!r}, "
                             f"{self.text!r}")


def as_principle(item) -> Principle:
    """A Principle from a Principle, a {"kind", "text"} mapping or a "kind: text" string; ValueError otherwise."""
    if isinstance(item, Principle):
        return item
    if isinstance(item, Mapping):
        kind, text = item.get("kind"), item.get("text")
        if not isinstance(kind, str) or not isinstance(text, str):
            raise ValueError(f"a principle mapping needs string 'kind' and 'text', got {dict(item)!r}")
        return Principle(kind.strip().lower(), text.strip())
    if isinstance(item, str):
        match = _PREFIX.match(item)
        if match is None:
            raise ValueError(f"a principle string must start with a kind prefix 'keep:', 'follow:' or 'quality:', "
                             f"got {item!r}")
        return Principle(match.group(1).lower(), match.group(2).strip())
    raise ValueError(f"a principle must be a Principle, a mapping or a string, got {type(item).__name__}")


def as_principles(items: Sequence) -> tuple[Principle, ...]:
    """Validated principles of one sample: at least one, and at least one of kind follow."""
    if isinstance(items, (str, Mapping)) or not isinstance(items, Sequence):
        raise ValueError(f"principles must be a list, got {type(items).__name__}")
    principles = tuple(as_principle(item) for item in items)
    if not any(p.kind == "follow" for p in principles):
        raise ValueError(f"principles need at least one of kind 'follow', got {[p.kind for p in principles]}")
    return principles


def _sources(prompt: str, sources: int) -> str:
    """The prompt with its one source image replaced, for several sources, by labelled original images."""
    if sources == 1:
        return prompt
    lines = "\n".join(f"Original image {k}: {IMAGE}" for k in range(1, sources + 1))
    return prompt.replace(ONE_SOURCE, MULTI_SOURCE.format(lines), 1)


def principles_prompt(instruction: str, sources: int = 1) -> str:
    """The principle-generation prompt; its image slots take the source image(s)."""
    return _sources(PRINCIPLES_TEMPLATE.format(instruction), sources)


def verdict_prefix(instruction: str, principles: Sequence[Principle], sources: int = 1) -> str:
    """The part of the verdict prompt a group's candidates share: system, instruction, principles, source image(s).
    It ends on the special token <|vision_end|>, so prefix and suffix tokenize exactly as the whole prompt does."""
    lines = "".join(f"{i}. [{p.kind}] {p.text}\n" for i, p in enumerate(principles, 1))
    return _sources(VERDICT_SHARED.format(instruction, lines), sources)


def verdict_suffix() -> str:
    """The candidate's part of the verdict prompt: its image slot takes the edited image."""
    return VERDICT_CANDIDATE


def verdict_prompt(instruction: str, principles: Sequence[Principle], sources: int = 1) -> str:
    """The verdict prompt; its image slots take [source(s)..., edited]."""
    return verdict_prefix(instruction, principles, sources) + verdict_suffix()


def parse_principles(text: object) -> tuple[tuple[Principle, ...] | None, str | None]:
    """The principles in a generation answer {"principles": [...]}: (principles, None) or (None, reason); an
    answer cut off before the list closed is refused."""
    if missing_reason(text):
        return None, missing_reason(text)
    found, cut_off = find_json_object(text, lambda obj: isinstance(obj.get("principles"), list))
    if found is None:
        return None, "no JSON object with a principles list in the answer"
    if cut_off:                     # its last principle may be cut short, or principles may be missing
        return None, "answer cut off before its principles list was complete"
    try:
        return as_principles(found["principles"]), None
    except ValueError as error:
        return None, f"bad principles: {error}"


def parse_verdicts(text: object, count: int) -> tuple[dict | None, str | None]:
    """The judge's answer for `count` principles: ({"verdicts": [{"verdict", "score", "reason"}] in principle
    order, "final_score", "reasoning"}, None) or (None, reason). Verdicts are matched by their "id" (1-based);
    without ids, by position when there are exactly `count` of them."""
    if missing_reason(text):
        return None, missing_reason(text)
    found, cut_off = find_json_object(text, lambda obj: "verdicts" in obj or "final_score" in obj)
    if found is None:
        return None, "no JSON object with verdicts in the answer"
    if cut_off:                     # accept only when the final score was written whole after every verdict score
        final = list(_COMPLETE_FINAL.finditer(text))
        last_score = list(_ANY_SCORE.finditer(text))
        if not final or (last_score and last_score[-1].start() > final[-1].start()):
            return None, "answer cut off before its verdicts and final score were complete"
    entries = found.get("verdicts")
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        return None, f"verdicts must be a list of objects, got {entries!r}"
    ordered, error = _order(entries, count)
    if error:
        return None, error
    verdicts = []
    for i, entry in enumerate(ordered, 1):
        verdict = entry.get("verdict")
        verdict = verdict.strip().lower() if isinstance(verdict, str) else verdict
        if verdict not in VERDICTS:
            return None, f"principle {i}: verdict {entry.get('verdict')!r} is not one of {VERDICTS}"
        score, error = _score(entry.get("score"), f"principle {i}")
        if error:
            return None, error
        reason = entry.get("reason")
        verdicts.append({"verdict": verdict, "score": score, "reason": reason if isinstance(reason, str) else None})
    final, error = _score(found.get("final_score"), "final_score")
    if error:
        return None, error
    reasoning = found.get("reasoning")
    return {"verdicts": verdicts, "final_score": final,
            "reasoning": reasoning if isinstance(reasoning, str) else None}, None


def _order(entries: list, count: int) -> tuple[list | None, str | None]:
    if not any("id" in e for e in entries):
        if len(entries) != count:
            return None, f"expected {count} verdicts, got {len(entries)}"
        return entries, None
    by_id = {}
    for entry in entries:
        key = _number(entry.get("id"))
        if key is None or key != int(key) or not 1 <= key <= count or int(key) in by_id:
            return None, f"bad or repeated verdict id {entry.get('id')!r} (principles are 1..{count})"
        by_id[int(key)] = entry
    missing = [i for i in range(1, count + 1) if i not in by_id]
    if missing:
        return None, f"no verdict for principle(s) {missing}"
    return [by_id[i] for i in range(1, count + 1)], None


def _score(value, what: str) -> tuple[float | None, str | None]:
    number = _number(value)
    if number is None:
        return None, f"{what}: missing or non-numeric score {value!r}"
    if not 0.0 <= number <= MAX_SCORE:
        return None, f"{what}: score {number:g} out of range [0, {MAX_SCORE:g}]"
    return number, None


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
