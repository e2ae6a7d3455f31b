"""Super-resolve face crops or whole photos with a wavelet_srnet model (the shipped one by default); optionally score it.

    python -m pipelines.super_resolve -i photos/ -o results/ [--scale 8]       # the shipped 4x (8x) model
    python -m pipelines.super_resolve -i photos/ -o results/ --weights runs/sr4/model.pt --detector ../shared/models/det_500m.onnx
    python -m pipelines.super_resolve -i crops/ -o results/ --weights runs/sr4/model.pt --aligned
    python -m pipelines.super_resolve -i photos/ -o results/ --weights sr4.onnx    # a file of lightface.export
    python -m pipelines.super_resolve -o eval/ --weights runs/sr4/model.pt --evaluate ../shared/data/celeba_hq \\
        --identity-weights lightcnn.pth --detector ../shared/models/det_500m.onnx

Outputs (GFPGAN/CodeFormer layout): OUT/cropped_faces, OUT/restored_faces, OUT/cmp,
OUT/restored_imgs (whole photos), OUT/summary.json; with --evaluate: OUT/evaluation.json
and OUT/contact_sheet.png. A folder is restored with its sub-folders (--no-recursive: its own
images only). Outputs are named after the inputs' paths relative to the folder given
(sub/x.jpg -> restored_imgs/sub/x.jpg; face.jpg + face.png -> face_jpg, face_png), so none
overwrites another. Exit status 1 with a one-line message when every input was skipped or an
input is unusable; 2 for flags that cannot apply together (--aligned with a whole-photo flag).
An interrupted run (crash, kill, Ctrl-C) continues where it stopped when the same command runs
again (OUT/.progress.jsonl journals the inputs done).
"""
import argparse
import json
from pathlib import Path
from typing import Optional

from lightface.restore.folder import RestoreResult, list_images, nothing_restored, restore_paths, settings_key
from lightface.restore.super_resolver import MAX_FACE_SHRINK, SuperResolver, evaluate_super_resolution
from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import positive_float, positive_int, refuse_flags


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("super_resolve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", nargs="+", default=None, help="image files and/or folders to restore (default: none; needed unless --evaluate)")
    p.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True,
                   help="restore the images in the folders' sub-folders too, keeping their relative paths in the "
                        "output names (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--weights", default=None, help="wavelet_srnet checkpoint (the model file of train_super_resolution), "
                   "a shipped entry's name, or a super-resolver exported by lightface.export (an .onnx file, run with "
                   "ONNX Runtime; the .pt of export_torchscript, run with TorchScript on the CPU): its card gives the "
                   "scale and flip ensemble; default: the model that ships for --scale (default: %(default)s)")
    p.add_argument("--scale", type=int, choices=(4, 8), default=None, help="upscaling factor: picks the shipped model "
                   "when --weights is unset (default 4); with --weights, checked against the model (default: %(default)s)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: upscale them directly, no "
                   "detection; each comes out --scale times its size (a crop smaller than the model's input crop is "
                   "enlarged to it first; one larger than --max-face-shrink times it keeps its bicubic upscale, with "
                   "a note) (default: off)")
    p.add_argument("--detector", default="buffalo_l", help="face detector for whole photos: ONNX path (SCRFD / YuNet) or InsightFace model pack name (default: %(default)s)")
    p.add_argument("--max-face-shrink", type=positive_float, default=MAX_FACE_SHRINK, help="a face (whole photos) or "
                   "--aligned crop larger than the model's input crop (32 px at 4x, 16 px at 8x) is restored at its own "
                   "size, up to this many times the crop; a larger one keeps the bicubic upscale, which the shipped "
                   "models no longer beat there; inf: every face (default: %(default)s)")
    p.add_argument("--only-center-face", action="store_true", help="restore only the main face: the largest, penalised by its distance from the image centre (default: off)")
    p.add_argument("--suffix", default=None, help="suffix added to restored file names (default: none)")
    p.add_argument("--ext", default="auto", choices=("auto", "png", "jpg"), help="restored_imgs extension; auto = the input's (PNG for RGBA) (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="faces per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator weights instead of the EMA ones; "
                   "refused with an exported --weights file, which holds one set (default: EMA)")
    p.add_argument("--no-flip-ensemble", action="store_true", help="one forward pass per face instead of averaging it "
                   "with its mirror image's (half the compute; 0.02-0.11 dB PSNR less on the shipped models; default: flip "
                   "ensemble, or for an exported --weights file the setting it was exported with, which this flag "
                   "cannot change)")
    p.add_argument("--evaluate", nargs="+", default=None, metavar="HR_DIR", help="score against HR images (files and/or folders, searched recursively): downscale each by the factor, super-resolve, report PSNR/SSIM/identity cosine for SR and bicubic (default: off)")
    p.add_argument("--identity-weights", default=None,
                   help="recogniser for the identity cosine in --evaluate: a Light CNN checkpoint, a shipped name "
                        "(e.g. recognition) or dlib; unset: not reported (default: %(default)s)")
    return p


