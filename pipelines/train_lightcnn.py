"""Train a Light CNN on an LMDB of face crops (the original recipe by default).

    python -m pipelines.train_lightcnn --data TRAIN_LMDB --arch lightcnn9 --out runs/NAME [options]
    torchrun --nproc_per_node 4 -m pipelines.train_lightcnn --data TRAIN_LMDB --out runs/NAME
    python -m pipelines.train_lightcnn --config runs/NAME/config.yaml --resume

Every flag may also come from a YAML file (``--config``; keys are the flag names with
underscores); flags given on the command line override it. The resolved configuration
is written to OUT/config.yaml. See docs/training.md.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

from lightface.engine.config import parse_with_config, save_config
from lightface.engine.lightcnn_trainer import AMP_DTYPES, AUGMENTS, INITS, TrainConfig, TrainingError, train
from lightface.losses.noisy_label import LOSSES

log = logging.getLogger("pipelines.train_lightcnn")

D = TrainConfig()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.train_lightcnn",
        description="Train a Light CNN face recogniser on an LMDB (python -m pipelines.build_lmdb). "
        "Defaults follow the original recipe. Multi-GPU / multi-node: launch with torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data and model")
    g.add_argument("--data", required=True, nargs="+",
                   help="training LMDB(s) (uint8 gray or BGR crops, usually 144x144 Light CNN training crops); several "
                   "LMDBs (one per source) are trained on as one, each keeping its own classes")
    g.add_argument("--out", required=True, help="run folder: config.yaml, last.pt, best.pt, metrics.jsonl, curves.png")
    g.add_argument("--arch", default=D.arch, help="model registry name: lightcnn9, lightcnn29, lightcnn29v2")
    g.add_argument("--dropout", type=float, default=D.dropout, help="dropout before the classifier")
    g.add_argument("--init", choices=INITS, default=D.init,
                   help="weights when training from scratch: PyTorch's defaults (as the original code) or kaiming "
                   "(N(0, 1/fan_in), zero biases; trains much sooner on small data sets)")
    g.add_argument("--resize", type=int, default=D.resize, help="images are resized to RESIZE x RESIZE first (no-op for 144 crops)")
    g.add_argument("--crop", type=int, default=D.crop, help="random crop (training) / centre crop (validation) size; the model input")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="turn off the random horizontal flip (the default shown is that of flip: on)")
    g.add_argument("--augment", choices=AUGMENTS, default=D.augment,
                   help="basic: the original random crop + flip; strong: + geometry, colour, side lighting, blur, JPEG, "
                   "occlusion (small data sets)")
    g.add_argument("--workers", type=int, default=D.workers, help="DataLoader worker processes per training process")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=D.epochs, help="number of epochs")
    g.add_argument("--batch-size", type=int, default=D.batch_size, help="global batch size (divided over torchrun processes)")
    g.add_argument("--lr", type=float, default=D.lr, help="base learning rate (SGD)")
    g.add_argument("--momentum", type=float, default=D.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="weight decay (not on biases unless --bias-decay)")
    g.add_argument("--lr-step", type=int, default=D.lr_step, help="multiply the lr by --lr-gamma every LR_STEP epochs")
    g.add_argument("--lr-gamma", type=float, default=D.lr_gamma, help="step decay factor of the learning rate")
    g.add_argument("--classifier-lr-mult", type=float, default=D.classifier_lr_mult, help="classifier weight lr = base lr x this")
    g.add_argument("--classifier-bias-lr-mult", type=float, default=D.classifier_bias_lr_mult, help="classifier bias lr = base lr x this")
    g.add_argument("--bias-decay", action="store_true", help="apply weight decay to biases too (default: off)")
    g.add_argument("--loss", choices=list(LOSSES), default=D.loss,
                   help="classification loss: cross-entropy, or Reed et al.'s soft / hard bootstrapping for noisy labels")
    g.add_argument("--beta", type=float, default=D.beta,
                   help="bootstrapping beta; None: 0.95 for soft-bootstrap, 0.8 for hard-bootstrap")
    g.add_argument("--clip-grad", type=float, default=D.clip_grad, help="clip the gradient norm to this value (0: off)")
    g.add_argument("--amp", choices=list(AMP_DTYPES), default=D.amp,
                   help="mixed precision: bf16 (GPU or CPU) or fp16 (GPU, with loss scaling)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and inputs")

    g.add_argument("--distill", default=D.distill, metavar="EMB",
                   help="distil a teacher's embeddings: a teacher name (dlib: DATA/teacher_dlib.npy beside each LMDB, from "
                   "python -m pipelines.teacher_embeddings) or, with one LMDB, an (N, D) .npy file; a linear head "
                   "projects the 256-d features to the teacher's space (cosine loss)")
    g.add_argument("--distill-weight", type=float, default=D.distill_weight, metavar="W",
                   help="weight of the distillation loss beside the classification loss")

    g = p.add_argument_group("validation")
    g.add_argument("--val-data", default=D.val_data, help="validation LMDB with the same classes as --data")
    g.add_argument("--val-split", type=float, default=D.val_split,
                   help="hold out this fraction of every class of --data for validation (0: none)")
    g.add_argument("--val-pairs", default=D.val_pairs,
                   help="verification pair list (LFW pairs.txt, 'label path_a path_b' lines, or a CFP protocol folder) "
                   "of aligned crops; reports 10-fold accuracy, AUC and TAR@FAR")
    g.add_argument("--val-pairs-root", default=D.val_pairs_root,
                   help="folder the --val-pairs image paths are relative to; None: the list's folder")
    g.add_argument("--val-every", type=int, default=D.val_every, help="validate every N epochs (and after the last)")

    g = p.add_argument_group("fine-tuning")
    g.add_argument("--finetune", default=D.finetune,
                   help="initialise the backbone from an official Light CNN release or a lightface checkpoint; "
                   "a new classifier is sized from --data")
    g.add_argument("--classifier-only-epochs", type=int, default=D.classifier_only_epochs,
                   help="with --finetune: train only the classifier for this many epochs, then everything")

    g = p.add_argument_group("run control")
    g.add_argument("--seed", type=int, default=D.seed, help="seed of initialisation, sample order and augmentation")
    g.add_argument("--max-steps", type=int, default=D.max_steps, help="stop after this many optimiser steps in total (0: no limit)")
    g.add_argument("--max-minutes", type=float, default=D.max_minutes,
                   help="stop after this many minutes of training (all ranks at the same step), saving last.pt; "
                   "continue with --resume (0: no limit)")
    g.add_argument("--resume", nargs="?", const="auto", default=D.resume,
                   help="continue an interrupted run: from OUT/last.pt (bare --resume) or the given checkpoint")
    g.add_argument("--save-every", type=int, default=D.save_every,
                   help="also write last.pt every N steps within an epoch (0: at the end of each epoch only)")
    g.add_argument("--log-every", type=int, default=D.log_every, help="log a line and a metrics record every N steps")
    g.add_argument("--device", default=D.device, help="auto (cuda:LOCAL_RANK when available, else cpu), cpu, cuda, cuda:1")
    g.add_argument("--deterministic", action="store_true", help="deterministic cuDNN / torch algorithms (slower)")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard events (the default shown is that of writing them, when tensorboard is installed)")
    g.add_argument("--no-plots", dest="plots", action="store_false", help="do not write OUT/curves.png at the end")
    return p


def main(args: argparse.Namespace) -> dict:
    """Run training from parsed arguments; returns the summary of :func:`lightface.engine.lightcnn_trainer.train`."""
    values = vars(args)
    if isinstance(values.get("data"), list) and len(values["data"]) == 1:
        values = {**values, "data": values["data"][0]}
    cfg = TrainConfig.from_dict(values)
    cfg.validate()
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 writes the run folder
        # saved without --resume so that `--config OUT/config.yaml` repeats the run from scratch
        save_config({**values, "resume": None}, Path(cfg.out) / "config.yaml")
    summary = train(cfg)
    log.info("finished: %s", summary)
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main(parse_with_config(get_args_parser()))
    except TrainingError as err:
        log.error("%s", err)
        sys.exit(1)
