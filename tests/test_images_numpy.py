"""Images as users hold them: every entry point that takes an image (policy.encode, reward.score / score_groups of
each judge and of the programmatic and combined rewards, rerank) accepts a uint8 NumPy array [H, W, 3] (what
np.asarray(pil_image) gives) beside PIL images and uint8 tensors [3, H, W], and gives exactly the same encodings,
rewards and judge texts for all three, strided views included; [H, W] grey and [H, W, 4] RGBA arrays are converted
as PIL converts those images; anything else is refused with a message naming the accepted forms."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.data import make_tasks
from editrl_engine.reward import CombinedReward, load_reward
from editrl_engine.reward.programmatic import ProgrammaticReward
from editrl_engine.serve import rerank
from editrl_engine.vlm.images import ACCEPTED_FORMS, ImageInputError, as_rgb_array, as_rgb_image, as_uint8_tensor

from .serve_fakes import tiny_judge, tiny_policy

pytestmark = pytest.mark.filterwarnings("ignore:Attention backends are an experimental feature")
TASKS = make_tasks(3, seed=5, size=32)
INSTRUCTIONS = [t.instruction for t in TASKS]
SOURCES = [t.source_image() for t in TASKS]                                   # uint8 [3, 32, 32]
EDITED = [TASKS[0].target_image(), TASKS[1].source_image(), torch.full((3, 32, 32), 200, dtype=torch.uint8)]


def strided(array: np.ndarray) -> np.ndarray:
    """The same pixels as a non-contiguous view with negative strides (a flip of a flipped copy)."""
    view = np.ascontiguousarray(array[::-1, :, ::-1])[::-1, :, ::-1]
    assert not view.flags.c_contiguous and np.array_equal(view, array)
    return view


def forms(tensor: torch.Tensor) -> dict[str, object]:
    """One picture, uint8 [3, H, W], in every accepted form."""
    array = tensor.permute(1, 2, 0).numpy().copy()                          # [H, W, 3], what np.asarray(pil) gives
    return {"tensor": tensor, "pil": Image.fromarray(array), "numpy": array, "numpy_strided": strided(array)}


FORM_NAMES = ("tensor", "pil", "numpy", "numpy_strided")


def in_form(images, name: str) -> list:
    return [forms(image)[name] for image in images]


def assert_same_batch(a, b):
    torch.testing.assert_close(a.reward, b.reward, rtol=0, atol=0, equal_nan=True)
    assert a.failures == b.failures and repr(a.details) == repr(b.details)


@contextlib.contextmanager
def pixels_seen(reward):
    """Yields a list that fills with the pixel values every vision-tower call of the reward's judge gets (stays
    empty for a reward without one). The tiny judges' short greedy answers hardly depend on the pixels; this does."""
    if isinstance(reward, CombinedReward):
        reward = reward.parts["mllm_logit"][0]
    vlm = getattr(reward, "vlm", None) or getattr(getattr(reward, "generate_fn", None), "vlm", None)
    seen: list[torch.Tensor] = []
    if vlm is None:
        yield seen
        return
    visual = next(module for name, module in vlm.model.named_modules() if name.split(".")[-1] == "visual")
    handle = visual.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def assert_same_pixels(seen: list[torch.Tensor], reference: list[torch.Tensor]):
    assert len(seen) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(seen, reference))


# ---- the converter -----------------------------------------------------------------------------------------------
def test_every_form_converts_to_the_same_pixels():
    tensor = SOURCES[0]
    for name, image in forms(tensor).items():
        assert torch.equal(as_uint8_tensor(image), tensor), name
        assert np.array_equal(as_rgb_array(image), tensor.permute(1, 2, 0).numpy()), name
        pil = as_rgb_image(image)
        assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), tensor.permute(1, 2, 0).numpy()), name


def test_converted_images_share_no_memory_with_the_input():
    array = forms(SOURCES[0])["numpy"]
    pil, pixels, tensor = as_rgb_image(array), as_rgb_array(array), as_uint8_tensor(array)
    expected = array.copy()
    array[:] = 0
    assert np.array_equal(np.asarray(pil), expected) and np.array_equal(pixels, expected)
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), expected)
    assert pixels.flags.writeable and pixels.flags.c_contiguous


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grey_and_rgba_arrays_convert_as_pil_images_of_those_modes(mode):
    pil = Image.fromarray(forms(SOURCES[1])["numpy"]).convert(mode)
    array = np.asarray(pil)                                                  # [H, W] or [H, W, 4]
    assert array.shape == ((32, 32) if mode == "L" else (32, 32, 4))
    assert np.array_equal(np.asarray(as_rgb_image(array)), np.asarray(pil.convert("RGB")))
    assert torch.equal(as_uint8_tensor(array), as_uint8_tensor(pil))


