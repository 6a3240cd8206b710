"""The mllm_logit prompt layouts and JPEG round trip (tiny Qwen2.5-VL): the uniworld layout equals a per-sample
eager forward on the conversation UniWorld-V2 sends (no system message, so the chat template's default one; source
and edited image first; the requirement line always there), user template files, jpeg_quality against images
round-tripped through PIL here, the config keys, and the bf16-vs-float64 softmax gap of the reward."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.engine import ConfigError, load_config
from editrl_engine.reward import load_reward, mllm_logit, mllm_prompts
from editrl_engine.vlm import qwen2_5_vl

INSTRUCTIONS = ["make it red", "turn the big blue circle into a small yellow square", "add a cat"]
REQUIREMENTS = [None, "keep the background", ""]
SIZES = [(64, 64), (80, 48), (40, 72)]


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


SOURCES = [image(i, s) for i, s in enumerate(SIZES)]
EDITED = [image(10 + i, s) for i, s in enumerate(SIZES)]


def chat(content: list) -> str:
    """Qwen2.5-VL's chat template on one user message without a system message (what UniWorld-V2 sends): the
    default system prompt, each image as its vision tokens, the text as is, then the generation prompt."""
    parts = ["<|vision_start|><|image_pad|><|vision_end|>" if c == "<image>" else c for c in content]
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + "".join(parts)
            + "<|im_end|>\n<|im_start|>assistant\n")


def uniworld_text(instruction: str, requirement: str | None) -> str:
    return mllm_prompts.UNIWORLD_TEXT.format(instruction=instruction, requirement=requirement or "")


def reference_rewards(sources, edited, prompts) -> list[float]:
    """Per sample: a fresh tiny model with eager attention, full logits at the last position, float64 softmax over
    the digits, sum_k k p_k / 5."""
    vlm = qwen2_5_vl.load(preset="tiny", templates=(mllm_logit.PROMPT_TEMPLATE, mllm_logit.REQUIREMENT_LINE))
    vlm.model.set_attn_implementation("eager")
    digits = [vlm.tokenizer.convert_tokens_to_ids(str(k)) for k in range(6)]
    size = dict(vlm.processor.image_processor.size)
    out = []
    for source, edit, prompt in zip(sources, edited, prompts):
        inputs = vlm.processor(text=[prompt], images=[source, edit], size=size, return_tensors="pt")
        with torch.no_grad():
            logits = vlm.model(**inputs).logits[0, -1].double()
        p = torch.softmax(logits[digits], dim=0)
        out.append(float((p * torch.arange(6, dtype=torch.float64)).sum() / 5))
    return out


@pytest.fixture(scope="module")
def uniworld():
    return load_reward("mllm_logit", preset="tiny", batch_size=2, layout="uniworld")


def test_the_uniworld_prompt_is_images_first_with_the_requirement_line_always():
    layout = mllm_prompts.load_layout("uniworld")
    for instruction, requirement in zip(INSTRUCTIONS, REQUIREMENTS):
        expected = chat(["<image>", "<image>", uniworld_text(instruction, requirement)])
        assert layout.prompt(instruction, requirement) == expected
        assert "Task requirement: \n" in layout.prompt(instruction, None)
        assert expected.index(instruction) > expected.rindex("<|vision_end|>")       # both images before the text


def test_uniworld_scoring_equals_per_sample_forwards_on_the_reference_conversation(uniworld):
    batch = uniworld.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS)
    prompts = [chat(["<image>", "<image>", uniworld_text(i, r)]) for i, r in zip(INSTRUCTIONS, REQUIREMENTS)]
    torch.testing.assert_close(batch.reward, torch.tensor(reference_rewards(SOURCES, EDITED, prompts)),
                               rtol=1e-5, atol=1e-6)
    assert uniworld.metadata()["layout"] == "uniworld" and uniworld.metadata()["jpeg_quality"] == 0


def test_a_template_file_fills_its_placeholders(tmp_path, uniworld):
    file = tmp_path / "judge.txt"
    file.write_text(mllm_prompts.UNIWORLD_TEXT + "\n")                     # one final newline is dropped
    templated = load_reward("mllm_logit", preset="tiny", batch_size=2, layout=str(file))
    assert templated.metadata()["layout"] == f"template:{file}"
    torch.testing.assert_close(templated.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS).reward,
                               uniworld.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS).reward,
                               rtol=0, atol=0)
    file.write_text("Edit {instruction}; keep {requirement}; a literal {brace} stays. Score 0-5.")
    layout = mllm_prompts.load_layout(str(file))
    assert layout.suffix("make it {requirement}", None) == (
        "<|vision_start|><|image_pad|><|vision_end|>Edit make it {requirement}; keep ; a literal {brace} stays. "
        "Score 0-5.<|im_end|>\n<|im_start|>assistant\n")                    # one pass: the instruction stays as is


@pytest.mark.parametrize("text, missing", [("Rate {instruction} 0-5", "{requirement}"),
                                           ("Rate it ({requirement}) 0-5", "{instruction}")])
def test_template_errors_name_the_missing_placeholder(tmp_path, text, missing):
    file = tmp_path / "judge.txt"
    file.write_text(text)
    with pytest.raises(ValueError, match=f"has no \\{missing}"):
        load_reward("mllm_logit", preset="tiny", layout=str(file))


def test_unknown_layouts_and_qualities_are_refused(tmp_path):
    with pytest.raises(ValueError, match="neither one of interleaved, uniworld nor an existing template file"):
        load_reward("mllm_logit", preset="tiny", layout=str(tmp_path / "absent.txt"))
    with pytest.raises(ValueError, match="jpeg_quality must be 0 \\(off\\) or a JPEG quality 1..100"):
        load_reward("mllm_logit", preset="tiny", jpeg_quality=101)


def jpeg(picture: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.mark.parametrize("layout", ["interleaved", "uniworld"])
def test_jpeg_quality_scores_the_round_tripped_images(layout):
    plain = load_reward("mllm_logit", preset="tiny", batch_size=2, layout=layout)
    lossy = load_reward("mllm_logit", preset="tiny", batch_size=2, layout=layout, jpeg_quality=75)
    tensors = [torch.from_numpy(np.array(e)).permute(2, 0, 1) for e in EDITED]             # uint8 [3, H, W]
    got = lossy.score(SOURCES, INSTRUCTIONS, tensors, requirements=REQUIREMENTS).reward
    expected = plain.score([jpeg(s, 75) for s in SOURCES], INSTRUCTIONS, [jpeg(e, 75) for e in EDITED],
                           requirements=REQUIREMENTS).reward
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.equal(got, plain.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS).reward)
    groups = lossy.score_groups(SOURCES[:2], INSTRUCTIONS[:2], [EDITED[:2], EDITED[2:]], requirements=REQUIREMENTS[:2])
    flat = plain.score([jpeg(SOURCES[g], 75) for g in (0, 0, 1)], [INSTRUCTIONS[g] for g in (0, 0, 1)],
                       [jpeg(e, 75) for e in EDITED], requirements=[REQUIREMENTS[g] for g in (0, 0, 1)])
    torch.testing.assert_close(groups.reward, flat.reward, rtol=1e-5, atol=0)
    assert lossy.metadata()["jpeg_quality"] == 75


def test_the_reproduction_config_asks_for_the_uniworld_prompt_and_jpeg():
    reward = load_config("qwen-image-edit-nft-mllm").reward
    assert reward.layout == "uniworld" and reward.jpeg_quality == 75
    assert load_config(None).reward.layout == "interleaved" and load_config(None).reward.jpeg_quality == 0
    with pytest.raises(ConfigError, match="reward.jpeg_quality must be 0"):
        load_config(None, ["reward.jpeg_quality=-1"])


def test_the_trainer_hands_layout_and_jpeg_quality_to_the_reward():
    from editrl_engine.engine.trainer import reward_from_section
    config = load_config(None, ["reward.kind='mllm_logit'", "reward.preset='tiny'", "reward.layout='uniworld'",
                                "reward.jpeg_quality=75"])
    metadata = reward_from_section(config.reward, torch.device("cpu")).metadata()
    assert metadata["layout"] == "uniworld" and metadata["jpeg_quality"] == 75


def bf16_reward(logits: torch.Tensor) -> torch.Tensor:
    """UniWorld-V2's arithmetic: bf16 logits, softmax in bf16, sum(p * k) in bf16, / 5."""
    p = torch.softmax(logits.bfloat16(), dim=-1)
    return (p * torch.arange(6)).sum(dim=-1).double() / 5


