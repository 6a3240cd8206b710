"""Triton kernels of the fused RL ops (installed as editrl_engine.kernels)."""