BAD = {
    "float array": (np.zeros((32, 32, 3), np.float32), r"float32 NumPy array .*\.astype\(np\.uint8\)"),
    "channels-first array": (np.zeros((3, 32, 32), np.uint8), r"shape \(3, 32, 32\).*transpose\(1, 2, 0\)"),
    "two-channel array": (np.zeros((32, 32, 2), np.uint8), r"shape \(32, 32, 2\).*channels-last"),
    "batched array": (np.zeros((1, 32, 32, 3), np.uint8), r"shape \(1, 32, 32, 3\)"),
    "empty array": (np.zeros((0, 32, 3), np.uint8), "empty"),
    "bool array": (np.zeros((32, 32, 3), bool), "bool NumPy array"),
    "float tensor": (torch.rand(3, 32, 32), r"float32 tensor .*torch\.uint8"),
    "channels-last tensor": (torch.zeros(32, 32, 3, dtype=torch.uint8), r"permute\(2, 0, 1\)"),
    "list": ([[0, 0, 0]], "got list"),
    "path string": ("source.png", "got str"),
}
ACCEPTED = r"a PIL image, a uint8 tensor \[3, H, W\] or a uint8 NumPy array \[H, W, 3\]"


@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
def test_bad_images_name_the_accepted_forms(bad):
    image, detail = BAD[bad]
    for convert in (as_rgb_image, as_rgb_array, as_uint8_tensor):
        with pytest.raises(ImageInputError, match=ACCEPTED + ".*" + detail) as error:
            convert(image)
        assert isinstance(error.value, TypeError) and isinstance(error.value, ValueError)  # callers catch either
    assert ACCEPTED_FORMS == ("a PIL image", "a uint8 tensor [3, H, W]", "a uint8 NumPy array [H, W, 3]")


# ---- policies ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["flux-kontext", "qwen-image-edit"])
def policy(request):
    if request.param == "flux-kontext":
        return tiny_policy()
    from editrl_engine.policy import load_policy
    return load_policy("qwen-image-edit", preset="tiny")


def assert_same_condition(a, b):
    assert a.tensors.keys() == b.tensors.keys() and a.latent_shape == b.latent_shape and a.image_size == b.image_size
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    assert repr(a.extras) == repr(b.extras)


def test_policy_encode_gives_the_same_condition_for_every_form(policy):
    reference = policy.encode(in_form(SOURCES[:2], "pil"), INSTRUCTIONS[:2])
    for name in FORM_NAMES[2:] + ("tensor",):
        assert_same_condition(policy.encode(in_form(SOURCES[:2], name), INSTRUCTIONS[:2]), reference)
    mixed = [forms(SOURCES[0])["numpy"], forms(SOURCES[1])["tensor"]]                  # forms mixed in one call
    assert_same_condition(policy.encode(mixed, INSTRUCTIONS[:2]), reference)


def test_policy_encode_takes_grey_and_rgba_arrays_as_pil_does(policy):
    pil = Image.fromarray(forms(SOURCES[2])["numpy"])
    for mode in ("L", "RGBA"):
        converted = pil.convert(mode)
        assert_same_condition(policy.encode([np.asarray(converted)], INSTRUCTIONS[2:]),
                              policy.encode([converted], INSTRUCTIONS[2:]))


@pytest.mark.parametrize("bad", ["float array", "channels-first array"])
def test_policy_encode_refuses_bad_arrays(policy, bad):
    image, detail = BAD[bad]
    with pytest.raises(TypeError, match=ACCEPTED + ".*" + detail):
        policy.encode([image], ["make it red"])


# ---- rewards -----------------------------------------------------------------------------------------------------
JUDGES = ("mllm_logit", "editscore", "verifier", "programmatic", "combined")
PRINCIPLES = [["follow: " + instruction, "keep: the rest"] for instruction in INSTRUCTIONS]   # the verdict call runs


def options(kind: str, n: int) -> dict:
    """Given principles for the verifier: generated ones would not parse, and the edited images never be judged."""
    return {"principles": PRINCIPLES[:n]} if kind == "verifier" else {}


@pytest.fixture(scope="module")
def judges():
    """The tiny judges (random weights: editscore's and the verifier's answers are gibberish, so their rewards are
    NaN, but their generated texts depend on every pixel and are compared too)."""
    programmatic = ProgrammaticReward(TASKS)
    mllm = tiny_judge()
    return {"mllm_logit": mllm,
            "editscore": load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=4, batch_size=4),
            "verifier": load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 4}, batch_size=4),
            "programmatic": programmatic,
            "combined": CombinedReward({"mllm_logit": (mllm, 0.5), "programmatic": (programmatic, 0.5)})}


