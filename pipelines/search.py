"""Search a face gallery with photos: every face in each photo (group photos work).

    python -m pipelines.search people.gallery query.jpg group.jpg --top 5
    python -m pipelines.search people.gallery crops/*.png --aligned --threshold 0.6 --sheet hits.jpg

Prints a table (query, face, box, rank, identity, cosine score, enrolled photo) and the
open-set answer per face (``unknown`` below the threshold: ``--threshold``, else the
model's calibrated threshold), and writes a contact sheet: one row per query face,
``query | top matches`` with identities and scores. The embedder must be the model the
gallery was built with (default: the shipped recogniser; ``--weights`` otherwise).
``--json`` (written atomically, before the sheet) keeps every match. A ``--sheet`` that is a
folder or has an extension OpenCV cannot write is refused on the command line (exit status 2),
before any model loads. Exit status 1 when the gallery cannot be opened or any query photo
could not be searched (unreadable, or no face found); the other queries are still answered.
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List

from pipelines._argtypes import image_file, positive_int
from pipelines._cli import DefaultsHelpFormatter, run_cli
from pipelines.extract_embeddings import add_detector_size_arguments, add_embedder_arguments, embedder_from_args

logger = logging.getLogger("pipelines.search")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("pipelines.search", description="Search a face gallery with photos (every face in each)",
                                add_help=add_help, formatter_class=DefaultsHelpFormatter)
    p.add_argument("gallery", help="gallery folder (made by python -m pipelines.enroll)")
    p.add_argument("queries", nargs="+", help="query photos (every face is searched) or, with --aligned, face crops")
    p.add_argument("--top", type=positive_int, default=5, help="matches per face")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine threshold of the open-set answer (default: the model's calibrated threshold, else the "
                        "one stored in the gallery)")
    add_embedder_arguments(p)
    p.add_argument("--detector", default="buffalo_l",
                   help="face detector unless --aligned: InsightFace pack name, detector .onnx, a YuNet .onnx, or "
                        "'yunet' (shipped); a pack that cannot be loaded (offline) falls back to the shipped YuNet")
    add_detector_size_arguments(p)
    p.add_argument("--aligned", action="store_true", help="the queries are Light CNN crops (one face each, no detection)")
    p.add_argument("--backend", default="auto", choices=["auto", "exact", "faiss"],
                   help="auto: the gallery's FAISS index when it has one (and faiss is installed), else exact")
    p.add_argument("--sheet", type=image_file, default="search_contact_sheet.jpg",
                   help="contact sheet to write ('' for none); its extension names the format (.jpg, .png, .webp ...)")
    p.add_argument("--json", default=None, help="also write every match to this JSON file")
    return p


def _short(path: Any, width: int = 48) -> str:
    text = "-" if path is None else str(path)
    return text if len(text) <= width else "..." + text[-(width - 3):]


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Search; returns ``{"faces": [...], "failed": {query: reason}}`` (also printed as a table)."""
    import numpy as np

    from lightface.data.io import ImageReadError, read_image, write_image
    from lightface.embed import NoFaceError
    from lightface.gallery import FaceGallery
    from lightface.gallery.sheet import contact_sheet, face_tile
    from lightface.utils.atomic_write import write_text_atomic

    with FaceGallery(args.gallery, create=False) as probe:  # fail fast, before loading any model
        if len(probe) == 0:
            raise ValueError(f"{args.gallery}: the gallery is empty; enrol photos with python -m pipelines.enroll")
    embedder = embedder_from_args(args, None if args.aligned else args.detector)
    gallery = FaceGallery(args.gallery, embedder, create=False)  # refuses another model
    threshold = args.threshold if args.threshold is not None else gallery.threshold
    faces: List[Dict[str, Any]] = []
    failed: Dict[str, str] = {}
    rows = []
    for query in args.queries:
        try:
            image = read_image(query)
            if args.aligned:
                emb = embedder.embed([image], aligned=True)
                res = gallery.search(emb, k=args.top, backend=args.backend)
                found = [(None, None, image, res[0])]
            else:
                hits = gallery.search_faces(image, k=args.top, threshold=threshold, backend=args.backend)
                if not hits:
                    det = embedder.detector
                    raise NoFaceError(f"{query}: no face detected (detector {Path(str(det.model)).name}, det_size "
                                      f"{det.det_size}, threshold {det.threshold:g}); a face that is small in a large "
                                      f"photo is found with a larger --det-size (e.g. {2 * det.det_size}), a weak one "
                                      "with a lower --det-threshold")
                found = [(h.box, h.det_score, image, h.matches) for h in hits]
        except (ImageReadError, NoFaceError, ValueError) as err:
            failed[query] = str(err)
            logger.error("%s", err)
            continue
        for n, (box, det_score, image, matches) in enumerate(found):
            best = matches[0] if matches else None
            answer = None
            if threshold is not None:
                answer = best.identity if best is not None and best.score >= threshold else "unknown"
            faces.append({"query": query, "face": n, "box": None if box is None else [round(float(v), 1) for v in box],
                          "det_score": det_score, "identity": answer,
                          "matches": [{"rank": r + 1, "identity": m.identity, "score": round(m.score, 4),
                                       "path": m.path, "face_id": m.face_id} for r, m in enumerate(matches)]})
            rows.append((face_tile(image, box), f"{Path(query).name}#{n}", matches))
    # the table
    header = f"{'query':<28} {'face':>4} {'box':<22} {'rank':>4} {'identity':<24} {'score':>7}  photo"
    print(header)
    print("-" * len(header))
    for f in faces:
        box = "-" if f["box"] is None else ",".join(f"{v:.0f}" for v in f["box"])
        for m in f["matches"]:
            print(f"{_short(f['query'], 28):<28} {f['face']:>4} {box:<22} {m['rank']:>4} {_short(m['identity'], 24):<24} "
                  f"{m['score']:>7.3f}  {_short(m['path'])}")
        if f["identity"] is not None:
            best = f["matches"][0]["score"] if f["matches"] else float("nan")
            print(f"{'':<28} {f['face']:>4} -> {f['identity']} (best {best:.3f}, threshold {threshold:.3f})")
    print(f"{len(faces)} faces in {len(args.queries) - len(failed)} of {len(args.queries)} query photos; gallery "
          f"{gallery.path} ({len(gallery)} faces, {len(gallery.identities())} people)")
    result = {"faces": faces, "failed": failed, "threshold": threshold, "gallery": str(gallery.path)}
    if args.json:  # before the sheet: the matches are kept whatever happens to it
        write_text_atomic(args.json, json.dumps(result, indent=2, default=lambda o: np.asarray(o).tolist()))
    if args.sheet and rows:
        match_tiles = []
        for qtile, caption, matches in rows:
            tiles = []
            for m in matches:
                rec = gallery.face(m.face_id)
                img = None
                if m.path is not None and Path(m.path).is_file():
                    try:
                        img = read_image(m.path)
                    except ImageReadError:
                        img = None
                tiles.append((face_tile(img, None if rec is None else rec.box), m))
            match_tiles.append((qtile, caption, tiles))
        sheet = contact_sheet(match_tiles, args.top, threshold)
        write_image(args.sheet, sheet)
        print(f"contact sheet: {args.sheet}")
    gallery.close()
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(args.queries)} query photos could not be searched: "
                           + "; ".join(list(failed.values())[:3]))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
