"""Export a lightface LMDB as an InsightFace RecordIO pair (``.rec`` + ``.idx``).

    from lightface.data.to_recordio import lmdb_to_recordio
    lmdb_to_recordio("corpus/lfw.lmdb", "bundle/lfw.rec", color="gray", encoding="webp", quality=65, size=128)

The layout is InsightFace's (:mod:`lightface.data.recordio`): record 0 is the header record
(``flag`` 2, labels ``[N + 1, N + 1]``: images are records ``1 .. N``, no identity-range
records follow), record ``i + 1`` is sample ``i`` of the LMDB (``IRHeader`` label = its
class index, ``id`` = ``i``, then the encoded image). Beside them ``X.lightface.json``
(:func:`lightface.data.recordio.sidecar_path`) records the LMDB's alignment template and class
names, so ``python -m pipelines.build_lmdb X.rec OUT`` reads the crops back as they are (at the
same ``--template`` and size: the same pixels for a lossless encoding) instead of taking them for
ArcFace's, with the same classes (names, and classes left without samples: the same
``num_classes``); the sample order is kept, so embeddings stored per sample, such as a teacher's,
stay valid. InsightFace's own ``MXFaceDataset`` reads the pair too (with ``encoding="jpeg"``,
which MXNet's decoder reads everywhere).

A RecordIO file costs 28 bytes or less per record beyond the image, where an LMDB's pages
cost several hundred for images of 1-2 KB: the container for data that must travel
(``pipelines.device_bundle``).
"""
import json
from pathlib import Path
from typing import Any, Dict, Optional

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.atomic_write import write_text_atomic
from .lmdb_dataset import LMDBDataset
from .lmdb_format import decode_payload, encode_image
from .recordio import IRHeader, RecordIOWriter, pack_irecord, sidecar_path

__all__ = ["lmdb_to_recordio"]


def lmdb_to_recordio(src, rec_path, *, color: str = "gray", encoding: str = "jpeg", quality: int = 95,
                     size: Optional[int] = None, progress: bool = False) -> Dict[str, Any]:
    """Write every sample of the LMDB ``src`` to ``rec_path`` (and ``rec_path`` with ``.idx``).

    Args:
        color: ``"gray"`` (ITU-R 601 luma, as the Light CNN trainer converts) or ``"rgb"``
            (BGR images stored as they are; gray sources cannot be exported as colour).
        encoding, quality: ``"jpeg"``, ``"webp"`` (``quality`` 1-100) or ``"png"``.
        size: resize each whole image to ``size`` x ``size`` (area interpolation; the crop's
            framing is kept, so ``build_lmdb --size 144`` restores 144 crops' geometry).
    Returns:
        ``{"rec", "idx", "sidecar", "count", "num_classes", "bytes"}``. Written to temporary
        names and renamed when complete, so an interrupted export leaves no half file behind;
        the sidecar (``{"template": the LMDB's alignment template or null, "classes": its class names,
        "source": src}``) comes last.
    """
    if color not in ("gray", "rgb"):
        raise ValueError(f"color must be 'gray' or 'rgb', got {color!r}")
    if encoding == "raw":
        raise ValueError("RecordIO holds encoded images: choose encoding 'jpeg', 'webp' or 'png'")
    if size is not None and size < 1:
        raise ValueError(f"size must be positive, got {size}")
    data = LMDBDataset(src)
    rec, idx = Path(rec_path), Path(rec_path).with_suffix(".idx")
    rec.parent.mkdir(parents=True, exist_ok=True)
    tmp_rec, tmp_idx = rec.with_name(rec.name + ".partial"), idx.with_name(idx.name + ".partial")
    n = len(data)
    try:
        with RecordIOWriter(tmp_rec, tmp_idx) as w:
            w.write(pack_irecord(IRHeader(2, np.asarray([n + 1, n + 1], np.float32)), b""), idx=0)
            for i in tqdm(range(n), disable=not progress, unit="img", desc=f"export {rec.name}"):
                r = data.record(i)
                img = decode_payload(r["encoded"], r["encoding"], r["shape"])
                if color == "gray" and img.ndim == 3:
                    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                elif color == "rgb" and img.ndim == 2:
                    raise ValueError(f"{src} stores gray images; they cannot be exported as colour")
                if size is not None and img.shape[:2] != (size, size):
                    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                payload = encode_image(img, encoding, quality)
                w.write(pack_irecord(IRHeader(0, float(r["label"]), i), payload), idx=i + 1)
    except BaseException:
        tmp_rec.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    tmp_rec.replace(rec)
    tmp_idx.replace(idx)
    sidecar = sidecar_path(rec)
    write_text_atomic(sidecar, json.dumps({"template": data.metadata["alignment"].get("template"),
                                           "classes": data.classes, "source": str(src)}, indent=2) + "\n")
    return {"rec": str(rec), "idx": str(idx), "sidecar": str(sidecar), "count": n, "num_classes": data.num_classes,
            "bytes": rec.stat().st_size + idx.stat().st_size}