def _identity_judge(spec: Optional[str]) -> Optional[str]:
    """``--identity-weights`` as :func:`lightface.eval.identity.load_identity_judge` takes it: a shipped
    name resolved to its (sha256-checked) file, as the trainers' flag is; None stays None (not reported)."""
    from lightface.models.identity import resolve_identity_weights

    return None if spec is None else resolve_identity_weights(spec, "the identity cosine of --evaluate")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that cannot apply (exit status 2 under run_cli): the whole-photo ones with --aligned,
    --identity-weights without --evaluate."""
    parser = get_args_parser()
    if args.aligned:
        refuse_flags(args, parser, ("only_center_face", "detector", "ext"),
                     "whole-photo settings, which --aligned crops (upscaled as they are, no detection) cannot use; "
                     "drop them, or drop --aligned")
    if not args.evaluate:
        refuse_flags(args, parser, ("identity_weights",), "scores --evaluate; drop it, or add --evaluate HR_DIR")


def main(args: argparse.Namespace) -> dict:
    if not args.input and not args.evaluate:
        raise SystemExit("super_resolve: give inputs with -i/--input, or --evaluate HR_DIR")
    check_flags(args)
    need_detector = not args.aligned
    # a wrong path fails before any model or detector loads
    if args.input:
        list_images(args.input, recursive=args.recursive)
    hr_images = list_images(args.evaluate, recursive=True) if args.evaluate else []
    from lightface.models.pretrained import PretrainedError

    try:
        resolver = SuperResolver(args.weights, device=args.device, detector=args.detector if need_detector else None,
                                 ema=not args.no_ema, scale=getattr(args, "scale", None),
                                 flip_ensemble=False if getattr(args, "no_flip_ensemble", False) else None,
                                 max_face_shrink=getattr(args, "max_face_shrink", MAX_FACE_SHRINK))
    except PretrainedError as err:  # nothing ships for this scale, or a damaged install: say what to pass
        if args.weights is not None:  # weights asked for and unusable (a typo, another task): run_cli's one line
            raise
        raise SystemExit(f"super_resolve: {err}") from None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.input:
        if args.aligned:
            def restore(img):
                shrink = resolver.aligned_shrink(img)
                notes = [] if shrink <= resolver.max_face_shrink else [
                    f"not super-resolved, kept its bicubic upscale: the crop is {shrink:.1f}x the model's "
                    f"{resolver.input_size} px input crop (--max-face-shrink {resolver.max_face_shrink:g})"]
                return RestoreResult(crops=[img], faces=[resolver.upscale_face(img)], notes=notes)
        else:
            def restore(img):
                image, faces = resolver.restore(img, only_center_face=args.only_center_face, batch_size=args.batch_size)
                notes = [] if faces else ["no face detected: whole image upscaled with bicubic only"]
                notes += [f"face {i:02d} kept bicubic: the photo holds it {f.shrink:.1f}x larger than the model's "
                          f"{resolver.input_size} px input crop (--max-face-shrink {resolver.max_face_shrink:g})"
                          for i, f in enumerate(faces) if not f.super_resolved]
                return RestoreResult(image=image, crops=[f.crop for f in faces], faces=[f.restored for f in faces],
                                     notes=notes)
        summary = restore_paths(args.input, out, restore, suffix=args.suffix, ext=args.ext, recursive=args.recursive,
                                run_key=settings_key(args, getattr(resolver.pretrained, "sha256", None)))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        report["summary"] = summary
        if not summary["processed"]:
            raise RuntimeError(nothing_restored(summary, out))
    if args.evaluate:
        result = evaluate_super_resolution(resolver, hr_images, aligned=args.aligned,
                                           identity_weights=_identity_judge(args.identity_weights),
                                           sheet_path=out / "contact_sheet.png")
        write_text_atomic(out / "evaluation.json", json.dumps(result, indent=2))
        report["evaluation"] = result
    return report


if __name__ == "__main__":
    import sys

    from pipelines._cli import RERUN_HINT, run_cli

    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
