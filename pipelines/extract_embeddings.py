"""Extract Light CNN embeddings for a folder tree, one image or an image list.

    python -m pipelines.extract_embeddings -i photos/ -o embeddings.npz     # the shipped recogniser
    python -m pipelines.extract_embeddings --weights LightCNN_29Layers_V2_checkpoint.pth.tar \\
        -i photos/ -o embeddings.npz
    python -m pipelines.extract_embeddings --weights W -i list.txt --root crops/ --aligned \\
        -o feats/ --format feat

Outputs: ``npz``: one file with ``embeddings`` float32 (N, 256) L2-normalised, ``paths``
(N,) image paths (relative to the folder, or as written in the list file), ``root`` the absolute folder they are
relative to, ``file_sha256`` (N,) the sha256 of each image file (with ``root``, what lets ``python -m pipelines.enroll``
recognise photos already enrolled from the folder, and the reverse), ``failed_paths`` /
``failed_errors`` for images that could not be embedded, and ``weights_name`` /
``weights_sha256`` / ``weights_arch`` naming the model that made them and ``settings`` (JSON text: the embedder's
settings, :meth:`lightface.embed.FaceEmbedder.settings`, as ``manifest.json`` holds them); written atomically (an interrupted run never leaves half a file). ``feat``: one raw little-endian float32 file of 256 values per image, at
``OUT/<relative path without extension>.feat`` (the layout of the original Light CNN
extraction tool; our values are L2-normalised, which leaves cosine scores unchanged; paths
outside the root, e.g. absolute ones in a list file, are taken relative to the images' common
folder, and ``face.jpg`` + ``face.png`` become ``face_jpg.feat`` + ``face_png.feat``: see :func:`feat_names`),
plus ``OUT/failures.tsv`` listing the images of this run that failed (removed when none did; an earlier run's
``.feat`` of an image that fails now is removed), and ``OUT/manifest.json`` naming the weights and the settings
that made the folder's features: a folder made with other weights or settings (or holding ``.feat`` files and no
manifest) is refused before any work, never mixed.
Bad files are skipped and reported. ``-o`` is checked before any work: a file given for
``--format feat``, a folder or a path ending in ``/`` for ``npz``, is refused.

Long runs keep their progress (every ``--save-every`` images, and on Ctrl-C or SIGTERM) in
``OUTPUT.partial.npz`` (npz) or ``OUT/.partial.npz`` (feat): the same command after a crash,
a kill or Ctrl-C continues where that file ends, and the file is removed when the output is
complete. A progress file of another extraction (other inputs: another folder, list file or
``--root``, or image files changed since; other weights or flags) is refused, never mixed in.
Exit status 1 with a one-line message when no image could be embedded or the input,
weights or config are unusable; 2 for a bad command line.
"""
import argparse
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from lightface.data.align import ALIGN_METHODS
from lightface.data.detect import MIN_THRESHOLD
from lightface.data.io import IMAGE_EXTENSIONS, has_image_extension, log_left_out
from lightface.data.folders import image_files
from lightface.embed import RESCUE_THRESHOLD, settings_changes
from lightface.models.pretrained import sha256_of
from lightface.data.sources import read_list_lines
from lightface.utils.atomic_write import atomic_file, write_text_atomic
from lightface.utils.output_names import unique_output_names
from lightface.utils.precision import PRECISIONS
from lightface.utils.templates import ALIGNED_TEMPLATES
from pipelines._argtypes import int_at_least, positive_int, rescue_threshold, unit_interval
from pipelines._cli import NULLABLE, DefaultsHelpFormatter

logger = logging.getLogger("pipelines.extract_embeddings")


def add_flip_argument(p: argparse.ArgumentParser, whose: str = "") -> argparse.ArgumentParser:
    """``--flip`` / ``--no-flip`` (default None: FaceEmbedder follows the weights' model card); ``whose`` names
    what it applies to in the help."""
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help=f"flip fusion{whose}: average the features of the face and its mirror (twice the compute); "
                        "default: the weights' model card (the shipped recogniser: on), off for other weights")
    return p


