"""Reading a VLM judge's answer into scores, and the VIEScore combination of SC and PQ scores.

The judge is asked for JSON with the reasoning first and the scores last: {"reasoning": "...", "score": [a, b]}.
`parse_judge_scores` survives what judges actually write around that: ``` fences, stray text before and after,
smart quotes, single quotes, unquoted keys, trailing commas, numeric strings, an answer cut off after its score
list was complete, a score list with no object around it (`score: [20, 18]`, quoted or not), and a bare list that
is the answer's only bracketed list (`[20, 15]`). It never guesses: an answer it cannot read, two different score
lists, several bracketed lists and no score key, a wrong number of scores, a non-numeric or out-of-range score give
`scores=None` and the reason in `error` (the caller turns that into NaN and counts a failure).

Scales: EditScore checkpoints answer on 0-25 (`EDITSCORE_MAX`), VIEScore prompts on 0-10 (`VIESCORE_MAX`).
Combination: SC = min(SC scores), PQ = min(PQ scores), both rescaled to 0-10; O = sqrt(SC * PQ); reward = O / 10.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import re

import torch

EDITSCORE_MAX = 25.0
VIESCORE_MAX = 10.0
SCORE_KEYS = ("score", "scores")
MAX_ANSWER_CHARS = 100_000                       # longer answers are cut before parsing (bounded work)

_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'"})
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
# a score value that was written out completely: a closed list, or a number / quoted number followed by , } or
# a newline. Used to accept a truncated answer only when the cut came after the scores.
_COMPLETE_SCORE = re.compile(r"""["']?scores?["']?\s*:\s*(?:\[[^\[\]]*\]|["']?[-+.\w]+["']?\s*[,}\n])""",
                             re.IGNORECASE)
_DANGLING_KEY = re.compile(r"""[,{]\s*["'][^"'\[\]{}]*["']\s*:?\s*$""")
_JSON_WORDS = re.compile(r"\b(?:true|false|null)\b")
_PYTHON_WORDS = {"true": "True", "false": "False", "null": "None"}
_KEYED_SCORE_LIST = re.compile(r"""(?<![\w])["']?scores?["']?\s*[:=]\s*(\[[^\[\]]*\])""", re.IGNORECASE)
_BRACKETED = re.compile(r"\[[^\[\]]*\]")
_BARE_KEY = re.compile(r"\s*([A-Za-z_]\w*)\s*:")                 # an identifier used as a key


class MissingAnswer(str):
    """No answer text, and why: the judge could not be asked (a remote request that finally failed). It is an empty
    string, so it is stored and shown as one; every answer parser gives `reason` as its error."""
    reason: str

    def __new__(cls, reason: str):
        answer = super().__new__(cls, "")
        answer.reason = reason
        return answer


def missing_reason(text: object) -> str | None:
    """"no answer: <reason>" for a MissingAnswer, else None."""
    return f"no answer: {text.reason}" if isinstance(text, MissingAnswer) else None


@dataclasses.dataclass(frozen=True)
class ParsedScores:
    scores: tuple[float, ...] | None             # the judge's scores on its own scale 0..max_score, or None
    reasoning: str | None = None                 # the "reasoning" field when there was one
    error: str | None = None                     # why there are no scores

    @property
    def ok(self) -> bool:
        return self.scores is not None


