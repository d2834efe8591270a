"""A tiny Omniglot-like data set in the official layout, written from random strokes (tests, smoke runs)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .omniglot_files import PARTS


def make_synthetic_omniglot(
    root: str | os.PathLike,
    *,
    n_alphabets: tuple[int, int] = (3, 2),
    n_characters: int = 3,
    n_drawings: int = 5,
    image_size: int = 105,
    as_zip: bool = True,
    seed: int = 0,
) -> Path:
    """Write a tiny Omniglot-like data set to ``root`` in the official layout, as zips or as extracted folders.

    ``n_alphabets`` = (background, evaluation) alphabet counts. Each character is a random glyph of 2-4 thick strokes;
    its drawings jitter the stroke end points, so classes are distinct and learnable (rotations too, in general).
    Images are 1-bit PNGs, black ink on white, like the real set.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, count in zip(PARTS, n_alphabets, strict=True):
        files: dict[str, bytes] = {}
        tag = "Bg" if part == PARTS[0] else "Ev"
        for a in range(count):
            for c in range(n_characters):
                strokes = rng.uniform(0.15, 0.85, size=(int(rng.integers(2, 5)), 2, 2)) * image_size
                for d in range(n_drawings):
                    jittered = strokes + rng.normal(0.0, 0.02 * image_size, size=strokes.shape)
                    image = Image.new("1", (image_size, image_size), 1)
                    draw = ImageDraw.Draw(image)
                    for (x0, y0), (x1, y1) in jittered:
                        draw.line([(x0, y0), (x1, y1)], fill=0, width=max(1, image_size // 15))
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    files[f"{part}/Synthetic_{tag}_{a:02d}/character{c + 1:02d}/{a:02d}{c:02d}_{d + 1:02d}.png"] = (
                        buffer.getvalue()
                    )
        if as_zip:
            with zipfile.ZipFile(root / f"{part}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in files.items():
                    archive.writestr(name, data)
        else:
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    return root