def add_align_method_argument(p: argparse.ArgumentParser, whose: str = "") -> argparse.ArgumentParser:
    """``--align-method`` (default ``auto``: ``FaceEmbedder(align_method="auto")`` picks it by the weights); ``whose``
    names what it applies to in the help."""
    p.add_argument("--align-method", default="auto", choices=("auto",) + ALIGN_METHODS,
                   help=f"how a face is cropped from its landmarks (detected, or given){whose}: similarity = the "
                        "least-squares 5-point fit the shipped recognisers and lightface checkpoints were trained on; "
                        "eyes = the original Light CNN recipe (eyes level, eye midpoint (64, 40), mouth midpoint 48 px "
                        "below); auto = eyes for an official Light CNN release (.pth.tar, or an .onnx / .pt "
                        "exported from one), similarity otherwise")
    return p


def add_embedder_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The FaceEmbedder flags shared by the recognition CLIs: --weights, --arch, --flip, --aligned-template,
    --align-method, --batch-size, --device, --precision (:func:`embedder_from_args` builds the embedder from them)."""
    p.add_argument("--weights", default=None,
                   help="a lightface checkpoint, an official Light CNN .pth.tar, an exported .onnx (ONNX Runtime) or "
                        "TorchScript .pt (lightface.export), or a shipped model's name; default: the recogniser shipped with lightface (sha256-checked)")
    p.add_argument("--arch", default=None, choices=["lightcnn9", "lightcnn29", "lightcnn29v2"],
                   help="architecture (only needed for a bare state_dict)")
    add_flip_argument(p)
    p.add_argument("--aligned-template", default="auto", choices=ALIGNED_TEMPLATES,
                   help="framing of --aligned crops: auto = Light CNN crops (128, 144) and 112x112 InsightFace ArcFace "
                        "crops (re-aligned); arcface / ffhq: crops of that template at any size, re-aligned")
    add_align_method_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="bfloat16: autocast, up to 1.8x faster where the hardware has native bf16 (CUDA; CPUs "
                        "with AVX512_BF16 or AMX), about 20x slower on other CPUs; embeddings within cosine 0.9998 of "
                        "float32 (docs/benchmarks.md)")
    return p


def add_detector_size_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--det-size`` and ``--det-threshold`` of the recognition CLIs' ``--detector`` (as ``build_lmdb`` has them),
    ``--rescue-threshold`` and ``--antialias`` / ``--no-antialias``: :func:`embedder_from_args` hands them to the
    detector and the embedder (``FaceEmbedder(rescue_threshold=..., antialias=...)``), so that what the embedder's
    and the gallery's warnings advise is a flag here too."""
    p.add_argument("--det-size", type=int_at_least(32), default=640,
                   help="detector input size: each photo is shrunk to fit it, and a face narrower than about 15 px "
                        "at that scale is missed (a 56-px face in a 4000-px photo is 9 px at 640); raise it (1280, "
                        "1920) for small faces in large photos (slower). At least 32; a multiple of 32 for InsightFace "
                        "detectors, any for YuNet")
    p.add_argument("--det-threshold", type=unit_interval, default=0.5,
                   help="detector score threshold in [0, 1] (a photo with no face above it still gets its best "
                        "candidate from --rescue-threshold, with a warning)")
    rescue = p.add_argument(
        "--rescue-threshold", type=rescue_threshold, default=RESCUE_THRESHOLD, metavar="SCORE",
        help=f"a photo where no face reaches --det-threshold (an occluded face: sunglasses, a mask) is embedded from "
             f"its best candidate scoring at least this, with a warning; 'none': no rescue, such a photo fails with "
             f"'no face' (FaceEmbedder(rescue_threshold=...); at least {MIN_THRESHOLD})")
    setattr(rescue, NULLABLE, True)  # `rescue_threshold: null` in a --config file is `none`
    p.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=True,
                   help="blur a face larger in the photo than in the 128-px crop to the crop's resolution before the "
                        "warp, so its embedding does not depend on the photo's resolution "
                        "(FaceEmbedder(antialias=...); default: on)")
    return p


