"""Super-resolution under degraded inputs: several super-resolvers side by side, by LR degradation.

    python -m benchmarks.sr_robustness --heldout ~/lightface_sr/val.lmdb                  # every shipped 4x model
    python -m benchmarks.sr_robustness --heldout ~/lightface_sr/val.lmdb --scale 8        # every shipped 8x model
    python -m benchmarks.sr_robustness --heldout ~/lightface_sr/val.lmdb --weights sr4 runs/sr4/model.pt

The HR faces (aligned 128 crops of people held out of the SR corpus: ``val.lmdb`` of
``pipelines.build_sr_corpus``, or a folder of crops) are degraded once per condition, with
:class:`lightface.data.degradation.Degradation` and a fixed seed, so every model reads the
same LR faces:

* ``clean``: antialiased bicubic downscale only (what ``benchmarks.sr_quality`` measures);
* ``mixed``: a random antialiased bicubic, bilinear or area kernel; blur, noise and JPEG
  each with probability 0.3 (the training mix of ``train_super_resolution``'s defaults until
  session 21, which added the aliased kernels);
* ``heavy``: blur, then downscale, noise and JPEG, all on every face (the ``mixed`` kernels);
* ``area``, ``bicubic_aliased``, ``bilinear_aliased``: a clean downscale with OpenCV's
  ``INTER_AREA``, ``INTER_CUBIC`` or ``INTER_LINEAR`` (the last two without antialiasing: the
  LR faces ``cv2.resize`` and ``torch.nn.functional.interpolate`` make by default).

Prints PSNR (dB, RGB, :func:`lightface.eval.image_quality.psnr`) of bicubic and of each model, with
each model's gain over bicubic, the bicubic baseline made as ``benchmarks.sr_quality`` makes it
(Pillow's bicubic, the kernel of MATLAB's ``imresize``, on the uint8 LR face: :func:`bicubic_upscale`),
so the ``clean`` row's bicubic PSNR is sr_quality's on the same faces. By default they are not the
same faces: this benchmark reads the first ``--max-faces`` of ``--heldout``, sr_quality
spreads its ``--max-heldout`` over the LMDB; of the 121 faces of ``val.lmdb`` (CFP's first) the
default 100 are 97 CFP and 3 CelebA faces here, 83 of them there, and bicubic scores 24.54 dB here,
25.09 dB there at 4x. Writes ``--out`` as JSON when given (with the model each name or alias
meant). A model trained for clean inputs gains more on ``clean`` and less on ``heavy``: this is
that trade-off, measured; one trained on antialiased kernels only falls below bicubic on the
aliased ones.
"""
import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from pipelines._argtypes import positive_int, weights_spec

#: condition -> Degradation keyword arguments (the scale is added)
_MIX = ("bicubic", "bilinear", "area")
CONDITIONS: Dict[str, dict] = {
    "clean": dict(methods=("bicubic",), blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0),
    "mixed": dict(methods=_MIX, blur_prob=0.3, noise_prob=0.3, jpeg_prob=0.3),
    "heavy": dict(methods=_MIX, blur_prob=1.0, noise_prob=1.0, jpeg_prob=1.0),
    **{kernel: dict(methods=(kernel,), blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)
       for kernel in ("area", "bicubic_aliased", "bilinear_aliased")},
}


