"""Recognition by face size: the shipped recogniser on whole photos shrunk before detection.

    python -m benchmarks.small_faces                                   # f = 1 2 3 4 6, the shipped recogniser
    python -m benchmarks.small_faces --factors 3 4 --super-resolve     # also: super-resolve the small face first
    python -m benchmarks.small_faces --weights runs/lightcnn9/last.pt --out small_faces.json

Each photo of the LFW fold-2 pairs (``../shared/data/lfw_train/pairs_dev.txt``, 150 px, people
the shipped recogniser never saw) is shrunk by each factor ``f`` (area interpolation) and
embedded as a user's whole photo is: ``FaceEmbedder(detector=det_500m.onnx).embed(photo,
aligned=False)``. Per factor: the enlargement the 128x128 Light CNN crop applies to the main
face (:func:`lightface.data.align.affine_scale`; median and 10-90% range; FaceEmbedder warns
past :data:`lightface.embed.SMALL_FACE_ENLARGEMENT`) and the 10-fold pair accuracy and AUC (as
the ``lfw_dev`` protocol of :mod:`lightface.eval.dev_protocols`). ``--super-resolve`` adds,
per shipped super-resolver (4x, 8x), the main face aligned at its input size (antialiased, as
``SuperResolver.restore`` aligns) and upscaled to 128 by the model and, as the control, by
bicubic interpolation (Pillow's, the baseline of ``benchmarks.sr_quality``). docs/recognition.md
("Small faces") quotes the rows.
"""
import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import (device_name, int_at_least, positive_float, refuse_missing_path, shared_dir,
                                 weights_spec)
from pipelines.extract_embeddings import add_flip_argument

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
FACTORS = (1.0, 2.0, 3.0, 4.0, 6.0)
SR_SCALES = (4, 8)


def run(data_root, factors: Sequence[float] = FACTORS, weights: Optional[str] = None, detector: Optional[str] = None,
        super_resolve: bool = False, limit: int = 0, device: str = "cpu",
        flip: Optional[bool] = None) -> List[Dict[str, object]]:
    """One dict per factor: ``factor``, ``photo_px``, ``enlargement`` (median, p10, p90), ``accuracy``,
    ``auc``, and with ``super_resolve`` ``sr{s}`` / ``bicubic{s}``: ``(accuracy, auc)`` per 4x / 8x path.
    ``limit``: N pairs spread over the list (0: all 600). Raises :class:`lightface.embed.NoFaceError`
    naming a shrunk photo with no face even at the embedder's rescue threshold."""
    from lightface import FaceEmbedder, SuperResolver
    from lightface.data.align import affine_scale, estimate_transform
    from lightface.eval.dev_protocols import _verification
    from lightface.eval.verification import read_pairs
    from lightface.restore.paste import antialiased_align

    root = Path(data_root) / "lfw_train"
    pairs = read_pairs(root / "pairs_dev.txt")
    a, b, same = pairs.a, pairs.b, np.asarray(pairs.labels, bool)
    if limit:  # spread over the list, which holds its same-person pairs first
        keep = np.unique(np.linspace(0, len(a) - 1, limit).round().astype(int))
        a, b, same = [a[i] for i in keep], [b[i] for i in keep], same[keep]
    paths = list(dict.fromkeys(a + b))
    index = {p: i for i, p in enumerate(paths)}
    idx = np.asarray([[index[x], index[y]] for x, y in zip(a, b)])
    photos = [cv2.imread(str(root / "images" / p), cv2.IMREAD_COLOR) for p in paths]
    det = detector or str(SHARED / "models" / "det_500m.onnx")
    emb = FaceEmbedder(weights, device=device, detector=det, flip=flip)
    srs = {s: SuperResolver(scale=s, device=device) for s in SR_SCALES} if super_resolve else {}
    rows = []
    for f in factors:
        small = [cv2.resize(p, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA) if f != 1 else p
                 for p in photos]
        # the main face and its gray crop as embed(photo, aligned=False) finds and aligns them (rescue included),
        # one detection per photo
        found = [emb._main_face_crop(img, f"{p} shrunk {f:g}x")[:2] for img, p in zip(small, paths)]
        marks = [face.landmarks for face, _ in found]
        scales = np.asarray([affine_scale(estimate_transform(m, "lightcnn", 128)) for m in marks])
        direct = _verification(np.asarray(emb.embed([crop for _, crop in found], aligned=True)), idx, same)
        row = {"factor": f, "photo_px": round(150 / f, 1),
               "enlargement": [round(float(np.percentile(scales, q)), 2) for q in (50, 10, 90)],
               "accuracy": direct["accuracy"], "auc": direct["auc"]}
        for s, sr in srs.items():
            lows = [antialiased_align(img, lm, "lightcnn", size=sr.input_size)[0] for img, lm in zip(small, marks)]
            for name, crops in upscaled_crops(sr, lows).items():
                v = _verification(np.asarray(emb.embed(crops, aligned=True)), idx, same)
                row[name] = (v["accuracy"], v["auc"])
        rows.append(row)
    return rows


