"""The HTTP API's request and response bodies (pydantic): they are what /openapi.json describes.

Request bodies are parsed by the server itself (server.py) so that a missing field answers 400 with a message
naming it; these models give that parse and the schema.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_CANDIDATES = 256          # hard cap per request; ServeConfig.max_candidates may be lower
MAX_RERANK_N = 64
MAX_SOURCES = 8               # source images of one multi-source edit (`sources`)
SOURCES_DESCRIPTION = ("several source images of one edit, in order, each a base64 PNG or JPEG file (instead of "
                       "`source`; give exactly one of the two)")


class _OneSourceField(BaseModel):
    @model_validator(mode="after")
    def _exactly_one_source(self):
        if (self.source is None) == (self.sources is None):
            raise ValueError("give exactly one of `source` (one image) and `sources` (a list of images)")
        return self

    def source_fields(self) -> list[tuple[str, str]]:
        """(base64 image, field name) of each source, in order."""
        if self.sources is None:
            return [(self.source, "source")]
        return [(data, f"sources[{i}]") for i, data in enumerate(self.sources)]
# 16x16 PNGs (a red and a blue square) for the schema's examples
RED_PNG = ("iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGUlEQVR4nGM8"
           "ISfHQApgIkn1qIZRDUNKAwBPHwEkcYw1mAAAAABJRU5ErkJggg==")
BLUE_PNG = ("iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGUlEQVR4nGOU"
            "kzvBQApgIkn1qIZRDUNKAwBNywEki0OjxAAAAABJRU5ErkJggg==")


class ScoreRequest(_OneSourceField):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instruction": "make the square blue", "source": RED_PNG, "candidates": [BLUE_PNG, RED_PNG]}]})
    instruction: str = Field(min_length=1, max_length=4096, description="the edit instruction")
    source: str | None = Field(default=None, min_length=1,
                               description="the source image: a PNG or JPEG file, base64-encoded")
    sources: list[str] | None = Field(default=None, min_length=1, max_length=MAX_SOURCES,
                                      description=SOURCES_DESCRIPTION)
    candidates: list[str] = Field(min_length=1, max_length=MAX_CANDIDATES,
                                  description="the edited images to score, each a base64 PNG or JPEG file")


class CandidateScore(BaseModel):
    index: int
    reward: float | None = Field(description="in [0, 1]; null when the judge gave no score (see error)")
    error: str | None = Field(default=None, description="why reward is null")
    details: dict[str, Any] = Field(default_factory=dict, description="the reward's details for this candidate")


class BatchInfo(BaseModel):
    requests: int = Field(description="requests scored together in this request's batch")
    candidates: int = Field(description="candidates scored together in this request's batch")


class ScoreResponse(BaseModel):
    rewards: list[float | None]
    best_index: int | None = Field(description="highest finite reward; null when every reward is null")
    failures: int = Field(description="how many rewards are null")
    candidates: list[CandidateScore]
    reward: str = Field(description="the reward kind")
    batch: BatchInfo


class RerankRequest(_OneSourceField):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instruction": "make the square blue", "source": RED_PNG, "n": 2, "seed": 0, "num_steps": 2}]})
    instruction: str = Field(min_length=1, max_length=4096)
    source: str | None = Field(default=None, min_length=1,
                               description="the source image: a PNG or JPEG file, base64-encoded")
    sources: list[str] | None = Field(default=None, min_length=1, max_length=MAX_SOURCES,
                                      description=SOURCES_DESCRIPTION)
    n: int = Field(default=8, ge=1, le=MAX_RERANK_N, description="candidates to sample")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="candidate i is sampled from seed + i")
    num_steps: int | None = Field(default=None, ge=1, le=100, description="sampling steps (default: the server's)")


class RerankCandidate(BaseModel):
    index: int
    seed: int
    reward: float | None
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    image: str = Field(description="PNG, base64-encoded")


class RerankResponse(BaseModel):
    best_index: int | None
    best: str | None = Field(description="the best candidate as a base64 PNG; null when every reward is null")
    best_reward: float | None
    failures: int
    error: str | None = Field(description="set when no candidate could be chosen")
    candidates: list[RerankCandidate]
    reward: str
    num_steps: int
    seed: int


class Health(BaseModel):
    status: str
    reward: str
    policy: str | None
    queue_depth: int
    accepted: int
    answered: int


class ErrorBody(BaseModel):
    detail: str


MULTIPART_SCORE_SCHEMA = {
    "type": "object",
    "required": ["instruction", "source", "candidates"],
    "properties": {
        "instruction": {"type": "string", "minLength": 1},
        "source": {"type": "string", "format": "binary", "description": "PNG or JPEG file (or, instead, `sources`: "
                                                                          "one file part per source image, in "
                                                                          "order, for a reward that takes several)"},
        "candidates": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"},
                       "description": "PNG or JPEG files, one form part each"},
    },
}