def detector_options(args: argparse.Namespace) -> Dict[str, object]:
    """The ``FaceEmbedder(detector_options=...)`` of :func:`add_detector_size_arguments`' flags."""
    return {"det_size": args.det_size, "threshold": args.det_threshold}


def embedder_from_args(args: argparse.Namespace, detector: Optional[str] = None):
    """The :class:`~lightface.embed.FaceEmbedder` of :func:`add_embedder_arguments`' flags, with ``detector``
    (None: aligned crops only) and the ``--det-size`` / ``--det-threshold`` / ``--rescue-threshold`` /
    ``--antialias`` of :func:`add_detector_size_arguments` when the parser has them."""
    from lightface.embed import FaceEmbedder

    options = detector_options(args) if detector is not None and hasattr(args, "det_size") else None
    return FaceEmbedder(args.weights, arch=args.arch, device=args.device, detector=detector, flip=args.flip,
                        aligned_template=args.aligned_template, precision=args.precision, detector_options=options,
                        align_method=getattr(args, "align_method", "auto"),
                        rescue_threshold=getattr(args, "rescue_threshold", RESCUE_THRESHOLD),
                        antialias=getattr(args, "antialias", True))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.extract_embeddings", add_help=add_help,
                                description="Extract L2-normalised 256-d Light CNN embeddings",
                                formatter_class=DefaultsHelpFormatter)
    add_embedder_arguments(p)
    p.add_argument("-i", "--input", required=True,
                   help="a folder (searched recursively for images, following symlinked folders; hidden folders are "
                        "left out), one image, or a list file (one image path per line; a trailing label column, as "
                        "in Light CNN lists, is ignored; lines starting with # are comments)")
    p.add_argument("--root", default=None, help="folder the list file's paths are relative to (None: the list file's folder)")
    p.add_argument("-o", "--output", required=True, help="output .npz file (--format npz) or folder (--format feat)")
    p.add_argument("--format", default="npz", choices=["npz", "feat"], help="output format")
    p.add_argument("--aligned", action="store_true",
                   help="inputs are aligned crops (Light CNN 128x128 or 144x144; others per --aligned-template); "
                        "default: detect and align "
                        "the main face in each image (the largest, penalised by its distance from the centre)")
    p.add_argument("--save-every", type=positive_int, default=2000,
                   help="images between saves of the progress file (a rerun continues from the last one)")
    p.add_argument("--detector", default="buffalo_l",
                   help="face detector when not --aligned: InsightFace pack name, detector .onnx, a YuNet .onnx, or "
                        "'yunet' (shipped); a pack that cannot be loaded (offline) falls back to the shipped YuNet")
    add_detector_size_arguments(p)
    return p