def parse_judge_scores(text: object, *, count: int, max_score: float) -> ParsedScores:
    """The `count` scores in the judge's answer `text`, each checked to lie in [0, max_score]."""
    if count < 1 or not max_score > 0:
        raise ValueError(f"count must be >= 1 and max_score > 0, got count={count}, max_score={max_score}")
    if missing_reason(text):
        return ParsedScores(None, error=missing_reason(text))
    if not isinstance(text, str) or not text.strip():
        return ParsedScores(None, error="empty answer")
    text = text[:MAX_ANSWER_CHARS].translate(_QUOTES)
    objects = list(find_json_objects(text, lambda obj: _score_key(obj) is not None))
    keyed = _KEYED_SCORE_LIST.findall(text)                        # `score: [..]` anywhere, in objects or not
    readable = [value for value in map(_load_loose, keyed) if value is not None]
    values = {_signature(value) for value in [_score_value(obj) for obj, _ in objects] + readable}
    if len(values) > 1:
        return ParsedScores(None, error=f"ambiguous: several different score lists in the answer {sorted(values)}")
    if objects:
        found, truncated_answer = objects[0]
        if truncated_answer and not _COMPLETE_SCORE.search(text):
            return ParsedScores(None, error="answer cut off before its score list was complete")
    elif readable:
        found = {"score": readable[0]}                             # a score list outside any readable object
    elif keyed:
        return ParsedScores(None, error=f"unreadable score list {keyed[0]!r}")
    else:
        found, error = _bare_list(text)
        if found is None:
            return ParsedScores(None, error=error)
    reasoning = found.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else None
    scores, error = _validate(_score_value(found), count, max_score)
    return ParsedScores(scores, reasoning, error)


def _signature(value) -> tuple:
    """What two score values are compared by: their numbers ("9" and 9 agree), else their text."""
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers = tuple(_as_number(item) for item in items)
    return numbers if None not in numbers else (repr(value),)


def _bare_list(text: str) -> tuple[dict | None, str | None]:
    """An answer without a score key: its one bracketed list, when it has exactly one and no readable object."""
    lists = {chunk.strip() for chunk in _BRACKETED.findall(text)}
    if not lists or find_json_object(text, lambda obj: True)[0] is not None:
        return None, "no JSON object with a score list in the answer"
    if len(lists) > 1:
        return None, f"ambiguous: several bracketed lists and no score key in the answer {sorted(lists)}"
    chunk = lists.pop()
    value = _load_loose(chunk)
    return ({"score": value}, None) if value is not None else (None, f"unreadable score list {chunk!r}")


# ---- finding the object --------------------------------------------------------------------------------------
def find_json_object(text: object, accept) -> tuple[dict | None, bool]:
    """The first JSON-like object in an answer (inside ``` fences first, then anywhere) for which `accept(obj)`
    holds, read with the repairs below (smart and single quotes, unquoted keys, trailing commas, a cut-off end
    closed), and whether it had to be closed (the answer was cut off); (None, False) when there is none. The one
    scanner of judge answers: the score parser above and the verifier's principles / verdicts (verifier_prompts.py)."""
    return next(find_json_objects(text, accept), (None, False))


def find_json_objects(text: object, accept):
    """Yield (object, cut off) for every accepted object, in find_json_object's order (fenced ones come again in
    the whole text)."""
    if not isinstance(text, str) or not text.strip():
        return
    text = text[:MAX_ANSWER_CHARS].translate(_QUOTES)
    fenced = _FENCE.search(text)
    for candidate in [fenced.group(1), text] if fenced else [text]:
        for chunk, closed in _top_level_objects(candidate):
            for attempt in [chunk] if closed else _close_truncated(chunk):
                loaded = _load_loose(attempt)
                if isinstance(loaded, dict) and accept(loaded):
                    yield loaded, not closed
                    break


def _top_level_objects(text: str):
    """Yield (chunk, closed) for each top-level {...} in text, string-aware; an unclosed last one comes with
    closed=False."""
    start, depth, quote, escaped = None, 0, None, False
    for i, ch in enumerate(text):
        if start is None:
            if ch == "{":
                start, depth, quote, escaped = i, 1, None, False
            continue
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'" and not (ch == "'" and text[i - 1].isalpha()):   # an apostrophe inside a word is text
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                yield text[start: i + 1], True
                start = None
    if start is not None:
        yield text[start:], False


def _close_truncated(chunk: str) -> list[str]:
    """Ways to complete a cut-off object: append the missing quote and brackets, with and without a dangling
    last key."""
    stack, quote, escaped = [], None, False
    for i, ch in enumerate(chunk):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'" and not (ch == "'" and chunk[i - 1].isalpha()):
            quote = ch
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    closed_string = chunk + (quote or "")
    without_dangling_key = _DANGLING_KEY.sub("", closed_string)      # '..., "reasoning":' -> '...'
    closers = "".join(reversed(stack))
    return [_TRAILING_COMMA.sub(r"\1", re.sub(r"[,:\s]+$", "", text) + closers)
            for text in (closed_string, without_dangling_key)]


