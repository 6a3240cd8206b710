"""Triton's CPU interpreter (TRITON_INTERPRET=1) before 3.9 reads a kernel's integer argument, which it holds as
a one-element array, with int(array); recent NumPy 2 releases refuse that ("only 0-dimensional arrays can be
converted to Python scalars"), so every `range(0, n, BLOCK)` over a runtime bound fails there. Triton 3.9 reads
it as int(array.squeeze()); `patch()` gives older interpreters the same reading. Compiled kernels never run this
code: only the interpreter's own tensor patching changes, and only for Triton versions before 3.9.
"""
from __future__ import annotations

import triton

FIXED_IN = (3, 9)


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def patch() -> bool:
    """Apply the fixed reading to an older interpreter (once); True when it was applied."""
    if _version(triton.__version__) >= FIXED_IN:
        return False
    from triton.runtime import interpreter
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_editrl_fixed", False):
        return False

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor._editrl_fixed = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True