def collect_inputs(source: str, root: Optional[str] = None) -> Tuple[Path, List[str]]:
    """``(root folder, relative image paths)`` from a folder (recursive as :func:`image_files` walks it:
    symlinked folders followed, each real folder once, hidden files left out; sorted; its other files are
    counted in the log), one
    image or a list file (``#`` lines are comments; a ``#`` inside a path is part of it)."""
    src = Path(source)
    if src.is_dir():
        left_out: List[Path] = []
        rels = sorted(p.relative_to(src).as_posix() for p in image_files(src, left_out))
        log_left_out(logger, src, left_out)
        if not rels:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}")
        return src, rels
    if not src.is_file():
        raise FileNotFoundError(f"input not found: {src} (give a folder, an image or a list file)")
    if has_image_extension(src):
        return src.parent, [src.name]
    base = Path(root) if root else src.parent
    rels = []
    for line in read_list_lines(src, "a folder of images, one image, or a list file of image paths, one per line"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.rsplit(None, 1)
        rel = cols[0] if len(cols) == 2 and cols[1].lstrip("-").isdigit() else line
        rels.append(rel)
    if not rels:
        raise ValueError(f"{src}: the list file names no images")
    return base, rels


def feat_names(base: Path, rels: List[str]) -> List[str]:
    """The ``--format feat`` name of each image (written to ``OUT/<name>.feat``): its path without extension
    relative to ``base`` when every image lies inside ``base``, else relative to the common folder of the images'
    folders (absolute or ``..`` paths in a list file), so no output leaves ``OUT``; names that would clash get the
    extension appended (``face.jpg`` and ``face.png``: ``face_jpg``, ``face_png``), as in :func:`unique_output_names`."""
    top = os.path.abspath(base)
    paths = [os.path.abspath(base / r) for r in rels]
    inside = all(os.path.commonpath([top, p]) == top for p in paths)
    return unique_output_names(paths, [top] * len(paths) if inside else [os.path.dirname(p) for p in paths])


def _output_path(args: argparse.Namespace) -> Path:
    """The output of ``-o``, checked before any work: the ``--format feat`` folder (created), or the ``npz`` file
    (``.npz`` added to a name without it; its folder created).

    Raises:
        NotADirectoryError: ``--format feat`` and ``-o`` is a file.
        IsADirectoryError: ``--format npz`` and ``-o`` ends in ``/`` or the ``.npz`` path is a folder.
    """
    out = Path(args.output)
    if args.format == "feat":
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"-o {out} is a file; --format feat writes one .feat file per image into a "
                                     "folder: give a folder (new or existing) for -o")
        out.mkdir(parents=True, exist_ok=True)
        return out
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    if args.output.endswith(("/", os.sep)) or out.is_dir():
        raise IsADirectoryError(f"-o {args.output} names a folder; --format npz writes one file: give a file "
                                "name such as embeddings.npz, or pass --format feat for one .feat file per image "
                                "in a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _file_stamps(base: Path, rels: List[str]) -> List[Optional[Tuple[int, int]]]:
    """``(size, mtime_ns)`` of each input image (None where it cannot be read): an edited file is another input."""
    stamps: List[Optional[Tuple[int, int]]] = []
    for rel in rels:
        try:
            st = os.stat(base / rel)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_size, st.st_mtime_ns))
    return stamps


def _file_hashes(base: Path, rels: List[str]) -> List[str]:
    """The sha256 of each image file (``""`` where it cannot be read now): with ``root``, what lets a gallery tell
    the npz's faces from photos it enrolled (``FaceGallery.add_npz`` and ``enroll`` match them by content)."""
    out = []
    for rel in rels:
        try:
            out.append(sha256_of(base / rel))
        except OSError:
            out.append("")
    return out


def _inputs(args: argparse.Namespace, base: Path, rels: List[str]) -> Dict[str, object]:
    """What an extraction reads: the resolved input, the folder the paths are relative to, the paths in order and
    each file's size and modification time (one stat per file, shared by both fingerprints)."""
    return {"input": os.path.realpath(args.input), "base": os.path.realpath(base), "inputs": rels,
            "files": _file_stamps(base, rels)}


