"""Super-resolution quality: a super-resolver against bicubic on faces it never saw.

    python -m benchmarks.sr_quality                                   # the shipped 4x model
    python -m benchmarks.sr_quality --scale 4 --identity-weights ours=recognition independent=dlib
    python -m benchmarks.sr_quality --scale 8 --identity-weights ours=recognition other=runs/other/model.pt
    python -m benchmarks.sr_quality --weights runs/sr4/model.pt --heldout ~/lightface_sr/val.lmdb

Sets (each skipped when absent):

* ``celeba_hq``: the 10 CelebA-HQ photos of ``../shared/data/celeba_hq`` (never in the SR
  corpus): the main face detected, aligned to the Light CNN template at 128;
* ``celeba_hq_ffhq``: the same photos resized whole to 128, i.e. in their own FFHQ-style
  framing (a smaller, lower face than the template's: how faces framed by another tool look);
  PSNR, SSIM, spots and blur only (the identity networks expect template-aligned faces);
* ``heldout``: aligned 128 crops of identities held out of the SR corpus
  (``OUT_OF_build_sr_corpus/val.lmdb``, or a folder of aligned crops), at most ``--max-heldout``.

Each HR face is downscaled by the factor (antialiased bicubic), then upscaled by the model
and by bicubic and compared with the HR face
(:func:`lightface.restore.super_resolver.evaluate_super_resolution`: PSNR and SSIM on RGB
from :mod:`lightface.eval.image_quality`, spurious dark spots per face (hallucinated texture,
``spurious_spots``), perceptual blur of bicubic, ours and the HR face (``blur``: 0 sharp, 1
blurred; PSNR favours soft outputs, this shows how much detail came back), identity cosine from
:func:`lightface.eval.identity.identity_cosine`) with every identity network given
(``--identity-weights NAME=SPEC``: a Light CNN as a shipped entry's name or a checkpoint
path, or ``dlib``, dlib's ResNet recogniser, independent of this project's training (needs
``pip install 'lightface[teacher]'``; the cosine of its 128-d descriptors, though dlib
itself decides by Euclidean distance < 0.6); default: the shipped recogniser, when one
ships). Prints one table row per set and model, the gain
over bicubic and issue 13's bar (4x: >= +2.0 dB and >= +0.12 identity cosine; 8x: >= +1.5
dB and >= +0.10); writes ``OUT/sr_quality.json``, ``OUT/<set>/contact_sheet.png`` (rows:
LR | bicubic | ours | HR) and, with a detector, ``OUT/whole_photo.png`` (a real photo's faces region,
bicubic | faces restored and pasted back; above / below when wide).
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from benchmarks._table import text_table
from lightface.data.io import write_image
from pipelines._argtypes import device_name, positive_int, refuse_missing_path, shared_dir, weights_spec

log = logging.getLogger("benchmarks.sr_quality")

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
#: issue 13's bar: scale -> (PSNR gain in dB, identity-cosine gain) over bicubic
BAR = {4: (2.0, 0.12), 8: (1.5, 0.10)}


def _identity_networks(specs: Optional[List[str]]) -> Dict[str, str]:
    """``--identity-weights NAME=SPEC ...`` -> {name: checkpoint path or "dlib"} (no spec: the shipped recogniser)."""
    from lightface.losses.identity import resolve_identity_weights
    from lightface.models.dlib_recognizer import DLIB, is_dlib_spec

    if not specs:
        path = resolve_identity_weights(None, "the identity cosine")
        return {"shipped": path} if path else {}
    nets = {}
    for i, spec in enumerate(specs):
        name, _, path = spec.rpartition("=")
        resolved = DLIB if is_dlib_spec(path) else resolve_identity_weights(path, "the identity cosine")
        if resolved:
            nets[name or f"id{i}"] = resolved
    return nets


def heldout_faces(source: Path, out: Path, limit: int) -> List[Path]:
    """Aligned HR crops as PNG files: an LMDB (written to ``out``, evenly spread) or a folder of images."""
    if not (source / "data.mdb").is_file():
        from lightface.restore.folder import list_images

        return list_images([source], recursive=True)[:limit]
    from lightface.data import LMDBDataset

    ds = LMDBDataset(str(source))
    out.mkdir(parents=True, exist_ok=True)
    picks = np.linspace(0, len(ds) - 1, min(limit, len(ds))).round().astype(int)
    paths = []
    for i in dict.fromkeys(int(k) for k in picks):
        path = out / f"{i:05d}.png"
        if not path.is_file():
            write_image(path, ds[i]["image"])
        paths.append(path)
    return paths


def whole_photo(resolver, photo: Path, out: Path) -> Optional[Path]:
    """bicubic | restored (or above / below for wide regions) for one real photo (faces detected,
    restored, pasted back), cropped to the faces' region."""
    from lightface.data.io import read_image

    img = read_image(photo, "bgr")
    restored, faces = resolver.restore(img)
    if not faces:
        return None
    h, w = img.shape[:2]
    s = resolver.scale
    bicubic = cv2.resize(img, (w * s, h * s), interpolation=cv2.INTER_CUBIC)
    boxes = np.stack([f.box for f in faces]) * s  # the faces' region (with a margin), where the difference is
    x1, y1 = boxes[:, :2].min(0)
    x2, y2 = boxes[:, 2:].max(0)
    mx, my = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
    x1, y1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
    x2, y2 = int(min(w * s, x2 + mx)), int(min(h * s, y2 + my))
    axis = 0 if x2 - x1 > y2 - y1 else 1  # wide regions: bicubic above, restored below
    side = np.concatenate([bicubic[y1:y2, x1:x2], restored[y1:y2, x1:x2]], axis=axis)
    if side.shape[1] > 2400:
        f = 2400 / side.shape[1]
        side = cv2.resize(side, (2400, int(side.shape[0] * f)), interpolation=cv2.INTER_AREA)
    write_image(out, side)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser("benchmarks.sr_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, type=weights_spec("super_resolution"),
                   help="super-resolver checkpoint or shipped name; default: the shipped "
                   "model for --scale")
    p.add_argument("--scale", type=int, choices=(4, 8), default=None, help="which shipped model (default 4)")
    p.add_argument("--identity-weights", nargs="*", default=None, metavar="NAME=SPEC",
                   help="identity networks for the identity cosine: Light CNN checkpoints or shipped names, or "
                        "'dlib' (dlib's ResNet recogniser, independent; pip install 'lightface[teacher]'); "
                        "default: the shipped recogniser")
    p.add_argument("--celeba-hq", default=str(SHARED / "data" / "celeba_hq"),
                   help="HR photos (detected + aligned; and resized whole: celeba_hq_ffhq); 'none': leave them out")
    p.add_argument("--heldout", default=None, help="aligned HR crops of held-out people: val.lmdb of "
                   "pipelines.build_sr_corpus (--val-only builds it alone) or a folder")
    p.add_argument("--max-heldout", type=positive_int, default=100, help="held-out faces scored (default: %(default)s)")
    p.add_argument("--detector", default=str(SHARED / "models" / "det_500m.onnx"),
                   help="face detector for celeba_hq and the whole photo; 'none': no detector (default: %(default)s)")
    p.add_argument("--photo", default=None, help="a real photo to restore whole (default: the first of "
                   "../shared/data/real_lq_faces/*whole_imgs)")
    p.add_argument("--out", default=str(ROOT / "runs" / "sr_quality"), help="output folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", type=device_name, help="(default: %(default)s)")
    p.add_argument("--no-flip-ensemble", action="store_true", help="score one forward pass per face instead of "
                   "SuperResolver's default flip ensemble")
    args = p.parse_args(argv)
    if args.heldout and not Path(args.heldout).exists():  # a typo would silently leave the held-out set out
        p.error(f"--heldout {args.heldout}: no such LMDB or folder (python -m pipelines.build_sr_corpus --data "
                "../shared/data --out SR --val-only writes SR/val.lmdb)")
    if args.photo and not Path(args.photo).is_file():
        p.error(f"--photo {args.photo}: no such file")
    refuse_missing_path(p, args, "celeba_hq", f"no such folder (HR photos, e.g. {SHARED / 'data' / 'celeba_hq'}; "
                        "'none' leaves the celeba_hq sets out)", Path.is_dir, none_ok=True)
    refuse_missing_path(p, args, "detector", "no such file (a 5-point ONNX face detector, e.g. "
                        f"{SHARED / 'models' / 'det_500m.onnx'}; 'none' for no detector)", Path.is_file, none_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from lightface.models.pretrained import PretrainedError
    from lightface.restore.folder import list_images
    from lightface.restore.super_resolver import SuperResolver, evaluate_super_resolution

    detector = args.detector if args.detector and Path(args.detector).exists() else None
    try:
        resolver = SuperResolver(args.weights, device=args.device, detector=detector, scale=args.scale,
                                 flip_ensemble=not args.no_flip_ensemble)
    except PretrainedError as err:
        if args.weights is not None:  # weights asked for by name and unusable: not a reason to skip
            p.error(str(err))
        print(f"benchmarks.sr_quality: skipped: {err}")
        return 0
    model_name = resolver.pretrained.name if resolver.pretrained is not None else str(args.weights)
    nets = _identity_networks(args.identity_weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    if args.celeba_hq and Path(args.celeba_hq).is_dir():
        photos = list_images([args.celeba_hq], recursive=True)
        if detector:
            sets["celeba_hq"] = (photos, False, True)
        sets["celeba_hq_ffhq"] = (photos, True, False)
    if args.heldout and Path(args.heldout).exists():
        sets["heldout"] = (heldout_faces(Path(args.heldout), out / "heldout_hr", args.max_heldout), True, True)
    if not sets:
        print("benchmarks.sr_quality: skipped, no HR faces (celeba_hq with a detector, or --heldout)")
        return 0

    report = {"model": model_name, "scale": resolver.scale, "flip_ensemble": resolver.flip_ensemble,
              "identity_networks": nets, "sets": {}}
    for name, (paths, aligned, judged) in sets.items():  # judged: template-aligned, so identity is measured
        result = {}
        for k, (net_name, net) in enumerate((list(nets.items()) if judged else []) or [(None, None)]):
            r = evaluate_super_resolution(resolver, paths, aligned=aligned, identity_weights=net,
                                          sheet_path=out / name / "contact_sheet.png" if k == 0 else None)
            m = r["mean"]
            result.setdefault("count", r["count"])
            result.setdefault("skipped", len(r["skipped"]))
            for key in ("psnr_bicubic", "psnr_sr", "ssim_bicubic", "ssim_sr", "spots_bicubic", "spots_sr",
                        "blur_bicubic", "blur_sr", "blur_hr"):
                result.setdefault(key, m[key])
            if net_name is not None:
                result[f"id_cos_bicubic[{net_name}]"] = m["id_cos_bicubic"]
                result[f"id_cos_sr[{net_name}]"] = m["id_cos_sr"]
        report["sets"][name] = result

    bar = BAR.get(resolver.scale)
    print(f"\n{model_name}: {resolver.scale}x ({resolver.input_size} -> {resolver.output_size}); "
          f"identity networks: {', '.join(f'{k}={v}' for k, v in nets.items()) or 'none'}")
    header = ["set", "n", "PSNR bic", "PSNR ours", "gain", "SSIM bic", "SSIM ours", "spots bic", "spots ours",
              "blur bic", "blur ours", "blur HR"]
    header += [f"{col} [{net_name}]" for net_name in nets for col in ("id bic", "id ours", "id gain")]
    rows = []
    for name, r in report["sets"].items():
        gain = r["psnr_sr"] - r["psnr_bicubic"]
        row = [name, r["count"], f"{r['psnr_bicubic']:.2f}", f"{r['psnr_sr']:.2f}", f"{gain:+.2f}",
               f"{r['ssim_bicubic']:.4f}", f"{r['ssim_sr']:.4f}", f"{r['spots_bicubic']:.1f}", f"{r['spots_sr']:.1f}",
               f"{r['blur_bicubic']:.3f}", f"{r['blur_sr']:.3f}", f"{r['blur_hr']:.3f}"]
        verdict = []
        for net_name in nets:
            if f"id_cos_sr[{net_name}]" not in r:
                row += ["-", "-", "-"]
                continue
            b, s = r[f"id_cos_bicubic[{net_name}]"], r[f"id_cos_sr[{net_name}]"]
            row += [f"{b:.4f}", f"{s:.4f}", f"{s - b:+.3f}"]
            if bar:
                verdict.append(f"id[{net_name}] {'meets' if s - b >= bar[1] else 'misses'} +{bar[1]}")
        if bar:
            verdict.insert(0, f"PSNR {'meets' if gain >= bar[0] else 'misses'} +{bar[0]} dB")
            r["bar"] = verdict
        rows.append(row + ["; ".join(verdict)])
    print(text_table(header + ["bar"], rows, align="l" + "r" * (len(header) - 1) + "l"))
    photo = Path(args.photo) if args.photo else next(iter(sorted((SHARED / "data" / "real_lq_faces").glob(
        "*whole_imgs/*.jpg"))), None) if (SHARED / "data" / "real_lq_faces").is_dir() else None
    if detector and photo is not None and Path(photo).is_file():
        written = whole_photo(resolver, Path(photo), out / "whole_photo.png")
        if written:
            report["whole_photo"] = {"input": str(photo), "image": str(written)}
            print(f"whole photo {photo}: bicubic | restored -> {written}")
    (out / "sr_quality.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'sr_quality.json'} and contact sheets {', '.join(str(out / n / 'contact_sheet.png') for n in sets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
