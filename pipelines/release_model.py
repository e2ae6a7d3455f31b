"""Ship a trained checkpoint inside the package, and regenerate the model card.

    python -m pipelines.release_model --checkpoint runs/x/best.pt --name lightcnn9_lf3src --task recognition \\
        --meta release/lightcnn9.json --default recognition
    python -m pipelines.release_model --name lightcnn9_lf3src --meta release/lightcnn9_lf3src.json   # new card facts
    python -m pipelines.release_model --card            # docs/model_zoo.md from lightface/weights/manifest.json

The release is float16, backbone only (recognition), at most 25 MB, its sha256 in the
file name and the manifest; every load checks it. A frontalizer keeps the direction
its training run mirrored faces to (the checkpoint's --mirror, as preprocessing "mirror";
a --meta that says otherwise is refused). --meta is a JSON file with the model
card's facts (data, terms, recipe, commands, metrics, threshold, notes, reference); it lives
in release/<name>.json, the one place card facts are edited: --name NAME --meta FILE without
--checkpoint copies it into the manifest of the shipped entry (the weights stay as they are).
"""
import argparse
import json
import logging
import sys
from pathlib import Path

from lightface.models.release import ALIAS_TASKS, ReleaseRefused, render_model_card, release_weights, update_card_facts
from lightface.engine.config import ConfigError
from pipelines._cli import DefaultsHelpFormatter, run_cli

log = logging.getLogger("pipelines.release_model")

CARD = Path(__file__).resolve().parent.parent / "docs" / "model_zoo.md"
INTRO = (Path(__file__).resolve().parent.parent / "docs" / "model_zoo_intro.md")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.release_model", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="training checkpoint to ship")
    p.add_argument("--name", default=None, help="name of the shipped entry (replaces an entry of that name)")
    p.add_argument("--task", choices=("recognition", "super_resolution", "frontalization"), default=None,
                   help="what the model does")
    p.add_argument("--meta", default=None, help="JSON file of model-card facts (data, recipe, commands, metrics, ...); "
                   "without --checkpoint: new facts for the shipped entry --name")
    p.add_argument("--default", nargs="*", default=[], choices=tuple(ALIAS_TASKS),
                   help="aliases to point at it, of the model's own task: recognition, sr4 or sr8 (by the model's "
                   "scale), frontalization")
    p.add_argument("--ema", action="store_true", help="ship the checkpoint's EMA weights")
    p.add_argument("--card", action="store_true", help="(re)write docs/model_zoo.md from the manifest")
    return p


def frontalizer_preprocessing(checkpoint, pre):
    """``pre`` (the meta's ``preprocessing``, or None) with the ``mirror`` direction a frontalizer was trained in.

    A model trained with ``--mirror left`` has only seen faces looking left, and
    :class:`~lightface.restore.frontalizer.Frontalizer` mirrors the others only when the shipped entry's
    preprocessing says so (the shipped file keeps no training config). The direction comes from the
    checkpoint's training config (``config.yaml``'s ``mirror``, stored in the run's checkpoints); a meta that
    gives another one, or neither giving one, is refused (:class:`~lightface.engine.config.ConfigError`).
    """
    from lightface.models.checkpoint import read_model_checkpoint

    pre = dict(pre or {})
    config = read_model_checkpoint(checkpoint).extra.get("config")
    trained = config.get("mirror") if isinstance(config, dict) else None
    trained = "none" if trained is None and isinstance(config, dict) and "mirror" in config else trained
    given = pre.get("mirror")
    given = "none" if given is None and "mirror" in pre else given
    if trained is None and given is None:
        raise ConfigError(f"--checkpoint {checkpoint} records no training config, so the direction its faces were "
                          "mirrored to is unknown; add \"mirror\": \"left\", \"right\" or \"none\" (the run's "
                          "--mirror) to the preprocessing of --meta")
    if trained is not None and given is not None and given != trained:
        raise ConfigError(f"--meta preprocessing says \"mirror\": {given!r}, but {checkpoint} was trained with "
                          f"--mirror {trained}; a released frontalizer must mirror faces as in training: fix the meta")
    if given is None:
        log.info("preprocessing mirror: %s (the --mirror of the run that wrote %s)", trained, checkpoint)
        pre["mirror"] = trained
    return pre


def main(args: argparse.Namespace) -> None:
    """Release --checkpoint (when given) and rewrite the model card."""
    if not args.card and not args.checkpoint and not args.meta:
        raise ValueError("nothing to do: give --checkpoint CKPT --name NAME --task TASK, --name NAME --meta FILE, "
                         "or --card")
    meta = json.loads(Path(args.meta).read_text(encoding="utf-8")) if args.meta else {}
    pre = meta.pop("preprocessing", None)
    if args.checkpoint:
        if not args.name or not args.task:
            raise ValueError("--checkpoint needs --name and --task")
        if args.task == "frontalization":
            pre = frontalizer_preprocessing(args.checkpoint, pre)
        try:
            entry = release_weights(args.checkpoint, args.name, args.task, meta, pre, args.default, args.ema)
        except ReleaseRefused as err:  # a bad command line, not a bad checkpoint: exit 2
            raise ConfigError(str(err)) from None
        print(json.dumps(entry.summary(), indent=2))
    elif args.meta:
        if not args.name:
            raise ValueError(f"--meta {args.meta} without --checkpoint updates a shipped entry's card: give --name")
        if args.default or args.task or args.ema:
            raise ValueError("--default, --task and --ema belong to a release: give --checkpoint too")
        update_card_facts(args.name, meta, pre)
        log.info("updated the card facts of %s from %s", args.name, args.meta)
    if args.card or args.checkpoint or args.meta:
        intro = INTRO.read_text(encoding="utf-8") if INTRO.is_file() else ""
        CARD.write_text(render_model_card(intro), encoding="utf-8")
        log.info("wrote %s", CARD)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