@pytest.mark.parametrize("kind", JUDGES)
def test_score_is_the_same_for_every_form(judges, kind):
    reward = judges[kind]
    with pixels_seen(reward) as reference_pixels:
        reference = reward.score(in_form(SOURCES, "pil"), INSTRUCTIONS, in_form(EDITED, "pil"), **options(kind, 3))
    assert len(reference) == 3 and bool(reference_pixels) == (kind != "programmatic")
    if kind in ("mllm_logit", "programmatic", "combined"):
        assert torch.isfinite(reference.reward).all()
    mixed_sources = [forms(SOURCES[0])["numpy"], forms(SOURCES[1])["pil"], forms(SOURCES[2])["tensor"]]
    mixed_edited = [forms(EDITED[0])["tensor"], forms(EDITED[1])["numpy_strided"], forms(EDITED[2])["pil"]]
    inputs = {name: (in_form(SOURCES, name), in_form(EDITED, name)) for name in ("tensor", "numpy", "numpy_strided")}
    for name, (sources, edited) in {**inputs, "mixed": (mixed_sources, mixed_edited)}.items():
        with pixels_seen(reward) as pixels:
            assert_same_batch(reward.score(sources, INSTRUCTIONS, edited, **options(kind, 3)), reference)
        assert_same_pixels(pixels, reference_pixels)


@pytest.mark.parametrize("kind", ["mllm_logit", "editscore", "verifier"])
def test_score_groups_is_the_same_for_every_form(judges, kind):
    reward = judges[kind]
    groups = [EDITED, EDITED[:1]]                                           # ragged: 3 and 1 candidates
    with pixels_seen(reward) as reference_pixels:
        reference = reward.score_groups(in_form(SOURCES[:2], "pil"), INSTRUCTIONS[:2],
                                        [in_form(group, "pil") for group in groups], **options(kind, 2))
    assert len(reference) == 4 and reference_pixels
    for name in ("tensor", "numpy", "numpy_strided"):
        with pixels_seen(reward) as pixels:
            batch = reward.score_groups(in_form(SOURCES[:2], name), INSTRUCTIONS[:2],
                                        [in_form(group, name) for group in groups], **options(kind, 2))
        assert_same_batch(batch, reference)
        assert_same_pixels(pixels, reference_pixels)


@pytest.mark.parametrize("kind", ["mllm_logit", "programmatic", "combined"])
@pytest.mark.parametrize("bad", ["float array", "channels-first array", "list"])
def test_rewards_refuse_bad_images_naming_the_accepted_forms(judges, kind, bad):
    image, detail = BAD[bad]
    with pytest.raises(ValueError, match=ACCEPTED + ".*" + detail):
        judges[kind].score([SOURCES[0]], INSTRUCTIONS[:1], [image])
    with pytest.raises(TypeError, match=ACCEPTED + ".*" + detail):
        judges[kind].score([image], INSTRUCTIONS[:1], [EDITED[0]])


def test_programmatic_errors_name_the_sample():
    with pytest.raises(ValueError, match=r"edited\[1\] must be " + ACCEPTED):
        ProgrammaticReward(TASKS).score(SOURCES[:2], INSTRUCTIONS[:2], [EDITED[0], BAD["float array"][0]])


# ---- rerank ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mllm_logit", "programmatic"])
def test_rerank_with_a_numpy_source_equals_pil_and_tensor(judges, kind):
    reference = rerank(tiny_policy(), judges[kind], forms(SOURCES[0])["pil"], INSTRUCTIONS[0], n=3, seed=4,
                       num_steps=2)
    for name in ("numpy", "numpy_strided", "tensor"):
        result = rerank(tiny_policy(), judges[kind], forms(SOURCES[0])[name], INSTRUCTIONS[0], n=3, seed=4,
                        num_steps=2)
        torch.testing.assert_close(result.rewards, reference.rewards, rtol=0, atol=0, equal_nan=True)
        assert result.best_index == reference.best_index
        assert all(torch.equal(a.image, b.image) for a, b in zip(result.candidates, reference.candidates))
        assert repr([c.details for c in result.candidates]) == repr([c.details for c in reference.candidates])


@pytest.mark.parametrize("bad", ["float array", "channels-first array", "list"])
def test_rerank_refuses_bad_sources_naming_the_accepted_forms(judges, bad):
    image, detail = BAD[bad]
    accepted = (r"source must be a PIL image, a uint8 tensor \[3, H, W\], a uint8 NumPy array \[H, W, 3\] or an image "
                r"path")
    with pytest.raises(ValueError, match=accepted + ".*" + detail):
        rerank(tiny_policy(), judges["programmatic"], image, INSTRUCTIONS[0], n=2, num_steps=2)
