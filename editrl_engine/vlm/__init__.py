"""Vision-language models shared by the editing policies (as text encoders) and the reward judges.

Family folders hold the model-agnostic pieces: configs that build a model, tokenizers made in code for tiny
presets, processors, and loading from a local folder. Nothing here knows an editor or a judge. `load` picks the
family by name or from a folder's config.json (families.py); each family's own `load` works unchanged.
"""
from .families import DEFAULT_FAMILY, FAMILIES, MODEL_TYPES, family_module, family_of, load
from .handle import VLM

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "MODEL_TYPES", "VLM", "family_module", "family_of", "load"]
