"""Material for the tests of `fcdd app`: a real seconds-long training run with calibration, the
server started as a user starts it, and the awkward files users drop on it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from fcdd.testing import running_app

__all__ = ["CHROMIUM", "bomb_png", "float_tiff", "png16", "rgb_png", "running_app", "train_tiny"]

CHROMIUM = Path("/usr/bin/chromium")


def train_tiny(root: Path, make_config, out: Path, seed: int = 0, epochs: int = 3) -> Path:
    """The conftest folder dataset, 32 px CNN, calibrated on 15 held-out good images: a few seconds."""
    from fcdd.experiment import run_experiment

    cfg = make_config(root, out, f"train.epochs={epochs}", f"train.seeds=[{seed}]")
    result = run_experiment(cfg, "tiles", seed)
    model = Path(result.run_dir) / "model.pt"
    assert model.is_file()
    return model


def png16(path: Path, size=(48, 64), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 65535, size).astype(np.uint16)).save(path)
    return path


def float_tiff(path: Path, size=(40, 56)) -> Path:
    Image.fromarray(np.random.default_rng(1).random(size, dtype=np.float32), mode="F").save(path)
    return path


def rgb_png(path: Path, size=(48, 48), seed: int = 0, square: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(120, 8, (*size, 1)) + np.array([0, 20, 0]), 0, 255).astype(np.uint8)
    if square:  # the conftest defect: a bright square
        img[10:24, 12:26] = [250, 40, 40]
    Image.fromarray(img).save(path)
    return path


def bomb_png(path: Path, side: int = 60_000) -> Path:
    """A 200-byte PNG whose header claims side x side pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