def degraded_pairs(faces: Sequence, scale: int, condition: str, seed: int = 0):
    """``(LR (N,3,h,w), HR (N,3,128,128))`` float RGB tensors in [0, 1] of ``faces`` (uint8 BGR
    128 crops, or the LMDB items holding them) under ``condition``, reproducibly for a seed."""
    from lightface.data.degradation import Degradation, SRPairDataset

    random.seed(seed)
    np.random.seed(seed)
    deg = Degradation(scale, **CONDITIONS[condition])
    deg.pipeline.set_random_seed(seed)
    ds = SRPairDataset(faces, 128, deg)
    pairs = [ds[i] for i in range(len(faces))]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: (N, 3, h, w) RGB float LR faces in [0, 1] (uint8 values / 255, as
    :func:`degraded_pairs` gives them) upscaled by ``scale`` with Pillow's bicubic
    (:func:`lightface.data.degradation.resize`), exactly as ``benchmarks.sr_quality`` and
    :func:`lightface.restore.super_resolver.evaluate_super_resolution` make it, not with
    ``torch``'s bicubic (another kernel, a = -0.75: about 0.2 dB above Pillow's on 4x faces)."""
    from lightface.data.convert import image_to_tensor, tensor_to_image
    from lightface.data.degradation import resize

    h, w = lr.shape[-2:]
    up = [resize(face, (w * scale, h * scale), "bicubic") for face in tensor_to_image(lr, color="rgb")]
    return image_to_tensor(up, color="rgb", batch=True).to(lr.device)


def load_super_resolvers(weights: Sequence[str], flip_ensemble: bool = True, scale: Optional[int] = None):
    """``({weights: SuperResolver}, their factor)`` on the CPU, each given as a shipped name, an alias or a
    model file.

    Raises:
        ValueError: the models upscale by different factors, or not by ``scale`` (when given).
    """
    from lightface.restore import SuperResolver

    models = {w: SuperResolver(w, device="cpu", flip_ensemble=flip_ensemble) for w in weights}
    scales = {m.scale for m in models.values()}
    if len(scales) != 1:
        raise ValueError(f"--weights mixes scales {sorted(scales)}; compare models of one factor")
    got = scales.pop()
    if scale is not None and got != scale:
        raise ValueError(f"--weights {' '.join(weights)}: {got}x models, but --scale asks for {scale}x; pass "
                         f"--scale {got} or leave --scale out")
    return models, got


def run(weights: List[str], faces: Sequence, batch: int = 20, flip_ensemble: bool = True,
        scale: Optional[int] = None, models: Optional[dict] = None) -> Dict[str, Dict[str, float]]:
    """``{condition: {"bicubic": psnr, model: psnr, ...}}`` for the given super-resolvers
    (:meth:`SuperResolver.upscale_tensor`, with or without its flip ensemble); ``models``: those
    :func:`load_super_resolvers` loaded for ``weights`` (else they are loaded here).

    Raises:
        ValueError: as :func:`load_super_resolvers`.
    """
    from lightface.eval.image_quality import psnr

    if models is None:
        models, scale = load_super_resolvers(weights, flip_ensemble, scale)
    else:
        scale = next(iter(models.values())).scale
    out: Dict[str, Dict[str, float]] = {}
    for condition in CONDITIONS:
        lr, hr = degraded_pairs(faces, scale, condition)
        row: Dict[str, float] = {}
        with torch.no_grad():
            row["bicubic"] = float(np.mean(psnr(bicubic_upscale(lr, scale), hr)))
            for name, sr in models.items():
                pred = torch.cat([sr.upscale_tensor(lr[i : i + batch]) for i in range(0, len(lr), batch)])
                row[name] = float(np.mean(psnr(pred, hr)))
        out[condition] = row
    return out


def format_table(table: Dict[str, Dict[str, float]], weights: Sequence[str]) -> str:
    """:func:`run`'s table as text: one line per condition, bicubic's PSNR, then each model's PSNR with its
    gain over bicubic in brackets, every column as wide as its longest model or condition name."""
    from benchmarks._table import text_table

    rows = [[condition, f"{row['bicubic']:.2f}"] + [f"{row[w]:.2f} ({row[w] - row['bicubic']:+.2f})" for w in weights]
            for condition, row in table.items()]
    return text_table(["condition", "bicubic", *weights], rows)


def shipped_super_resolvers(scale: int) -> List[str]:
    """Names of every shipped super-resolver of ``scale`` (their builder kwargs' ``scale``)."""
    from lightface.models import list_pretrained

    return [w["name"] for w in list_pretrained("super_resolution") if w["model_kwargs"].get("scale") == scale]


def _faces(source: str, limit: int):
    """The first ``limit`` HR faces of a lightface LMDB or an image folder."""
    from torch.utils.data import Subset

    from lightface.engine.sr_trainer import open_hr_source

    base = open_hr_source(source, flag="--heldout")
    return Subset(base, range(min(limit, len(base))))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sr_robustness", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--heldout", default=None,
                   help="aligned 128 HR face crops: a lightface LMDB (the val.lmdb of python -m "
                        "pipelines.build_sr_corpus --val-only) or a folder; without it the benchmark is skipped")
    p.add_argument("--weights", nargs="+", default=None, type=weights_spec("super_resolution"),
                   help="super-resolvers (shipped names / aliases or model files); default: every shipped model "
                        "of --scale")
    p.add_argument("--scale", type=int, choices=(4, 8), default=None,
                   help="factor of the default shipped models (default: 4); with --weights, the factor they must have")
    p.add_argument("--max-faces", type=positive_int, default=100,
                   help="the first N faces of --heldout (of val.lmdb: its CFP faces come first)")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--no-flip-ensemble", action="store_true", help="one forward pass per face instead of "
                   "SuperResolver's default flip ensemble")
    return p


def main(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    if args.heldout is None:
        print("benchmarks.sr_robustness: skipped: no --heldout faces (aligned 128 HR crops; python -m "
              "pipelines.build_sr_corpus --data ../shared/data --out SR --val-only writes SR/val.lmdb)")
        return {}
    weights = args.weights or shipped_super_resolvers(args.scale or 4)
    if not weights:
        raise SystemExit(f"benchmarks.sr_robustness: no {args.scale or 4}x super-resolution model ships in this "
                         "install; pass --weights")
    faces = _faces(args.heldout, args.max_faces)
    try:
        models, scale = load_super_resolvers(weights, not args.no_flip_ensemble, args.scale)
    except ValueError as err:
        raise SystemExit(f"benchmarks.sr_robustness: {err}") from None
    table = run(weights, faces, models=models)
    print(f"{scale}x, PSNR (dB, RGB) on {len(faces)} faces of {args.heldout}, gain over bicubic in brackets"
          f"{'' if args.no_flip_ensemble else ', flip ensemble'}:")
    print(format_table(table, weights))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        # what each --weights was: an alias (sr4) moves to newer models, a file may be replaced
        shipped = {w: m.pretrained.name if m.pretrained is not None else str(Path(w).resolve())
                   for w, m in models.items()}
        record = {"weights": weights, "models": shipped, "scale": scale, "flip_ensemble": not args.no_flip_ensemble,
                  "faces": len(faces),
                  "metric": "PSNR (dB), RGB, data range 255, no border crop, mean over faces",
                  "bicubic": "Pillow bicubic of the uint8 LR face (benchmarks.sr_quality's baseline)", "psnr": table}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(get_args_parser().parse_args())
    sys.exit(0)
