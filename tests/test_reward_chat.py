"""reward/chat.py: judge prompts to OpenAI chat messages and back, checked over every prompt the judges build."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from editrl_engine.errors import InputError
from editrl_engine.reward import chat, editscore_prompts, mllm_prompts
from editrl_engine.reward import verifier_prompts as vp


def judge_prompts(tmp_path) -> dict[str, str]:
    template = tmp_path / "judge.txt"
    template.write_text("Edit: {instruction}\nNeed: {requirement}\nScore it {0-5}.\n")
    prompts = {}
    for layout in ("interleaved", "uniworld", str(template)):
        built = mllm_prompts.load_layout(layout)
        prompts[f"mllm:{layout}"] = built.prompt("make the cat blue", "keep the dog")
        prompts[f"mllm:{layout}:no requirement"] = built.prompt("make the cat blue", None)
    project = editscore_prompts.ProjectPrompts()
    prompts["editscore:sc"] = project.sc_prefix("add a hat") + project.sc_suffix("add a hat", 10)
    prompts["editscore:pq"] = project.pq_prompt(10, False)
    prompts["editscore:pq both"] = project.pq_prompt(10, True)
    principles = vp.as_principles(["follow: the cat is blue", "keep: the dog"])
    prompts["verifier:principles"] = vp.principles_prompt("make the cat blue")
    prompts["verifier:verdict"] = vp.verdict_prompt("make the cat blue", principles)
    return prompts


def images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(count)
    return [Image.fromarray(rng.integers(0, 256, (6 + i, 9, 3), dtype=np.uint8)) for i in range(count)]


def test_every_judge_prompt_round_trips_to_the_same_text_and_pixels(tmp_path):
    for name, prompt in judge_prompts(tmp_path).items():
        given = images(prompt.count(chat.IMAGE))
        messages = chat.to_messages(prompt, given)
        assert all(part["type"] in ("text", "image_url") for m in messages for part in m["content"]), name
        text, back = chat.from_messages(messages)
        assert text == prompt, name
        assert [np.asarray(b).tolist() for b in back] == [np.asarray(g).tolist() for g in given], name


def test_messages_have_the_roles_and_order_of_the_prompt():
    prompt = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nA " + chat.IMAGE + " B" + chat.IMAGE + \
        "<|im_end|>\n<|im_start|>assistant\n"
    messages = chat.to_messages(prompt, images(2))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": "S"}]
    assert [p["type"] for p in messages[1]["content"]] == ["text", "image_url", "text", "image_url"]
    assert messages[1]["content"][0]["text"] == "A " and messages[1]["content"][2]["text"] == " B"
    assert messages[1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_without_a_system_message_the_default_one_is_rendered_as_qwen2_5_vl_does():
    messages = [{"role": "user", "content": "hi"}]
    assert chat.from_messages(messages)[0] == mllm_prompts.DEFAULT_SYSTEM + \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert chat.from_messages(messages, default_system=None)[0] == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_jpeg_data_urls_are_read():
    buffer = io.BytesIO()
    images(1)[0].save(buffer, format="JPEG", quality=90)
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    _, [image] = chat.from_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    assert image.size == (9, 6) and image.mode == "RGB"


@pytest.mark.parametrize("messages, words", [
    ([], "non-empty list"),
    ([{"role": "tool", "content": "x"}], "role must be one of"),
    ([{"role": "user", "content": 3}], "content must be a string or a list"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "messages[0].content[0] must be"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
     "are not fetched"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
     "bad base64"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,aGVsbG8="}]}],
     "no readable PNG or JPEG"),
])
def test_malformed_messages_are_refused_naming_the_part(messages, words):
    with pytest.raises(InputError, match=re.escape(words)):
        chat.from_messages(messages)


def test_images_over_the_pixel_limit_are_refused():
    messages = chat.to_messages("<|im_start|>user\n" + chat.IMAGE + "<|im_end|>\n<|im_start|>assistant\n", images(1))
    with pytest.raises(InputError, match="over the limit"):
        chat.from_messages(messages, max_pixels=10)


def test_prompts_that_are_not_chat_markup_or_miscount_images_are_refused():
    with pytest.raises(ValueError, match="assistant header"):
        chat.to_messages("no markup", [])
    with pytest.raises(ValueError, match=re.escape("whole <|im_start|>")):
        chat.to_messages("stray <|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n", [])
    with pytest.raises(ValueError, match="1 image slots but 0 images"):
        chat.to_messages("<|im_start|>user\n" + chat.IMAGE + "<|im_end|>\n<|im_start|>assistant\n", [])
