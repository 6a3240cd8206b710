"""Judge prompts as OpenAI chat messages, and back: the wire form of every judge served over HTTP.

The in-process judges build raw prompts in Qwen's chat markup: blocks `<|im_start|>ROLE\\n...<|im_end|>\\n`, each
image as IMAGE (`<|vision_start|><|image_pad|><|vision_end|>`), and the assistant header `<|im_start|>assistant\\n`
at the end; the images come as a list, in order. A server (vLLM, SGLang, `editrl serve`) renders chat messages
with the model's chat template, which for Qwen2.5-VL and Qwen3-VL is exactly this markup: a text part is its text,
an image part is IMAGE. So

    messages = to_messages(prompt, images)          # the client: text and PNG data-URL image parts, in order
    prompt, images = from_messages(messages)        # a server: the same raw prompt and the same pixels

and a remote judge sees the tokens and pixels the in-process judge sees. Images travel as lossless PNG, after the
judge's own preprocessing (e.g. its JPEG round trip), so nothing about them changes on the way.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from ..errors import InputError
from ..vlm.images import as_rgb_image

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
START, END = "<|im_start|>", "<|im_end|>\n"
GENERATION_HEADER = f"{START}assistant\n"
ROLES = ("system", "user", "assistant")
QWEN2_5_VL_SYSTEM = "You are a helpful assistant."           # what Qwen2.5-VL's chat template adds when none is given
IMAGE_FORMATS = ("PNG", "JPEG")
_BLOCK = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n", re.DOTALL)


def image_data_url(image) -> str:
    """A lossless PNG data URL of an image (PIL, uint8 tensor [3, H, W] or uint8 array [H, W, 3])."""
    buffer = io.BytesIO()
    as_rgb_image(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_messages(prompt: str, images: Sequence) -> list[dict[str, Any]]:
    """OpenAI chat messages for a raw judge prompt (Qwen chat markup ending with the assistant header) and its
    images in order: [{"role": ..., "content": [{"type": "text", ...}, {"type": "image_url", ...}, ...]}, ...]."""
    if not prompt.endswith(GENERATION_HEADER):
        raise ValueError(f"a judge prompt must end with the assistant header {GENERATION_HEADER!r}")
    body = prompt[:-len(GENERATION_HEADER)]
    blocks = list(_BLOCK.finditer(body))
    if not blocks or "".join(b.group(0) for b in blocks) != body:
        raise ValueError("a judge prompt must be whole <|im_start|>ROLE ... <|im_end|> blocks followed by the "
                         "assistant header")
    if body.count(IMAGE) != len(images):
        raise ValueError(f"the prompt has {body.count(IMAGE)} image slots but {len(images)} images were given")
    remaining = iter(images)
    messages = []
    for block in blocks:
        parts: list[dict[str, Any]] = []
        for i, text in enumerate(block.group(2).split(IMAGE)):
            if i:
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(next(remaining))}})
            if text:
                parts.append({"type": "text", "text": text})
        messages.append({"role": block.group(1), "content": parts})
    return messages


def decode_data_url(url: object, where: str, max_pixels: int | None = None) -> Image.Image:
    """An RGB image from a base64 PNG or JPEG data URL; InputError naming `where` otherwise."""
    if not isinstance(url, str) or not url.startswith("data:"):
        shown = url[:40] + "..." if isinstance(url, str) and len(url) > 40 else url
        raise InputError(f"{where}: images must be base64 data URLs (data:image/png;base64,...); got {shown!r}. "
                         "Remote image URLs are not fetched")
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        raise InputError(f"{where}: the data URL is not base64-encoded ({header!r}); send data:image/png;base64,...")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"{where}: bad base64 in the image data URL ({error})") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.format not in IMAGE_FORMATS:
                raise InputError(f"{where}: the image is {image.format}; send PNG or JPEG")
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise InputError(f"{where}: the image has {image.width}x{image.height} pixels, over the limit of "
                                 f"{max_pixels}; send a smaller image")
            return image.convert("RGB")
    except InputError:
        raise
    except Exception as error:  # PIL raises several types for bytes that are not an image
        raise InputError(f"{where}: the data URL holds no readable PNG or JPEG image ({error})") from None


def _parts(content: object, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InputError(f"{where}.content must be a string or a list of content parts, got "
                         f"{type(content).__name__}")
    return content


def from_messages(messages: object, *, default_system: str | None = QWEN2_5_VL_SYSTEM,
                  max_pixels: int | None = None) -> tuple[str, list[Image.Image]]:
    """The raw prompt a Qwen chat template renders from OpenAI chat messages (with the generation prompt), and
    their images in order. default_system: the system block added when the messages have none (Qwen2.5-VL's
    template adds one; None for templates that add none, such as Qwen3-VL's). InputError names a malformed part."""
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list of chat messages")
    blocks, images = [], []
    for m, message in enumerate(messages):
        where = f"messages[{m}]"
        if not isinstance(message, dict):
            raise InputError(f"{where} must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        text = []
        for p, part in enumerate(_parts(message.get("content"), where)):
            place = f"{where}.content[{p}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                text.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                images.append(decode_data_url(url, place, max_pixels))
                text.append(IMAGE)
            else:
                raise InputError(f"{place} must be {{'type': 'text', 'text': ...}} or {{'type': 'image_url', "
                                 f"'image_url': {{'url': 'data:image/png;base64,...'}}}}, got {str(part)[:80]!r}")
        blocks.append(f"{START}{role}\n{''.join(text)}{END}")
    if messages[0].get("role") != "system" and default_system is not None:
        blocks.insert(0, f"{START}system\n{default_system}{END}")
    return "".join(blocks) + GENERATION_HEADER, images
