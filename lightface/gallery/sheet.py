"""Contact sheets of search results: one row per query face, ``query | top matches``."""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .results import Match

__all__ = ["face_tile", "contact_sheet"]

logger = logging.getLogger(__name__)

_LABEL_H = 30


def _to_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img[:, :, :3]


def face_tile(image: Optional[np.ndarray], box: Optional[np.ndarray] = None, size: int = 128,
              margin: float = 0.25) -> np.ndarray:
    """A square uint8 BGR ``(size, size, 3)`` tile of a face.

    Args:
        image: uint8 BGR or gray photo (None: a gray placeholder, for missing files).
        box: ``x1, y1, x2, y2`` of the face (photo pixels), or None to use the whole image.
        margin: context around the box, as a fraction of its larger side.
    """
    if image is None:
        return np.full((size, size, 3), 64, np.uint8)
    img = _to_bgr(image)
    if box is not None:
        x1, y1, x2, y2 = [float(v) for v in box]
        side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x1, y1 = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = max(int(round(side)), 1)
        pad = max(0, -x1, -y1, x1 + s - img.shape[1], y1 + s - img.shape[0])
        if pad:
            img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            x1, y1 = x1 + pad, y1 + pad
        img = img[y1:y1 + s, x1:x1 + s]
    h, w = img.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    tile = np.zeros((size, size, 3), np.uint8)
    oy, ox = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    tile[oy:oy + resized.shape[0], ox:ox + resized.shape[1]] = resized
    return tile


def _label(tile: np.ndarray, lines: Sequence[str], color: Tuple[int, int, int]) -> np.ndarray:
    bar = np.full((_LABEL_H, tile.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(lines[:2]):
        cv2.putText(bar, text[:22], (3, 12 + 13 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.36, color, 1, cv2.LINE_AA)
    return np.vstack([tile, bar])


def contact_sheet(rows: Sequence[Tuple[np.ndarray, str, List[Tuple[np.ndarray, Match]]]], k: int,
                  threshold: Optional[float] = None, size: int = 128) -> np.ndarray:
    """Assemble a contact sheet.

    Args:
        rows: one per query face: ``(query tile, query caption, [(match tile, match), ...])``
            with tiles from :func:`face_tile`.
        k: match columns (rows with fewer matches are padded).
        threshold: matches scoring at or above it are captioned in green, others in red.
        size: tile size in pixels.
    Returns:
        uint8 BGR image: ``query | match 1 | ... | match k`` per row, each tile captioned
        (identity and cosine score under the matches).
    """
    if not rows:
        raise ValueError("contact_sheet: no query faces to draw")
    gap = 6
    lines = []
    for query_tile, caption, matches in rows:
        cells = [_label(query_tile, [caption, "query"], (0, 0, 0))]
        cells.append(np.full((size + _LABEL_H, gap, 3), 255, np.uint8))
        for j in range(k):
            if j < len(matches):
                tile, m = matches[j]
                ok = threshold is None or m.score >= threshold
                cells.append(_label(tile, [m.identity, f"{m.score:.3f}"], (0, 128, 0) if ok else (0, 0, 200)))
            else:
                cells.append(np.full((size + _LABEL_H, size, 3), 255, np.uint8))
            cells.append(np.full((size + _LABEL_H, 2, 3), 255, np.uint8))
        lines.append(np.hstack(cells))
        lines.append(np.full((gap, lines[-1].shape[1], 3), 255, np.uint8))
    return np.vstack(lines[:-1])