def test_bf16_softmax_stays_within_6e_3_of_float64_on_the_tiny_judge(uniworld):
    """The project softmaxes in float64. On the tiny judge (near-uniform digit logits) over random inputs, bf16
    arithmetic moves the reward by ~2.5e-3 at most (the bf16 rounding of sum(p * k) dominates). Logits spread like
    a real judge's can move it further: up to ~8e-3 on the same bf16 logits over 1e5 random rows."""
    rng = np.random.RandomState(7)
    n = 16
    sources = [image(100 + i, tuple(rng.randint(32, 97, 2))) for i in range(n)]
    edited = [image(200 + i, tuple(rng.randint(32, 97, 2))) for i in range(n)]
    words = "make turn add remove paint red blue cat tree sky small the background keep".split()
    instructions = [" ".join(rng.choice(words, rng.randint(2, 9))) for _ in range(n)]
    requirements = [None if i % 2 else " ".join(rng.choice(words, 4)) for i in range(n)]
    logits = torch.cat([uniworld.digit_logits(uniworld.inputs(sources[i:i + 4], instructions[i:i + 4],
                                                              edited[i:i + 4], requirements[i:i + 4]))
                        for i in range(0, n, 4)]).double()                                   # [n, 6]
    exact = torch.softmax(logits, dim=-1) @ torch.arange(6, dtype=torch.float64) / 5
    torch.testing.assert_close(uniworld.score(sources, instructions, edited, requirements=requirements).reward,
                               exact.float(), rtol=1e-5, atol=1e-6)
    gap = (bf16_reward(logits) - exact).abs().max().item()
    assert 0 < gap <= 6e-3
