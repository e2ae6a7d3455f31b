"""Build a lightface LMDB face dataset (or inspect / verify one).

    python -m pipelines.build_lmdb SRC OUT [options]
    python -m pipelines.build_lmdb --info OUT
    python -m pipelines.build_lmdb --verify OUT

SRC is a folder with one sub-folder per identity (any depth; CFP-style ``frontal`` /
``profile`` folders become a ``pose`` attribute), a ``path label`` list file, or an
InsightFace ``train.rec`` + ``train.idx`` pair. Bad files are skipped and listed in
``OUT/build_report.json``.

Exit codes: 0 = dataset written (or --info / --verify passed); 1 = nothing could be
written, OUT already holds a dataset (without --overwrite), --strict with skipped files,
or --verify found errors; 2 = bad command line.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from lightface.data.align import ALIGN_METHODS, TEMPLATES
from lightface.data.build import DatasetLockedError, WorkerDiedError, build_lmdb, verify_lmdb
from lightface.data.lmdb_format import ENCODINGS, LMDBFormatError, read_metadata
from lightface.data.detect import DetectorError, check_detector_options
from pipelines._argtypes import int_at_least, non_negative_int, positive_int, unit_interval
from pipelines._cli import RESUME_FLAG_HINT, DefaultsHelpFormatter, interrupted, sigterm_as_interrupt

logger = logging.getLogger("pipelines.build_lmdb")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.build_lmdb",
        description="Build a lightface LMDB face dataset from an identity folder tree, a 'path label' list "
        "file or an InsightFace train.rec/train.idx pair (or inspect / verify one). Bad files are skipped "
        "and listed in OUT/build_report.json.",
        epilog="exit codes: 0 = written (or --info / --verify passed); 1 = nothing could be written, OUT "
        "already holds a dataset (use --overwrite), --strict with skipped files, or --verify found errors; "
        "2 = bad command line. Format: docs/lmdb_format.md",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("src", nargs="?", help="source: identity folder tree, list file, or train.rec/.idx (or their folder)")
    p.add_argument("out", nargs="?", help="output dataset directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--info", metavar="OUT", default=None, help="print the metadata of dataset OUT as JSON and exit")
    mode.add_argument("--verify", metavar="OUT", default=None,
                      help="decode every record of dataset OUT, check counts and labels, print a JSON report")
    g = p.add_argument_group("images")
    g.add_argument("--size", type=int, default=144, help="crop side in pixels (144 = Light CNN training crop)")
    g.add_argument("--color", choices=("gray", "rgb"), default="gray",
                   help="store gray (ITU-R 601 luma) or colour (BGR order) images")
    g.add_argument("--encoding", choices=ENCODINGS, default="raw",
                   help="image encoding inside the LMDB: raw pixels (fastest to read, no decoding), "
                        "png (lossless, ~1.7x smaller for gray faces, slower to decode), jpeg or webp (lossy; webp smallest)")
    g.add_argument("--quality", type=int, default=95, help="JPEG / WebP quality (1-100) for --encoding jpeg / webp")
    g.add_argument("--resize", choices=("crop", "stretch", "none"), default="crop",
                   help="images without alignment: centre square crop + resize, stretch, or keep their size")
    a = p.add_argument_group("alignment")
    a.add_argument("--template", choices=TEMPLATES, default="lightcnn_train",
                   help="alignment template (scaled to --size) for images with landmarks")
    a.add_argument("--landmarks", metavar="FILE", default=None,
                   help="5-point landmarks file: 'name x1 y1 ... x5 y5' per line (the name is everything before the "
                        "10 numbers, spaces included), names matching the end of image paths; a name matching several "
                        "images, or points that put the crop outside the image, skip the image")
    a.add_argument("--fiducials", metavar="DIR", default=None,
                   help="CFP Fiducials folder (<id>/<frontal|profile>/NN.txt, 30 points each) for a CFP Images "
                        "source: each image is aligned with the 5 points derived for its pose (from its "
                        "frontal/profile folder, stored as the pose attribute); images without one are skipped")
    a.add_argument("--detect", metavar="MODEL", default=None,
                   help="detect the main face (the largest, penalised by its distance from the image centre) "
                        "with this detector (InsightFace pack name, detector .onnx, YuNet .onnx or yunet:PATH) "
                        "for images without landmarks; images without a face are skipped")
    a.add_argument("--antialias", action="store_true",
                   help="blur faces larger than the crop to its resolution before the warp instead of point-sampling "
                        "them (off: the plain bilinear warp, how the shipped models' corpora were built)")
    a.add_argument("--align-method", choices=ALIGN_METHODS, default="similarity",
                   help="how a face is cropped from its landmarks: similarity = the least-squares 5-point fit (how the "
                        "shipped models' corpora were built); eyes = the original Light CNN recipe (eyes level, eye "
                        "midpoint and eye-to-mouth height exactly the template's: (72, 48) and 48 px at 144), for "
                        "fine-tuning an official Light CNN release on crops like its own")
    a.add_argument("--det-size", type=int_at_least(32), default=640,
                   help="detector input size (at least 32; a multiple of 32 for InsightFace detectors, any for YuNet)")
    a.add_argument("--det-threshold", type=unit_interval, default=0.5, help="detector score threshold, in [0, 1]")
    a.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="detector device")
    a.add_argument("--source-template", choices=TEMPLATES, default=None,
                   help="the source images are already aligned crops with this template; they are re-aligned to "
                        "--template (None = unaligned, except RecordIO sources: the template lightface's export "
                        "recorded beside the .rec, else arcface)")
    s = p.add_argument_group("build")
    s.add_argument("--root", default=None, help="root folder of relative paths in a list file (None = the list file's folder)")
    s.add_argument("--workers", type=non_negative_int, default=0, help="parallel decode/align/encode processes (0 = main process)")
    s.add_argument("--shuffle", action="store_true", help="store samples in a random order (fixed by --seed)")
    s.add_argument("--seed", type=int, default=0, help="shuffle seed")
    s.add_argument("--batch-size", type=positive_int, default=256, help="samples per LMDB commit")
    s.add_argument("--resume", action="store_true", help="continue an interrupted build of OUT (same arguments)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset at OUT")
    s.add_argument("--strict", action="store_true", help="exit with code 1 when any file was skipped")
    s.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.info or args.verify:
        path = args.info or args.verify
        try:
            if args.info:
                print(json.dumps(read_metadata(path), indent=2))
                return 0
            report = verify_lmdb(path, progress=not args.no_progress)
        except (FileNotFoundError, LMDBFormatError) as err:
            logger.error("%s", err)
            return 1
        print(json.dumps(report, indent=2))
        if not report["ok"]:
            logger.error("%s: %d problems found", path, report["error_count"])
        return 0 if report["ok"] else 1
    if not args.src or not args.out:
        logger.error("give SRC and OUT (or --info OUT / --verify OUT); see --help")
        return 2
    if args.detect:  # before any work: a bad detector option is the command line's fault, not the first image's
        try:
            check_detector_options(args.detect, args.det_size, args.det_threshold)
        except (ValueError, DetectorError) as err:
            logger.error("--detect %s --det-size %d --det-threshold %g: %s", args.detect, args.det_size,
                         args.det_threshold, err)
            return 2
    try:
        summary = build_lmdb(
            args.src, args.out, size=args.size, color=args.color, encoding=args.encoding, quality=args.quality,
            template=args.template, landmarks=args.landmarks, fiducials=args.fiducials, detect=args.detect, det_size=args.det_size,
            det_threshold=args.det_threshold, source_template=args.source_template, resize=args.resize,
            antialias=args.antialias, align_method=args.align_method, list_root=args.root, workers=args.workers, shuffle=args.shuffle, seed=args.seed, resume=args.resume,
            overwrite=args.overwrite, batch_size=args.batch_size, device=args.device,
            progress=not args.no_progress,
        )
    except (FileExistsError, FileNotFoundError, NotADirectoryError, ValueError, DatasetLockedError,
            WorkerDiedError) as err:
        logger.error("%s", err)
        return 1
    except OSError as err:  # a full disk, permissions: one line, not a traceback
        logger.error("cannot write %s: %s", args.out, err)
        return 1
    print(json.dumps(summary, indent=2))
    if not summary["ok"]:
        return 1
    if args.strict and summary["skipped"]:
        logger.error("--strict: %d files were skipped (see %s)", summary["skipped"], summary["report"])
        return 1
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    """The command line: ``main``'s exit status; 130 (143) with a one-line hint after Ctrl-C (SIGTERM): an
    unfinished build continues with ``--resume``; without it the next run starts over."""
    try:
        with sigterm_as_interrupt():
            return main(get_args_parser().parse_args(argv))
    except KeyboardInterrupt:
        return interrupted("build_lmdb", RESUME_FLAG_HINT)


if __name__ == "__main__":
    sys.exit(cli())
