"""The embedded demo (`editrl demo`): synthetic 16x16 shapes edits (task.py), a tiny Kontext policy with an exact
identity VAE (vae.py) after a short supervised warm-up that ships as warmup.safetensors (pretrain.py, reproduced
by `editrl pretrain-demo`), and the run itself (run.py, evaluated by engine/evaluation.py)."""
