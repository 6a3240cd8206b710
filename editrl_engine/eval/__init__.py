"""Evaluation runners: EditReward-Bench pairwise accuracy of a reward, GEdit-style scoring of a folder of edits.

    rows = editreward_bench.read_rows("/data/EditReward-Bench")
    result = editreward_bench.evaluate(reward, rows, avg_k=4, cache=ScoreCache("scores.jsonl"))
    result = gedit.evaluate(reward, gedit.read_edits("/runs/edits"))

Every image is scored once per (reward identity, instruction, source, edited) and can be cached on disk.
"""
from __future__ import annotations

from . import editreward_bench, gedit
from .editreward_bench import BenchDataError
from .score_cache import ImageRef, ScoreCache, score_triples, write_json_atomic

__all__ = ["BenchDataError", "ImageRef", "ScoreCache", "editreward_bench", "gedit", "score_triples",
           "write_json_atomic"]
