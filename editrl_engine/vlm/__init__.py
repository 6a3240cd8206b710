"""Vision-language models shared by the editing policies (as text encoders) and the reward judges.

Family folders hold the model-agnostic pieces: configs that build a model, tokenizers made in code for tiny
presets, processors, and loading from a local folder. Nothing here knows an editor or a judge.
"""
