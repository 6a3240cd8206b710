"""A stand-in for the publisher's `editscore` package: a folder `editscore` whose vie_prompts.py has the real
module's shape (its four string variables, "10" for the scale, "<instruction>" in the SC rule) and made-up text,
and whose __init__ raises (the reward must read vie_prompts.py without importing the package)."""
from __future__ import annotations

import sys

TEXTS = {
    "_context_no_delimit_reasoning_first": "CTX: you judge edited pictures. Reason briefly.",
    "_prompts_0shot_two_image_edit_rule": "TWO: picture one is the input, picture two the output; they may match.",
    "_prompts_0shot_tie_rule_SC": "\nSC: two marks 0 to 10 each, as [a, b].\n\nInstruction was: <instruction>\n",
    "_prompts_0shot_rule_PQ": "PQ: two marks 0 to 10 each for looks, as [a, b].\n",
}
VERSION = "9.9"


def install(tmp_path, monkeypatch, texts: dict | None = None, version: str | None = VERSION) -> None:
    """Put the stand-in package (and its dist-info when `version`) first on sys.path."""
    package = tmp_path / "editscore"
    package.mkdir()
    (package / "__init__.py").write_text('raise ImportError("the package __init__ must not run")\n')
    body = "".join(f"{name} = {text!r}\n" for name, text in (TEXTS if texts is None else texts).items())
    (package / "vie_prompts.py").write_text("# made-up text in the shape of the publisher's module\n" + body)
    if version is not None:
        info = tmp_path / f"editscore-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: editscore\nVersion: {version}\n")
    monkeypatch.delitem(sys.modules, "editscore", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
