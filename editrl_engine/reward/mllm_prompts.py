"""The prompt layouts of the mllm_logit reward, and the JPEG round trip of its images.

Layouts (the `layout` option; every one shows the source image before the edited one):
  interleaved  the project's default: our system prompt, the source image, the instruction, a requirement line only
               when there is a requirement, then the edited image and the rating request.
  uniworld     UniWorld-V2's layout, in the project's words: Qwen2.5-VL's default system prompt (its chat template's,
               what UniWorld-V2 gets by sending none), both images first, then the scoring text with the requirement
               line always present (empty when a sample has none).
  a file path  a user template: the uniworld layout with the file's text as the scoring text. The text must hold
               the placeholders {instruction} and {requirement} (filled in one pass, other braces are left alone; one
               final newline is dropped). This scores with another wording, e.g. a peer's exact prompt, loaded at
               run time rather than copied here.

Several source images (a sample whose source is a list, e.g. for Qwen-Image-Edit-Plus): each is shown, labelled
"Original image k:", where the one source image is; the images-first layouts then label the edited image too and
uniworld's first sentence counts the originals. A one-image prompt is unchanged.

Each layout splits its prompt into a prefix shared by a group's candidates (score_groups prefills it once) and a
suffix per candidate. interleaved: prefix = system, source, instruction and requirement; suffix = edited image and
request. Images first: prefix = system and the source image (still shared); suffix = edited image and all the text.
Both parts meet at <|vision_end|>, a special token, so they tokenise like the whole prompt.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
ANSWER = "<|im_end|>\n<|im_start|>assistant\n"
RATING_REQUEST = ("Rate the edit from 0 to 5. 0 means the wrong object was changed or the requirement is not met; 5 "
                  "means the right object was changed, the requirement is met and the image quality is high. Answer "
                  "with the number only.")
PREFIX_TEMPLATE = (                                      # slots: instruction, requirement line
    "<|im_start|>system\nYou are a careful judge of image edits.<|im_end|>\n<|im_start|>user\n"
    f"This is the original image: {IMAGE}\nThe editing instruction is: {{}}\n{{}}"
)
SUFFIX = f"This is the edited image: {IMAGE}\n{RATING_REQUEST}{ANSWER}"   # interleaved: the same for every candidate
PROMPT_TEMPLATE = PREFIX_TEMPLATE + SUFFIX
REQUIREMENT_LINE = "Task requirement: {}\n"

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"   # Qwen2.5-VL's chat template default
UNIWORLD_TEXT = ("The first image is the original image and the second is the edited image.\n"
                 "The editing instruction is: {instruction}\nTask requirement: {requirement}\n" + RATING_REQUEST)
PLACEHOLDERS = ("instruction", "requirement")
LAYOUTS = ("interleaved", "uniworld")                    # or the path of a template file


MULTI_PREFIX_TEMPLATE = (                                # slots: original-image lines, instruction, requirement line
    "<|im_start|>system\nYou are a careful judge of image edits.<|im_end|>\n<|im_start|>user\n"
    "These are the original images, in order:\n{}The editing instruction is: {}\n{}"
)
UNIWORLD_FIRST_LINE = "The first image is the original image and the second is the edited image.\n"
UNIWORLD_MULTI_LINE = "The first {} images are the original images, in order, and the last is the edited image.\n"


def original_lines(count: int) -> str:
    """One labelled line per source image: "Original image k: <image>\n"."""
    return "".join(f"Original image {k}: {IMAGE}\n" for k in range(1, count + 1))


def build_prefix(instruction: str, requirement: str | None = None, sources: int = 1) -> str:
    """interleaved: the part of the prompt a group's candidates share (system, sources, instruction, requirement)."""
    line = REQUIREMENT_LINE.format(requirement) if requirement else ""
    if sources == 1:
        return PREFIX_TEMPLATE.format(instruction, line)
    return MULTI_PREFIX_TEMPLATE.format(original_lines(sources), instruction, line)


def build_prompt(instruction: str, requirement: str | None = None, sources: int = 1) -> str:
    return build_prefix(instruction, requirement, sources) + SUFFIX


class Interleaved:
    name = "interleaved"

    def prefix(self, instruction: str, requirement: str | None, sources: int = 1) -> str:
        return build_prefix(instruction, requirement, sources)

    def suffix(self, instruction: str, requirement: str | None, sources: int = 1) -> str:
        return SUFFIX

    def prompt(self, instruction: str, requirement: str | None, sources: int = 1) -> str:
        return self.prefix(instruction, requirement, sources) + self.suffix(instruction, requirement, sources)


class ImagesFirst(Interleaved):
    """The default system prompt, the source and the edited image, then `text` with its placeholders filled in
    (several sources: labelled original images, the labelled edited image, then `multi_text`)."""

    def __init__(self, name: str, text: str, multi_text: str | None = None):
        self.name, self.text, self.multi_text = name, text, text if multi_text is None else multi_text

    def prefix(self, instruction: str, requirement: str | None, sources: int = 1) -> str:
        if sources == 1:
            return f"{DEFAULT_SYSTEM}<|im_start|>user\n{IMAGE}"
        return f"{DEFAULT_SYSTEM}<|im_start|>user\n" + original_lines(sources).removesuffix("\n")

    def suffix(self, instruction: str, requirement: str | None, sources: int = 1) -> str:
        values = {"instruction": instruction, "requirement": requirement or ""}      # the line stays, empty
        fill = lambda text: re.sub(r"\{(instruction|requirement)\}", lambda m: values[m.group(1)], text)
        if sources == 1:
            return IMAGE + fill(self.text) + ANSWER
        return f"\nEdited image: {IMAGE}\n" + fill(self.multi_text.replace("{sources}", str(sources))) + ANSWER


def load_layout(layout: str) -> Interleaved:
    """A layout by name (LAYOUTS), or a user template from a text file."""
    if layout == "interleaved":
        return Interleaved()
    if layout == "uniworld":
        multi = UNIWORLD_TEXT.replace(UNIWORLD_FIRST_LINE, UNIWORLD_MULTI_LINE.format("{sources}"))
        return ImagesFirst("uniworld", UNIWORLD_TEXT, multi)
    path = Path(layout)
    if not path.is_file():
        raise ValueError(f"mllm_logit layout {layout!r} is neither one of {', '.join(LAYOUTS)} nor an existing "
                         f"template file; give layout='uniworld' or the path of a text file with {{instruction}} and "
                         f"{{requirement}} placeholders")
    text = path.read_text().removesuffix("\n")
    for name in PLACEHOLDERS:
        if "{" + name + "}" not in text:
            raise ValueError(f"mllm_logit template {path} has no {{{name}}} placeholder; put {{instruction}} where "
                             f"the editing instruction goes and {{requirement}} where the task requirement goes")
    if "<|image_pad|>" in text:
        raise ValueError(f"mllm_logit template {path} holds <|image_pad|>; the images come before the text, leave "
                         f"them out of the template")
    return ImagesFirst(f"template:{path}", text)


def check_jpeg_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise ValueError(f"mllm_logit jpeg_quality must be 0 (off) or a JPEG quality 1..100 (UniWorld-V2: 75, PIL's "
                         f"default), got {quality!r}")
    return quality


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    """The RGB image saved as JPEG at `quality` (PIL's other defaults) and decoded again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
