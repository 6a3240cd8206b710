"""The EditScore publisher's own judge templates, read at run time from their installed `editscore` package.

The EditScore LoRAs were trained on the exact text of `editscore/vie_prompts.py` (VectorSpaceLab/EditScore); the
text is not copied into this repository. The file is read and parsed (`ast`), never imported or executed, so the
package's heavy imports (its `__init__` pulls in transformers, peft, qwen-vl-utils, json-repair) never run: only
`pip install --no-deps editscore` is needed. Its four string variables are joined as the publisher's
`EditScore.__init__` joins them: SC = context, two-image rule, SC rule; PQ = context, PQ rule; each "10" of the
rules replaced by the scale's maximum, then "<instruction>" by the instruction. The chat around it is the
publisher's too (mllm_tools): Qwen2.5-VL gets the default "helpful assistant" system turn and labels the images
"<img1>: ", "<img2>: "; Qwen3-VL gets its processor's template (no system turn, unlabelled images). The images
come first, the text (instruction last) after them.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import importlib.util
import os

PACKAGE, MODULE = "editscore", "vie_prompts.py"
CONTEXT, TWO_IMAGE_RULE = "_context_no_delimit_reasoning_first", "_prompts_0shot_two_image_edit_rule"
SC_RULE, PQ_RULE = "_prompts_0shot_tie_rule_SC", "_prompts_0shot_rule_PQ"
NAMES = (CONTEXT, TWO_IMAGE_RULE, SC_RULE, PQ_RULE)
INSTRUCTION = "<instruction>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN2_5_HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
QWEN3_HEAD = "<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"
INSTALL_HINT = "pip install --no-deps editscore (only its vie_prompts.py is read)"


def module_path() -> str | None:
    """The installed package's vie_prompts.py, found without importing the package; None when not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)                    # top-level: locates, does not execute
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, MODULE)
        if os.path.isfile(path):
            return path
    return None


def version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class PublishedTemplates:
    """The four template strings of vie_prompts.py and where they came from."""
    texts: dict[str, str]
    source: str                                                   # "editscore package <version>"
    path: str

    @classmethod
    def load(cls) -> PublishedTemplates:
        path = module_path()
        if path is None:
            raise ModuleNotFoundError(f"templates='editscore' needs the publisher's package: {INSTALL_HINT}; or "
                                      f"pass templates='project' for the project's own prompts")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        texts = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, str):
                texts.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
        missing = [name for name in NAMES if name not in texts]
        if missing:
            raise ValueError(f"{path} has no string variable(s) {', '.join(missing)}: not the EditScore template "
                             f"module this reward reads (VectorSpaceLab/EditScore, editscore/vie_prompts.py); "
                             f"install that package or pass templates='project'")
        if INSTRUCTION not in texts[SC_RULE]:
            raise ValueError(f"{path}: {SC_RULE} has no {INSTRUCTION} placeholder; pass templates='project'")
        return cls({name: texts[name] for name in NAMES}, f"{PACKAGE} package {version()}", path)

    # ---- the texts, joined as the publisher joins them ----------------------------------------------------
    def sc_text(self, instruction: str, max_score: int) -> str:
        rule = self.texts[SC_RULE].replace("10", str(max_score))
        return "\n".join([self.texts[CONTEXT], self.texts[TWO_IMAGE_RULE], rule]).replace(INSTRUCTION, instruction)

    def pq_text(self, max_score: int) -> str:
        return "\n".join([self.texts[CONTEXT], self.texts[PQ_RULE].replace("10", str(max_score))])


def head(family: str) -> str:
    return QWEN3_HEAD if family == "qwen3_vl" else QWEN2_5_HEAD


def image_slot(index: int, family: str) -> str:
    """The index-th image (from 1) of a prompt, with its label where the publisher's chat has one."""
    return IMAGE if family == "qwen3_vl" else f"<img{index}>: {IMAGE}"