def _digest(spec: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _fingerprint(inputs: Dict[str, object], made_by: Dict[str, object]) -> str:
    """What makes two extractions the same one: ``inputs`` (:func:`_inputs`) and ``made_by`` (:func:`_made_by`:
    the weights and the embedder's settings, :meth:`~lightface.embed.FaceEmbedder.settings`)."""
    return _digest({**inputs, **made_by})


def _legacy_fingerprint(args: argparse.Namespace, inputs: Dict[str, object], weights_sha256: str, flip: bool) -> str:
    """The fingerprint of a progress file written before :func:`_fingerprint` took the embedder's settings (the
    detector as given on the command line), so that such a run still continues."""
    return _digest({**inputs, "weights": weights_sha256, "aligned": args.aligned, "flip": flip,
                    "precision": args.precision, "template": args.aligned_template,
                    "detector": None if args.aligned else [str(args.detector), detector_options(args)]})


def _load_progress(path: Path, fingerprints: Tuple[str, ...], emb: np.ndarray, failed: Dict[str, str]) -> int:
    """Fill ``emb`` and ``failed`` from the progress file at ``path`` when its fingerprint is one of
    ``fingerprints``; returns the images already done."""
    if not path.is_file():
        return 0
    with np.load(path, allow_pickle=False) as saved:  # plain arrays: loading runs no code
        if str(saved["fingerprint"]) not in fingerprints:
            raise ValueError(f"{path} holds the progress of another extraction (other inputs: another folder, list "
                             "file or --root, or images changed since; other weights or flags); delete it to start "
                             "this one over, or rerun the command that made it")
        done = int(saved["done"])
        emb[:done] = saved["embeddings"]
        failed.update(zip(saved["failed_paths"].tolist(), saved["failed_errors"].tolist()))
    logger.info("resuming from %s: %d of %d images already done", path, done, len(emb))
    return done


def _save_progress(path: Path, fingerprint: str, emb: np.ndarray, done: int, failed: Dict[str, str]) -> None:
    with atomic_file(path) as f:
        np.savez(f, fingerprint=np.array(fingerprint), done=np.array(done), embeddings=emb[:done],
                 failed_paths=np.array(list(failed), dtype=str), failed_errors=np.array(list(failed.values()), dtype=str))


#: ``--format feat``: the file in ``OUT`` naming the model and settings that made its ``.feat`` files
FEAT_MANIFEST = "manifest.json"


def _made_by(args: argparse.Namespace, embedder) -> Dict[str, object]:
    """What an extraction's features depend on besides their images: the weights and the embedder's settings
    (:meth:`~lightface.embed.FaceEmbedder.settings`; for whole photos the detector that runs, after a pack's
    fallback to YuNet, not the one asked for: it is loaded now, before any work)."""
    info = embedder.weights_info
    return {"weights": {"name": info.name, "sha256": info.sha256, "arch": info.arch},
            "settings": embedder.settings(args.aligned)}


def _check_feat_folder(out: Path, made_by: Dict[str, object]) -> None:
    """Refuse a ``--format feat`` folder whose ``.feat`` files another extraction made (other weights or settings, or
    files with no :data:`FEAT_MANIFEST` to say): a rerun rewrites only the images it embeds, so the folder would hold
    features of two models that cannot be told apart. Otherwise write the manifest, before any ``.feat`` file."""
    manifest = out / FEAT_MANIFEST
    fix = (f"give another -o, or delete {out} (its .feat files and {FEAT_MANIFEST}) to extract again with these "
           "weights and settings")
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{manifest}: unreadable ({err}); {fix}") from None
        changes = _changes("weights", old.get("weights"), made_by["weights"])
        if isinstance(old.get("settings"), dict):  # compared as settings_changes does: what both records hold
            changes += [(f"settings.{key}", old_v, new_v)
                        for key, old_v, new_v in settings_changes(old["settings"], made_by["settings"])]
        else:
            changes.append(("settings", old.get("settings"), made_by["settings"]))
        if changes:
            diff = "; ".join(f"{key} {old_v!r} there, {new_v!r} now" for key, old_v, new_v in changes)
            raise ValueError(f"-o {out} holds .feat files of another extraction ({diff}): this one would rewrite "
                             f"only the images it embeds, leaving features of two models mixed in one folder; {fix}")
        if {k: old.get(k) for k in made_by} == made_by:
            return
        # a manifest of an earlier lightface (fewer settings, the detector's path as given): the same extraction,
        # now described in full
    elif next(out.rglob("*.feat"), None) is not None:
        raise ValueError(f"-o {out} holds .feat files but no {FEAT_MANIFEST} naming the weights and settings that made "
                         f"them (another tool, or lightface before it wrote one): they could be mixed with features "
                         f"of another model; {fix}")
    write_text_atomic(manifest, json.dumps({"format": "lightface feat", "version": 1, **made_by}, indent=2) + "\n")


def _changes(part: str, old: object, new: object) -> List[Tuple[str, object, object]]:
    """``(key, old value, new value)`` for each entry of the dicts ``old`` / ``new`` that differs."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [(part, old, new)]
    return [(f"{part}.{k}", old.get(k), new.get(k)) for k in sorted({*old, *new}) if old.get(k) != new.get(k)]


def main(args: argparse.Namespace) -> Dict[str, object]:
    """Run the extraction; returns a summary ``{"count", "failed": {path: message}, "output"}``."""
    from tqdm.auto import tqdm

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    base, rels = collect_inputs(args.input, args.root)
    out = _output_path(args)
    embedder = embedder_from_args(args, None if args.aligned else args.detector)
    info = embedder.weights_info
    made_by = _made_by(args, embedder)
    if args.format == "feat":
        _check_feat_folder(out, made_by)
    progress = out / ".partial.npz" if args.format == "feat" else out.with_name(out.name[:-4] + ".partial.npz")
    inputs = _inputs(args, base, rels)
    fingerprint = _fingerprint(inputs, made_by)
    emb = np.full((len(rels), 256), np.nan, np.float32)
    failed: Dict[str, str] = {}
    # a progress file of before could only have been made with the default rescue and antialiasing
    legacy = (_legacy_fingerprint(args, inputs, info.sha256, embedder.flip),) if (
        embedder.rescue_threshold == RESCUE_THRESHOLD and embedder.antialias) else ()
    done = _load_progress(progress, (fingerprint,) + legacy, emb, failed)
    saved = done
    with tqdm(total=len(rels), initial=done, desc="extracting", unit="img") as bar:
        try:
            for start in range(done, len(rels), args.batch_size):
                chunk = rels[start:start + args.batch_size]
                res = embedder.try_embed([base / r for r in chunk], aligned=args.aligned, batch_size=args.batch_size)
                emb[start:start + len(chunk)] = res.embeddings
                failed.update({chunk[i]: msg for i, msg in res.errors.items()})
                done = start + len(chunk)
                bar.update(len(chunk))
                if done - saved >= args.save_every and done < len(rels):
                    _save_progress(progress, fingerprint, emb, done, failed)
                    saved = done
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (run_cli): keep what was embedded since the last save
            if done > saved:
                _save_progress(progress, fingerprint, emb, done, failed)
                logger.info("progress saved in %s: %d of %d images done", progress, done, len(rels))
            raise
    ok = [i for i, r in enumerate(rels) if r not in failed]
    if args.format == "npz":
        done_rels = [rels[i] for i in ok]
        with atomic_file(out) as f:
            np.savez(f, embeddings=emb[ok], paths=np.array(done_rels), root=np.array(os.path.abspath(base)),
                     file_sha256=np.array(_file_hashes(base, done_rels), dtype=str),
                     failed_paths=np.array(list(failed), dtype=str),
                     failed_errors=np.array(list(failed.values()), dtype=str),
                     weights_name=np.array(info.name), weights_sha256=np.array(info.sha256),
                     weights_arch=np.array(info.arch or ""), settings=np.array(json.dumps(made_by["settings"])))
    else:
        names = feat_names(base, rels)
        for i in ok:
            with atomic_file(out / f"{names[i]}.feat") as f:
                f.write(emb[i].astype("<f4").tobytes())
        stale = [out / f"{names[i]}.feat" for i, r in enumerate(rels) if r in failed]
        stale = [p for p in stale if p.is_file()]
        for p in stale:  # an earlier run's features of an image that fails now (edited, damaged) are not its features
            p.unlink()
        if stale:
            logger.warning("removed %d .feat file(s) of earlier runs whose images failed now (listed in %s), e.g. %s",
                           len(stale), out / "failures.tsv", stale[0])
        if failed:
            write_text_atomic(out / "failures.tsv", "".join(f"{p}\t{m}\n" for p, m in failed.items()))
        else:  # an earlier run's list would name images this run embedded
            (out / "failures.tsv").unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    logger.info("embedded %d of %d images with %s (sha256 %s...) -> %s", len(ok), len(rels), info.name,
                info.sha256[:12], out)
    if failed:
        logger.warning("%d images failed (skipped): %s", len(failed), "; ".join(list(failed.values())[:5]))
    if not ok:
        raise RuntimeError(f"none of the {len(rels)} images could be embedded (listed in {out}): "
                           + "; ".join(list(failed.values())[:3]))
    return {"count": len(ok), "failed": failed, "output": str(out), "weights": info.as_dict()}


if __name__ == "__main__":
    import sys

    from pipelines._cli import RERUN_HINT, run_cli

    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
