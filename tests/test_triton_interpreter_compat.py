"""kernels/_interpreter.py: Triton < 3.9's interpreter reads integer kernel arguments in a way recent NumPy
refuses; the patch gives it Triton 3.9's reading and leaves newer Triton alone."""
from __future__ import annotations

import types

import numpy as np
import pytest

triton = pytest.importorskip("triton")

from editrl_engine.kernels import _interpreter  # noqa: E402


@pytest.mark.parametrize("text, expected", [("3.6.0", (3, 6)), ("3.9.0+git1234", (3, 9)), ("3.10.1", (3, 10)),
                                            ("4.0", (4, 0)), ("3.7.0rc1", (3, 7))])
def test_versions_parse(text, expected):
    assert _interpreter._version(text) == expected


def test_the_patch_reads_a_one_element_argument_as_an_index(monkeypatch):
    """Against a stand-in interpreter of the old kind: int(array) of a one-element 1-D array is what NumPy refuses."""
    scope_attrs = {}
    scope = types.SimpleNamespace(set_attr=lambda obj, name, value: scope_attrs.__setitem__(name, value))

    def old_patch_lang_tensor(tensor, scope):
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))

    fake = types.SimpleNamespace(_patch_lang_tensor=old_patch_lang_tensor)
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setitem(__import__("sys").modules, "triton.runtime.interpreter", fake)
    monkeypatch.setattr(triton.runtime, "interpreter", fake, raising=False)
    assert _interpreter.patch() is True
    assert _interpreter.patch() is False                                  # once
    fake._patch_lang_tensor(object, scope)
    argument = types.SimpleNamespace(handle=types.SimpleNamespace(data=np.array([7], dtype=np.int32)))
    assert scope_attrs["__index__"](argument) == 7
    assert list(range(0, scope_attrs["__index__"](argument), 3)) == [0, 3, 6]


def test_newer_triton_is_left_alone(monkeypatch):
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    assert _interpreter.patch() is False
