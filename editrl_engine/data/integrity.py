"""Cheap structural checks of encoded images, so that every decoder backend rejects the same broken files.

Decoders disagree on damaged input: libjpeg-turbo under DALI fills a truncated JPEG with grey and carries
on, while Pillow raises. Truncation (an interrupted copy or download) is the common damage, so before any
decoder runs we walk the JPEG marker segments or PNG chunks to their end marker (EOI / IEND) without
decoding pixels. Data after the end marker (camera trailers, motion-photo videos) is allowed. Other formats
are left to the decoders.
"""
from __future__ import annotations

import struct

JPEG_SIGNATURE = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that stand alone (no length field): TEM, RST0-7, SOI
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8), 0xD8}
_EOI, _SOS = 0xD9, 0xDA


def encoded_problem(data: bytes | memoryview) -> str | None:
    """Why `data` cannot be a complete image ("empty file", "truncated JPEG: ..."), or None if it may be."""
    if len(data) == 0:
        return "empty file"
    if bytes(data[:2]) == JPEG_SIGNATURE:
        return _jpeg_problem(bytes(data))
    if bytes(data[:8]) == PNG_SIGNATURE:
        return _png_problem(bytes(data))
    return None


def _jpeg_problem(data: bytes) -> str | None:
    position = 2
    while True:
        if position + 2 > len(data):
            return "truncated JPEG: ends before its end-of-image marker"
        if data[position] != 0xFF:
            return f"broken JPEG: expected a marker at byte {position}"
        marker = data[position + 1]
        if marker == 0xFF:                          # fill byte before a marker
            position += 1
            continue
        if marker == _EOI:
            return None
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if position + 4 > len(data):
            return "truncated JPEG: cut inside a marker segment"
        (length,) = struct.unpack(">H", data[position + 2: position + 4])
        position += 2 + length
        if marker == _SOS:                          # entropy-coded data runs to the next real marker
            position = _end_of_entropy_data(data, position)
            if position < 0:
                return "truncated JPEG: cut inside the compressed image data"


def _end_of_entropy_data(data: bytes, position: int) -> int:
    """Offset of the first marker after entropy-coded data (0xFF followed by neither 0x00 nor RSTn), or -1."""
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return -1
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            position += 1 if following == 0xFF else 2
            continue
        return position


def _png_problem(data: bytes) -> str | None:
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position: position + 8])
        position += 12 + length                     # length, type, data, CRC
        if position > len(data):
            return f"truncated PNG: cut inside a {kind.decode('latin-1')!r} chunk"
        if kind == b"IEND":
            return None
    return "truncated PNG: no IEND chunk"
