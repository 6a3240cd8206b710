"""Whether the installed transformers has Qwen3-VL, and the error that names the version it needs."""
from __future__ import annotations

MIN_TRANSFORMERS = "4.57.0"                 # the first transformers release with Qwen3VLForConditionalGeneration


def transformers_has_qwen3_vl() -> bool:
    try:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor  # noqa: F401
    except ImportError:
        return False
    return True


def require_qwen3_vl() -> None:
    """Raises ImportError naming the transformers version Qwen3-VL needs when the installed one lacks it."""
    if not transformers_has_qwen3_vl():
        import transformers
        raise ImportError(f"Qwen3-VL needs transformers >= {MIN_TRANSFORMERS}; the installed transformers "
                          f"{transformers.__version__} has no Qwen3VLForConditionalGeneration "
                          f"(pip install 'transformers>={MIN_TRANSFORMERS}')")