def _load_loose(chunk: str, quote_keys: bool = True):
    """JSON, else a Python literal (single quotes, trailing commas), else either with its bare keys quoted
    ({score: [1, 2]}); None when none reads it."""
    for attempt in (chunk, _TRAILING_COMMA.sub(r"\1", chunk)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
    try:
        return ast.literal_eval(_JSON_WORDS.sub(lambda m: _PYTHON_WORDS[m.group(0)], chunk))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    quoted = _quote_bare_keys(chunk) if quote_keys else chunk
    return _load_loose(quoted, quote_keys=False) if quoted != chunk else None


def _quote_bare_keys(chunk: str) -> str:
    """Identifiers used as keys outside strings ({score: ..., reasoning: ...}) put in double quotes."""
    out, quote, escaped, i = [], None, False, 0
    while i < len(chunk):
        ch = chunk[i]
        if quote:
            escaped, quote = (False, quote) if escaped else (ch == "\\", None if ch == quote else quote)
        elif ch in "\"'" and not (ch == "'" and chunk[i - 1: i].isalpha()):
            quote = ch
        elif ch in "{," and (key := _BARE_KEY.match(chunk, i + 1)):
            out.append(chunk[i: key.start(1)] + '"' + key.group(1) + '"')
            i = key.end(1)
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# ---- checking the scores -------------------------------------------------------------------------------------
def _score_key(obj: dict) -> str | None:
    return next((key for key in obj if isinstance(key, str) and key.strip().lower() in SCORE_KEYS), None)


def _score_value(obj: dict):
    key = _score_key(obj)
    return obj[key] if key is not None else None


def _validate(value, count: int, max_score: float) -> tuple[tuple[float, ...] | None, str | None]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) != count:
        return None, f"expected {count} score(s), got {len(values)}: {value!r}"
    scores = []
    for item in values:
        number = _as_number(item)
        if number is None:
            return None, f"non-numeric score {item!r}"
        if not 0.0 <= number <= max_score:
            return None, f"score {number:g} out of range [0, {max_score:g}]"
        scores.append(number)
    return tuple(scores), None


def _as_number(item) -> float | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, str):
        try:
            item = float(item.strip())
        except ValueError:
            return None
    if isinstance(item, (int, float)) and math.isfinite(item):
        return float(item)
    return None


# ---- VIEScore combination ------------------------------------------------------------------------------------
def rescale_to_ten(scores: torch.Tensor | float, max_score: float):
    """Scores on 0..max_score onto 0..10 (EditScore's 0-25 is divided by 2.5)."""
    return scores / (max_score / 10.0)


def combine_sc_pq(sc_scores: torch.Tensor, pq_scores: torch.Tensor,
                  max_score: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched: sc_scores [N, A], pq_scores [N, B] on 0..max_score (NaN where unparsed) ->
    (sc [N], pq [N], overall [N] on 0-10, reward [N] on 0-1), float32; a NaN anywhere in a row gives NaN."""
    if sc_scores.dim() != 2 or pq_scores.dim() != 2 or sc_scores.shape[0] != pq_scores.shape[0]:
        raise ValueError(f"need sc [N, A] and pq [N, B], got {tuple(sc_scores.shape)} and {tuple(pq_scores.shape)}")
    sc = rescale_to_ten(_row_min(sc_scores.float()), max_score)                # [N]
    pq = rescale_to_ten(_row_min(pq_scores.float()), max_score)                # [N]
    overall = (sc * pq).sqrt()                                                  # [N], NaN propagates
    return sc, pq, overall, overall / 10.0


def _row_min(scores: torch.Tensor) -> torch.Tensor:
    """[N, A] -> [N]: the row minimum, NaN when the row has any NaN."""
    nan_rows = scores.isnan().any(dim=1)
    return torch.where(nan_rows, torch.full_like(nan_rows, math.nan, dtype=scores.dtype),
                       scores.nan_to_num(nan=math.inf).amin(dim=1))

