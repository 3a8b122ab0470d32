"""Awkward image files built byte by byte for the tests of fcdd's image rules."""

from __future__ import annotations

import struct
import zlib

import numpy as np

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_bytes(a: np.ndarray, rows: int | None = None, interlace: bool = False) -> bytes:
    """An 8-bit grey PNG written by hand: complete, or with the zlib stream of only ``rows`` rows
    (a valid stream that ends early: what Pillow decodes without complaint)."""
    h, w = a.shape
    if interlace:  # Adam7: seven reduced images, each row with its filter byte
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = a[y0::dy, x0::dx]
            if sub.size:
                raw += b"".join(b"\x00" + r.tobytes() for r in sub)
        raw = raw[: len(raw) * (rows or h) // h]
    else:
        raw = b"".join(b"\x00" + a[r].tobytes() for r in range(rows or h))
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, int(interlace))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )
