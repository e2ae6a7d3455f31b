"""Enrol photos into a face gallery: a folder per person is the identity.

    python -m pipelines.enroll people.gallery photos/                   # photos/<person>/*.jpg
    python -m pipelines.enroll people.gallery photos/ --detector det_500m.onnx --index auto
    python -m pipelines.enroll people.gallery crops/ --aligned --weights runs/lcnn/best.pt
    python -m pipelines.enroll people.gallery new/*.jpg --identity "Ada Lovelace"   # one named person
    python -m pipelines.enroll people.gallery embeddings.npz            # from python -m pipelines.extract_embeddings

Resumable: running the same command again skips the photos already enrolled (same file at
the same path) and continues; a run killed at any point leaves the gallery at its last
committed batch. An ``.npz`` of ``python -m pipelines.extract_embeddings`` is added with the model
and the settings it records (``FaceGallery.add_npz``; people named by their folders, or ``--identity``;
its faces already in the gallery, from photos or an npz, are not added again, nor photos of an npz already
added). Unreadable photos and photos with no face are
skipped and listed; duplicate photos are flagged (byte-identical files are not added twice). The gallery
records the model: enrolling with other weights into it is refused. Prints a summary
(``--json`` also writes the full report); exit status 1 on errors (and with ``--strict``
when any photo failed).
"""
import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict

from pipelines._argtypes import json_file
from pipelines._cli import RERUN_HINT, DefaultsHelpFormatter, run_cli
from pipelines.extract_embeddings import add_detector_size_arguments, add_embedder_arguments, embedder_from_args

logger = logging.getLogger("pipelines.enroll")


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [-1, 1], got {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine similarity in [-1, 1], got {value}")
    return value


def _identity(text: str) -> str:
    """``--identity``: a name a person can be enrolled under (refused before any photo is read)."""
    from lightface.gallery.gallery import check_identity

    try:
        return check_identity(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("pipelines.enroll", description="Enrol photos (a folder per person) into a face gallery",
                                add_help=add_help, formatter_class=DefaultsHelpFormatter)
    p.add_argument("gallery", help="gallery folder (created when missing)")
    p.add_argument("photos", nargs="+",
                   help="a folder of people (one sub-folder per person, named after them), one person's folder, "
                        "image files (identity: their folder's name), or .npz files of python -m "
                        "pipelines.extract_embeddings (added with the model and settings they record)")
    p.add_argument("--identity", type=_identity, default=None,
                   help="enrol every photo given (files, and every image below the folders) as this one person, "
                        "whatever their folders are called")
    add_embedder_arguments(p)
    p.set_defaults(batch_size=32)
    p.add_argument("--detector", default="buffalo_l",
                   help="face detector unless --aligned: InsightFace pack name, detector .onnx, a YuNet .onnx, or "
                        "'yunet' (shipped); a pack that cannot be loaded (offline) falls back to the shipped YuNet")
    add_detector_size_arguments(p)
    p.add_argument("--aligned", action="store_true",
                   help="the photos are Light CNN crops (128x128, or 144x144 centre-cropped): no detection")
    p.add_argument("--duplicate-threshold", type=_unit_float, default=0.98,
                   help="cosine at or above which a face is flagged as a near-duplicate of an enrolled one")
    p.add_argument("--no-duplicate-check", action="store_true",
                   help="skip the near-duplicate embedding check (byte-identical files are still caught)")
    p.add_argument("--index", default="none",
                   help="after enrolling, build a FAISS index: none, auto (HNSW or IVF by size), hnsw, ivf, flat, or a "
                        "FAISS factory string (checked, and faiss looked for, before anything is enrolled); an "
                        "existing index is always extended with the new faces (python -m pipelines.gallery GALLERY "
                        "index KIND rebuilds or drops it)")
    p.add_argument("--json", type=json_file, default=None,
                   help="also write the full report (failures, duplicates) to this JSON file (checked before "
                        "enrolling)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any photo failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Enrol; returns the report as a dict (also printed as a summary)."""
    from lightface.gallery import FaceGallery, faiss_backend
    from lightface.gallery.results import EnrollReport
    from lightface.utils.atomic_write import write_text_atomic

    for p in args.photos:
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
    build = args.index.lower() != "none"
    if build:  # before any model loads or photo is enrolled: FAISS installed, a kind it can build
        try:
            faiss_backend.check_kind(args.index)
        except ImportError as err:
            raise RuntimeError(f"--index {args.index}: {err}; enrol without --index") from err
        except ValueError as err:
            raise ValueError(f"--index: {err}, or none") from err
    embedder = embedder_from_args(args, None if args.aligned else args.detector)
    gallery = FaceGallery(args.gallery, embedder)
    extend = gallery.index_info is not None
    if extend and not faiss_backend.available():
        extend = False
        logger.warning("%s: the gallery has a FAISS index but faiss is not installed: the new faces are not added "
                       "to it (they are searched exactly); pip install 'lightface[search]' and run python -m "
                       "pipelines.gallery %s index auto to index them", gallery.path, gallery.path)
    npzs = [p for p in args.photos if Path(p).suffix.lower() == ".npz" and Path(p).is_file()]
    given = [p for p in args.photos if p not in npzs]
    from_npz = sum(len(gallery.add_npz(f, args.identity)) for f in npzs)
    report = EnrollReport()
    if given:
        photos = {args.identity: given} if args.identity is not None else given
        report = gallery.enroll(photos, aligned=args.aligned, batch_size=args.batch_size,
                                duplicate_threshold=None if args.no_duplicate_check else args.duplicate_threshold,
                                progress=not args.no_progress)
    index = gallery.index_info
    if extend:
        index = gallery.update_index()
    elif build and index is None and len(gallery):
        index = gallery.build_index(args.index, progress=not args.no_progress)
    elif build and index is None:  # every photo failed: the report below says why, and --json keeps it
        logger.warning("%s: no face is enrolled, so no FAISS index was built (--index %s)", gallery.path, args.index)
    out = asdict(report)
    out.update(gallery=str(gallery.path), faces=len(gallery), people=len(gallery.identities()),
               model=str(gallery.model), index=index, from_npz=from_npz)
    if npzs:
        print(f"{gallery.path}: {from_npz} faces added from {len(npzs)} npz file(s)")
    if given:
        print(f"{gallery.path}: {report.summary()}")
    print(f"gallery now holds {out['faces']} faces of {out['people']} people; model {out['model']}"
          + (f"; FAISS {index['factory']} over {index['rows']} faces" if index else ""))
    for path, reason in list(report.failed.items())[:20]:
        print(f"  failed: {reason}")
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more failures (see --json)")
    for d in report.duplicates[:20]:
        what = "same file as" if d.kind == "file" else f"near-duplicate (cosine {d.score:.3f}) of"
        conflict = "  <- different identity" if d.conflict else ""
        print(f"  duplicate: {d.path} ({d.identity}) {what} {d.of_path} ({d.of_identity}){conflict}")
    if len(report.duplicates) > 20:
        print(f"  ... and {len(report.duplicates) - 20} more duplicates (see --json)")
    for path, old_ids in list(report.changed.items())[:20]:
        print(f"  changed: {path} differs from the file enrolled from it as face {', '.join(map(str, old_ids))}; "
              f"both kept (python -m pipelines.gallery {gallery.path} remove --face-id {' '.join(map(str, old_ids))} "
              "drops the old)")
    if len(report.changed) > 20:
        print(f"  ... and {len(report.changed) - 20} more changed photos (see --json)")
    if args.json:
        write_text_atomic(args.json, json.dumps(out, indent=2, default=str))
    if args.strict and report.failed:
        raise RuntimeError(f"--strict: {len(report.failed)} of {report.photos} photos failed")
    gallery.close()
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
