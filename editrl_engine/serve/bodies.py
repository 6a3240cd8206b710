"""Reading request bodies: the size limit (413), the content type (415), JSON and multipart parsing, and
ApiError, the one exception a handler raises for any answer other than 200 (its status and a message naming the
problem and the fix).
"""
from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.formparsers import MultiPartException


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.message}, status_code=self.status, headers=self.headers)


def validation_message(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()]
    return "invalid request body: " + "; ".join(parts)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length header {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, f"the body is {int(declared)} bytes, over the server's limit of {limit} bytes "
                                f"(--max-body-mb); send fewer or smaller images")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over the server's limit of {limit} bytes (--max-body-mb); send "
                                "fewer or smaller images")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, model: type[BaseModel]) -> BaseModel:
    if not body:
        raise ApiError(400, "empty request body: send a JSON object")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}")
    if not isinstance(payload, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise ApiError(400, validation_message(error))


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request, body: bytes, max_files: int) -> tuple[str, list[bytes], bool, list[bytes]]:
    """(instruction, source bytes, several, candidate bytes) of a multipart/form-data body: one `source` file part
    (several = False) or one or more `sources` parts (several = True, in order), exactly one of the two."""
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}
    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=16)
    except MultiPartException as error:
        raise ApiError(400, f"bad multipart body: {error.message}")
    try:
        instruction = form.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ApiError(400, "invalid request body: instruction: a non-empty form field is required")
        single, several = form.getlist("source"), form.getlist("sources")
        if bool(single) == bool(several) or len(single) > 1:
            raise ApiError(400, "invalid request body: source: send exactly one of `source` (one file part) and "
                                "`sources` (one file part per source image, in order)")
        parts = single or several
        if any(isinstance(part, str) for part in parts):
            name = "source" if single else "sources"
            raise ApiError(400, f"invalid request body: {name}: file parts (PNG or JPEG) are required")
        candidates = form.getlist("candidates")
        if not candidates or any(isinstance(c, str) for c in candidates):
            raise ApiError(400, "invalid request body: candidates: one or more file parts (PNG or JPEG) are "
                                "required")
        return instruction, [await p.read() for p in parts], bool(several), [await c.read() for c in candidates]
    finally:
        await form.close()
