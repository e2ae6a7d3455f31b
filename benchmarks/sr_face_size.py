"""Whole-photo super-resolution by face size: the LR crop of a face larger than the model's input.

    python -m benchmarks.sr_face_size                                  # shipped 4x and 8x, faces 1-3x the crop
    python -m benchmarks.sr_face_size --scale 8 --sizes 1 2 4 --weights runs/sr8/model.pt

``SuperResolver.restore`` aligns each detected face to the model's input crop (16 or 32 px).
When the face in the photo is larger than that, a plain bilinear warp
(:func:`lightface.data.align.align_face`) point-samples it and the crop is aliased;
:func:`lightface.restore.paste.antialiased_align` (what ``restore`` uses) blurs the face's
region to the crop's resolution first. For each HR photo (the 10 CelebA-HQ photos by
default) and each ``--sizes`` factor ``g``: the photo is shrunk whole (antialiased bicubic)
so that its main face is ``g`` times the input crop, the face is aligned at the input size
from the HR detection's landmarks (scaled) both ways, super-resolved, upscaled by bicubic
too (Pillow's, the baseline of ``benchmarks.sr_quality`` and ``benchmarks.sr_robustness``:
:func:`lightface.data.degradation.resize`), and compared (PSNR, RGB) with the HR photo's face
on the output grid (the crop's transform with its destination scaled by the factor; the HR
photo blurred to that grid).
Prints PSNR SR / bicubic per size and crop; ``--out`` writes JSON.

``--whole-photo`` measures what a user gets from ``SuperResolver.restore``: the shrunk photo
restored whole (its main face), the face region of the output against the HR photo resized
to the output, PSNR of the photo's bicubic upscale (OpenCV's, as ``restore`` upscales the photo
around its faces), of the face squeezed into the input crop,
super-resolved and pasted (what ``restore`` did before session 43), and of ``restore`` itself
(a face larger than the crop read at its own size, up to ``max_face_shrink``):

    python -m benchmarks.sr_face_size --whole-photo --sizes 0.9 1.25 1.5 2 3 6 12
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from benchmarks._table import text_table
from pipelines._argtypes import positive_float, positive_int, shared_dir, weights_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
CROPS = ("bilinear warp", "antialiased")


def hr_face_on_output_grid(photo: np.ndarray, M_input: np.ndarray, scale: int, size: int) -> np.ndarray:
    """The HR photo's face on the SR output's pixel grid: ``M_input`` (photo -> input crop) with its
    destination scaled by ``scale`` (pixel centres), the photo blurred to that grid first."""
    from lightface.data.align import warp_crop
    from lightface.restore.paste import rescale_affine

    return warp_crop(photo, rescale_affine(M_input, dst_scale=scale), size, antialias=True)


def main_faces(photos: Sequence[Path], detector) -> List[Tuple[Path, np.ndarray, np.ndarray]]:
    """``[(path, uint8 BGR photo, (5, 2) landmarks of its main face)]``; unreadable photos and photos
    without a face are left out with a warning."""
    from lightface.data.detect import main_face

    found = []
    for path in photos:
        hr = cv2.imread(str(path))
        faces = detector.detect(hr) if hr is not None else []
        if not faces:
            logging.warning("%s: unreadable or no face; skipped", path)
            continue
        found.append((path, hr, main_face(faces, hr.shape).landmarks))
    return found


def run(weights: str, scale: int, photos: Sequence[Tuple[Path, np.ndarray, np.ndarray]],
        sizes: Sequence[float]) -> Dict[str, Dict[str, List[float]]]:
    """``{str(size): {crop: [mean PSNR SR, mean PSNR bicubic]}}`` over ``photos`` (:func:`main_faces`)."""
    from lightface.data.align import align_face, estimate_transform
    from lightface.data.degradation import resize
    from lightface.eval.image_quality import psnr
    from lightface.restore import SuperResolver
    from lightface.restore.paste import antialiased_align

    sr = SuperResolver(weights, scale=scale, device="cpu")
    aligners = dict(zip(CROPS, (align_face, antialiased_align)))
    out: Dict[str, Dict[str, List[float]]] = {}
    for g in sizes:
        scores = {name: [] for name in CROPS}
        for _, hr, lm in photos:
            M = estimate_transform(lm, "lightcnn", sr.input_size)
            lr, lm_lr = _shrunk(hr, lm, sr.input_size, g)
            ref = hr_face_on_output_grid(hr, M, scale, sr.output_size)
            for name, align in aligners.items():
                crop, _ = align(lr, lm_lr, "lightcnn", size=sr.input_size)
                bicubic = resize(crop, (sr.output_size,) * 2, "bicubic")
                scores[name].append((psnr(sr.upscale_face(crop), ref), psnr(bicubic, ref)))
        out[f"{g:g}"] = {name: [float(np.mean([v[0] for v in s])), float(np.mean([v[1] for v in s]))]
                         for name, s in scores.items() if s}
    return out


def _shrunk(hr: np.ndarray, landmarks: np.ndarray, input_size: int, g: float):
    """``(LR photo, its landmarks)``: ``hr`` shrunk whole (antialiased bicubic) so that the face of
    ``landmarks`` is ``g`` times the ``input_size`` lightcnn crop."""
    from lightface.data.align import affine_scale, estimate_transform

    k = affine_scale(estimate_transform(landmarks, "lightcnn", input_size)) * g
    h, w = hr.shape[:2]
    lr = np.asarray(Image.fromarray(hr).resize((max(1, round(w * k)), max(1, round(h * k))), Image.BICUBIC))
    return lr, (landmarks + 0.5) * (lr.shape[1] / w) - 0.5


WHOLE = ("bicubic photo", "squeezed crop", "restore")


def run_whole_photo(weights: str, scale: int, photos: Sequence[Tuple[Path, np.ndarray, np.ndarray]],
                    sizes: Sequence[float], detector) -> Dict[str, Dict[str, float]]:
    """``{str(size): {"shrink": mean, kind: mean PSNR of the face region}}`` (kinds: :data:`WHOLE`) over
    ``photos`` (:func:`main_faces`) shrunk so that their main face is ``size`` times the input crop, restored
    whole (``detector`` finds the face again in the shrunk photo)."""
    from lightface.data.align import invert_affine
    from lightface.restore import SuperResolver
    from lightface.restore.paste import antialiased_align, paste_face, rescale_affine

    sr = SuperResolver(weights, scale=scale, device="cpu", detector=detector)
    out: Dict[str, Dict[str, float]] = {}
    for g in sizes:
        rows = []
        for path, hr, lm in photos:
            lr, _ = _shrunk(hr, lm, sr.input_size, g)
            restored, found = sr.restore(lr, only_center_face=True)
            if not found:
                logging.warning("%s at %gx the crop: no face detected; skipped", path, g)
                continue
            face = found[0]
            # the photo upscaled as restore() upscales it (its canvas, and what it keeps for a face past
            # max_face_shrink: OpenCV's bicubic), so that a face restore keeps bicubic scores as this column
            bicubic = cv2.resize(lr, restored.shape[1::-1], interpolation=cv2.INTER_CUBIC)
            crop, M = antialiased_align(lr, face.landmarks, "lightcnn", size=sr.input_size)
            squeezed = paste_face(bicubic, sr.upscale_face(crop), rescale_affine(M, scale, scale))
            region = cv2.warpAffine(np.ones((sr.output_size,) * 2, np.float32),
                                    invert_affine(rescale_affine(M, scale, scale)), restored.shape[1::-1]) > 0.99
            ref = cv2.resize(hr, restored.shape[1::-1], interpolation=cv2.INTER_AREA)[region].astype(np.float64)
            rows.append([face.shrink] + [10 * np.log10(255.0 ** 2 / np.mean((img[region] - ref) ** 2))
                                         for img in (bicubic, squeezed, restored)])
        if rows:
            mean = np.mean(rows, axis=0)
            out[f"{g:g}"] = {"shrink": float(mean[0]), **{k: float(v) for k, v in zip(WHOLE, mean[1:])}}
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sr_face_size", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--photos", default=str(SHARED / "data" / "celeba_hq"), help="folder of HR photos (searched recursively)")
    p.add_argument("--scale", type=int, nargs="+", default=None, choices=(4, 8),
                   help="factors to measure (default: 4 and 8; with --weights, the weights' factor)")
    p.add_argument("--weights", default=None, type=weights_spec("super_resolution"),
                   help="super-resolver (default: the shipped model of each --scale)")
    p.add_argument("--sizes", type=positive_float, nargs="+", default=[1.0, 1.5, 2.0, 3.0],
                   help="face size in the LR photo, in input crops")
    p.add_argument("--detector", default=str(SHARED / "models" / "det_500m.onnx"), help="face detector (FaceDetector spec)")
    p.add_argument("--max-photos", type=positive_int, default=10, help="HR photos read from --photos")
    p.add_argument("--whole-photo", action="store_true",
                   help="restore the shrunk photos whole (SuperResolver.restore) and score the pasted face region")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    return p


def main(args: argparse.Namespace) -> Dict[str, dict]:
    from lightface.data.detect import FaceDetector
    from lightface.data.io import has_image_extension
    from lightface.restore import SuperResolver

    scales = args.scale or [4, 8]
    if args.weights:  # one model measures one factor: the one it was trained for
        trained = SuperResolver(args.weights, device="cpu").scale
        if args.scale and set(args.scale) != {trained}:
            raise SystemExit(f"benchmarks.sr_face_size: --weights {args.weights} is a {trained}x model but --scale "
                             f"asks for {' '.join(map(str, args.scale))}; pass --scale {trained} or leave --scale out")
        scales = [trained]
    photos = sorted(p for p in Path(args.photos).rglob("*") if has_image_extension(p))
    if not photos:
        raise SystemExit(f"benchmarks.sr_face_size: no photos under {args.photos}")
    detector = FaceDetector(args.detector, device="cpu")
    photos = main_faces(photos[: args.max_photos], detector)
    if args.whole_photo:
        table = {f"x{s}": run_whole_photo(args.weights, s, photos, args.sizes, detector) for s in scales}
        print("PSNR (dB):")
        print(text_table(["scale", "face", "shrink", *WHOLE],
                         [[s, g + "x", f"{row['shrink']:.2f}", *(f"{row[k]:.2f}" for k in WHOLE)]
                          for s, rows in table.items() for g, row in rows.items()]))
    else:
        table = {f"x{s}": run(args.weights, s, photos, args.sizes) for s in scales}
        _print_crops(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"photos": len(photos), "psnr": table}, indent=2) + "\n", encoding="utf-8")
    return table


def _print_crops(table: Dict[str, Dict[str, Dict[str, List[float]]]]) -> None:
    print(text_table(["scale", "face", *(f"{c} SR / bicubic" for c in CROPS)],
                     [[s, g + "x", *(f"{row[c][0]:.2f} / {row[c][1]:.2f}" for c in CROPS)]
                      for s, rows in table.items() for g, row in rows.items()]))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(get_args_parser().parse_args())
    sys.exit(0)
