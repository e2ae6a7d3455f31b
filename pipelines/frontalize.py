"""Frontalize faces in image files or folders with a TP-GAN (tpgan) model (the shipped one by default).

    python -m pipelines.frontalize -i photos/ -o results/                      # the shipped frontalizer
    python -m pipelines.frontalize -i photos/ -o results/ --weights runs/tpgan/model.pt \\
        --detector ../shared/models/det_500m.onnx
    python -m pipelines.frontalize -i crops/ -o results/ --weights runs/tpgan/model.pt --aligned
    python -m pipelines.frontalize -i photos/ -o results/ --weights frontal.onnx   # a file of lightface.export

Outputs: OUT/cropped_faces (aligned 128x128 input crops), OUT/restored_faces (frontal
views), OUT/cmp (input crop | frontal view, side by side), OUT/restored_imgs (with
--paste: the photo with the frontal views pasted back), OUT/summary.json (processed and
skipped files with the reason). Unreadable files and photos without a face are reported,
never fatal. A folder is frontalized with its sub-folders (--no-recursive: its own images
only); outputs are named after the inputs' paths relative to the folder given (sub/x.jpg ->
restored_faces/sub/x_00.png; face.jpg + face.png -> face_jpg, face_png), so none overwrites
another. Exit status 1 with a one-line message when every input was skipped or an input is
unusable; 2 for flags that cannot apply together (--aligned with --paste, --only-center-face or
--detector, unless --facing auto; --facing without --aligned). An interrupted run
(crash, kill, Ctrl-C) continues where it stopped when the same command runs again
(OUT/.progress.jsonl journals the inputs done).
"""
import argparse
import json
from pathlib import Path

from lightface.restore.folder import RestoreResult, list_images, nothing_restored, restore_paths, settings_key
from lightface.utils.atomic_write import write_text_atomic
from pipelines._argtypes import positive_int, refuse_flags


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("frontalize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True,
                   help="frontalize the images in the folders' sub-folders too, keeping their relative paths in the "
                        "output names (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--weights", default=None,
                   help="tpgan checkpoint (the final checkpoint of train_frontalization), a shipped entry's name, or "
                        "a frontalizer exported by lightface.export (an .onnx file, run with ONNX Runtime; the .pt of "
                        "export_torchscript, run with TorchScript on the CPU): its card gives the training direction "
                        "faces are mirrored to; default: the frontalizer that ships with lightface "
                        "(default: %(default)s)")
    p.add_argument("--aligned", action="store_true",
                   help="inputs are face crops aligned to the 128x128 lightcnn template (resized when another "
                        "size): no detection (default: off)")
    p.add_argument("--mirror", choices=("auto", "left", "right", "none"), default="auto",
                   help="the way the faces the model was trained on look (train_frontalization --mirror): faces "
                        "looking the other way are mirrored before and after; auto: the direction the weights record "
                        "(a shipped model's card, the run's config in a train_frontalization checkpoint), none: every "
                        "face as given (Frontalizer(mirror=...); default: %(default)s)")
    p.add_argument("--facing", choices=("left", "right", "auto"), default=None,
                   help="with --aligned: the way the faces look (so they can be mirrored to the model's "
                        "training direction); auto: each crop's own, from the landmarks --detector finds on it "
                        "(for crops that look both ways); default: used as given (default: None)")
    p.add_argument("--detector", default="buffalo_l",
                   help="face detector for whole photos (and for --aligned --facing auto): ONNX path (SCRFD / "
                        "YuNet) or InsightFace model pack name (default: %(default)s)")
    p.add_argument("--only-center-face", action="store_true",
                   help="frontalize only the main face: the largest, penalised by its distance from the "
                        "image centre (default: off)")
    p.add_argument("--paste", action="store_true",
                   help="also write restored_imgs/: the photo with frontal views pasted back (default: off)")
    p.add_argument("--suffix", default=None, help="suffix added to output file names (default: none)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="faces per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator weights instead of EMA; refused with an "
                   "exported --weights file, which holds one set (default: EMA)")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that cannot apply (exit status 2 under run_cli): the whole-photo ones with --aligned,
    --facing without it."""
    parser = get_args_parser()
    if args.aligned:
        refuse_flags(args, parser, ("paste", "only_center_face") + (() if args.facing == "auto" else ("detector",)),
                     "whole-photo settings, which --aligned crops (no photo to detect faces in or paste them into) "
                     "cannot use; drop them, or drop --aligned (--detector serves --aligned with --facing auto)")
    else:
        refuse_flags(args, parser, ("facing",), "says how --aligned crops look (a photo's faces are mirrored by "
                                                "their landmarks); drop it, or add --aligned")


def main(args: argparse.Namespace) -> dict:
    from lightface.models.pretrained import PretrainedError
    from lightface.restore.frontalizer import Frontalizer

    check_flags(args)
    list_images(args.input, recursive=args.recursive)  # a wrong path fails before any model or detector loads

    try:
        fr = Frontalizer(args.weights, device=args.device,
                         detector=None if args.aligned and args.facing != "auto" else args.detector,
                         ema=not args.no_ema, mirror=None if args.mirror == "none" else args.mirror)
    except PretrainedError as err:  # nothing ships, or a damaged install: say what to pass
        if args.weights is not None:  # weights asked for and unusable (a typo, another task): run_cli's one line
            raise
        raise SystemExit(f"frontalize: {err}") from None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    if args.aligned:
        def restore(img):
            facing, notes = args.facing, []
            if facing == "auto":
                facing = fr.crop_facing(img)
                if facing is None:
                    notes.append("no face found on the crop to tell which way it looks: used as given")
            if facing is not None and fr.mirror is not None and facing != fr.mirror:
                notes.append(f"looks {facing}: mirrored to the model's direction")
            return RestoreResult(crops=[img], faces=[fr.frontalize_face(img, facing)], notes=notes)
    else:
        def restore(img):
            faces = fr.frontalize(img, only_center_face=args.only_center_face, batch_size=args.batch_size)
            if not faces:
                raise ValueError("no face detected")
            image = fr.paste_back(img, faces) if args.paste else None
            notes = [f"face {i} mirrored to the model's direction" for i, f in enumerate(faces) if f.flipped]
            return RestoreResult(image=image, crops=[f.crop for f in faces], faces=[f.frontal for f in faces],
                                 notes=notes)

    summary = restore_paths(args.input, out, restore, suffix=args.suffix, recursive=args.recursive,
                            run_key=settings_key(args, getattr(fr.pretrained, "sha256", None)))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    if not summary["processed"]:
        raise RuntimeError(nothing_restored(summary, out))
    return summary


if __name__ == "__main__":
    import sys

    from pipelines._cli import RERUN_HINT, run_cli

    sys.exit(run_cli(main, get_args_parser, interrupted_hint=RERUN_HINT))