def upscaled_crops(sr, lows: Sequence[np.ndarray]) -> Dict[str, List[np.ndarray]]:
    """``{"sr{s}": ..., "bicubic{s}": ...}``: the input-size crops ``lows`` (uint8 BGR) upscaled to the
    super-resolver's output size by ``sr`` and, as the control, by the bicubic of ``benchmarks.sr_quality``
    and ``benchmarks.sr_robustness`` (Pillow's, :func:`lightface.data.degradation.resize`), not OpenCV's
    ``INTER_CUBIC`` (a sharper kernel, a = -0.75, up to 0.2 dB higher in PSNR on faces)."""
    from lightface.data.degradation import resize

    size = (sr.output_size, sr.output_size)
    return {f"sr{sr.scale}": sr.upscale_faces(lows), f"bicubic{sr.scale}": [resize(c, size, "bicubic") for c in lows]}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("benchmarks.small_faces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factors", type=positive_float, nargs="+", default=list(FACTORS),
                   help="shrink factors (default: %(default)s)")
    p.add_argument("--weights", default=None, type=weights_spec("recognition"),
                   help="Light CNN checkpoint or shipped name; default: the shipped one")
    p.add_argument("--detector", default=None, help="face detector (default: ../shared/models/det_500m.onnx)")
    p.add_argument("--super-resolve", action="store_true", help="add the shipped 4x / 8x super-resolvers' rows")
    p.add_argument("--limit", type=int_at_least(20), default=None,
                   help="N pairs spread over the list, same and different (at least 20: the accuracy is "
                        "10-fold; default: all 600)")
    p.add_argument("--data", default=str(SHARED / "data"), help="the shared data folder (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--device", default="cpu", type=device_name, help="(default: %(default)s)")
    add_flip_argument(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    refuse_missing_path(parser, args, "data", "no such folder (the shared data folder, with lfw_train/)", Path.is_dir)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")  # no per-photo warnings
    if not (Path(args.data) / "lfw_train").is_dir():
        print(f"benchmarks.small_faces: skipped: {Path(args.data) / 'lfw_train'} is absent")
        return 0
    rows = run(args.data, args.factors, args.weights, args.detector, args.super_resolve, args.limit or 0, args.device,
               args.flip)
    print(f"LFW fold 2 (pairs_dev.txt), whole photos shrunk by f; weights: {args.weights or 'shipped'}")
    extra = [k for k in rows[0] if k.startswith(("sr", "bicubic"))]
    print("| f (photo px) | enlargement median (10-90%) | accuracy | AUC |"
          + "".join(f" {k} acc / AUC |" for k in extra))
    print("|---|---|---:|---:|" + "---|" * len(extra))
    for r in rows:
        e = r["enlargement"]
        cells = "".join(f" {r[k][0]:.3f} / {r[k][1]:.3f} |" for k in extra)
        print(f"| {r['factor']:g} ({r['photo_px']:g}) | {e[0]:.1f} ({e[1]:.1f}-{e[2]:.1f}) | {r['accuracy']:.3f} "
              f"| {r['auc']:.3f} |{cells}")
    if args.out:
        write_text_atomic(args.out, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
