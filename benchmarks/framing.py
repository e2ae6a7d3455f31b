"""Crops framed by other tools: the recogniser on ArcFace and FFHQ crops, resized vs re-aligned.

    python -m benchmarks.framing                        # the shipped recogniser
    python -m benchmarks.framing --weights runs/lightcnn9/last.pt --out framing.json
    python -m benchmarks.framing --pairs 100             # a quick look: 50 same + 50 different pairs

The LFW fold-2 pairs (``../shared/data/lfw_train/pairs_dev.txt``, people the shipped
recogniser never saw) are aligned from their given landmarks three ways: to the Light CNN
template (128, what the network expects), to InsightFace's ArcFace template (112) and to
the FFHQ / CelebA-HQ framing (128). Each foreign crop is embedded twice by
:class:`lightface.FaceEmbedder`: resized to 128 as if it were a Light CNN crop
(``aligned_template="lightcnn"``) and warped from its template to the Light CNN one
(``aligned_template="arcface"`` / ``"ffhq"``). Prints 10-fold accuracy and AUC per row
(as the ``lfw_dev`` protocol of :mod:`lightface.eval.dev_protocols`); docs/recognition.md quotes them.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import device_name, int_at_least, refuse_missing_path, shared_dir, weights_spec
from pipelines.extract_embeddings import add_flip_argument

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_dir() / "data"
#: (crop framing, its size, how FaceEmbedder is told to read it, row label)
ROWS = (("lightcnn", 128, "lightcnn", "Light CNN crop (direct)"),
        ("arcface", 112, "lightcnn", "ArcFace 112, resized"),
        ("arcface", 112, "arcface", "ArcFace 112, re-aligned"),
        ("ffhq", 128, "lightcnn", "FFHQ 128, resized"),
        ("ffhq", 128, "ffhq", "FFHQ 128, re-aligned"))


def run(data_root, weights: Optional[str] = None, device: str = "cpu",
        flip: Optional[bool] = None, n_pairs: Optional[int] = None) -> List[Dict[str, object]]:
    """One dict per row of :data:`ROWS`: ``framing``, ``aligned_template``, ``label``,
    ``accuracy`` (10-fold), ``auc``. ``flip``: flip fusion (None: the weights' model card).
    ``n_pairs``: score only that many of the 600 pairs, half same and half different."""
    from lightface import FaceEmbedder
    from lightface.eval.dev_protocols import _verification, lfw_dev_faces

    rows, faces, embedders = [], {}, {}
    t0 = time.perf_counter()
    for framing, size, read_as, label in ROWS:
        if framing not in faces:
            faces[framing] = lfw_dev_faces(data_root, template=framing, size=size, n_pairs=n_pairs)
        if read_as not in embedders:
            embedders[read_as] = FaceEmbedder(weights, aligned_template=read_as, device=device, flip=flip)
        crops, pairs, same = faces[framing]
        m = _verification(np.asarray(embedders[read_as].embed(crops, aligned=True)), pairs, same)
        rows.append({"framing": framing, "aligned_template": read_as, "label": label,
                     "accuracy": m["accuracy"], "auc": m["auc"]})
        print(f"benchmarks.framing: row {len(rows)}/{len(ROWS)} ({label}) done, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)  # the five rows take minutes on a CPU
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser("benchmarks.framing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, type=weights_spec("recognition"),
                   help="Light CNN checkpoint or shipped name; default: the shipped one")
    p.add_argument("--data", default=str(SHARED_DATA), help="the shared data folder (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--device", default="cpu", type=device_name, help="(default: %(default)s)")
    p.add_argument("--pairs", type=int_at_least(20), default=None,
                   help="score only this many pairs, half same and half different (default: all 600; "
                        "100 takes about a sixth of the time)")
    add_flip_argument(p)
    args = p.parse_args(argv)
    refuse_missing_path(p, args, "data", "no such folder (the shared data folder, with lfw_train/)", Path.is_dir)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (Path(args.data) / "lfw_train").is_dir():
        print(f"benchmarks.framing: skipped: {Path(args.data) / 'lfw_train'} is absent")
        return 0
    rows = run(args.data, args.weights, args.device, args.flip, args.pairs)
    n = min(args.pairs or 600, 600)
    print(f"LFW fold 2 (pairs_dev.txt, {n} pairs), given landmarks; weights: {args.weights or 'shipped'}")
    print("| crop | accuracy (10-fold) | AUC |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['accuracy']:.3f} | {r['auc']:.3f} |")
    if args.out:
        write_text_atomic(args.out, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
