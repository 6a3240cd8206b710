"""The keyword under which a transformers model takes and returns its KV cache.

transformers 5.24 renamed `past_key_values` to `cache` (the old name still works there, with a deprecation
warning on every run); earlier 5.x releases only know `past_key_values`. Callers that hand a prefilled cache to a
model or to `generate` ask this module for the name, so both ranges run without a warning.
"""
from __future__ import annotations

import functools
import inspect


@functools.cache
def _keyword_of(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_keyword(model) -> str:
    """'cache' or 'past_key_values': the forward / generate keyword of `model`'s KV cache."""
    return _keyword_of(type(model))


def cache_kwargs(model, cache) -> dict:
    """{keyword: cache} for a call of `model` or of `model.generate`."""
    return {cache_keyword(model): cache}


def output_cache(output):
    """The KV cache a forward returned (ModelOutput keeps only the fields that are set)."""
    return output["cache"] if "cache" in output else output["past_key_values"]
