"""Train TP-GAN face frontalization on a pose-tagged LMDB.

    python -m pipelines.train_frontalization --data cfp.lmdb --identity-weights lightcnn.pth --out runs/tpgan
    torchrun --nproc_per_node 8 -m pipelines.train_frontalization --config runs/tpgan/config.yaml

Every flag may also come from ``--config run.yaml`` (keys = flag names with underscores).
"""
import argparse
import logging

from lightface.engine.config import parse_with_config
from lightface.engine.gan import add_gan_arguments


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "train_frontalization", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, help="pose-tagged LMDB (python -m pipelines.build_lmdb with pose tags)")
    g.add_argument("--out", required=True, help="run folder: config, metrics, samples, checkpoints")
    g.add_argument("--identity-weights", default=None,
                   help="frozen Light CNN checkpoint for the identity-preserving loss and validation "
                        "(project or official format); without it both are off (default: None)")
    g.add_argument("--train-identities", type=int, default=None,
                   help="train on this many identities (seeded split) and validate on the rest; "
                        "default: train and validate on all (default: None)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the identity split (default: %(default)s)")
    g.add_argument("--pose-key", default="pose", help="LMDB attribute holding the pose tag (default: %(default)s)")
    g.add_argument("--mirror", choices=["left", "right", "none"], default="left",
                   help="flip inputs (and their targets) so all inputs face this way; 'none' keeps them "
                        "(default: %(default)s)")
    g.add_argument("--channels", type=int, choices=[1, 3], default=3, help="3 = RGB, 1 = gray (default: %(default)s)")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers per process (default: %(default)s)")

    g = p.add_argument_group("model")
    g.add_argument("--width", type=int, default=64, help="generator base width, multiple of 8 (paper: 64) "
                   "(default: %(default)s)")
    g.add_argument("--local-width", type=int, default=None,
                   help="width of each local pathway (default: width/2)")
    g.add_argument("--feature-dim", type=int, default=256, help="identity feature size (default: %(default)s)")
    g.add_argument("--noise-dim", type=int, default=100, help="noise size, 0 disables (default: %(default)s)")
    g.add_argument("--d-width", type=int, default=64, help="discriminator base width (default: %(default)s)")

    g = p.add_argument_group("loss weights (L_syn = L_pixel + l1 L_sym + l2 L_adv + l3 L_ip + l4 L_tv)")
    g.add_argument("--lambda-sym", type=float, default=0.3, help="l1, symmetry (default: %(default)s)")
    g.add_argument("--lambda-adv", type=float, default=1e-3, help="l2, adversarial (default: %(default)s)")
    g.add_argument("--lambda-ip", type=float, default=3e-3, help="l3, identity preserving (default: %(default)s)")
    g.add_argument("--lambda-tv", type=float, default=1e-4, help="l4, total variation (default: %(default)s)")
    g.add_argument("--lambda-patch", type=float, default=1.0,
                   help="weight of the local-patch L1 inside L_pixel (default: %(default)s)")
    g.add_argument("--lambda-ce", type=float, default=0.0,
                   help="identity cross-entropy on the encoder feature; 0 disables (default: %(default)s)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=20000, help="generator steps (default: %(default)s)")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes of training (final validation and checkpoint are still "
                        "written); default: no limit (default: None)")
    g.add_argument("--batch-size", type=int, default=8, help="batch size per process (default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-4, help="generator Adam learning rate (default: %(default)s)")
    g.add_argument("--lr-d", type=float, default=None, help="discriminator learning rate (default: --lr)")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (default: %(default)s)")
    g.add_argument("--d-every", type=int, default=1,
                   help="update the discriminator every N generator steps (default: %(default)s)")
    g.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the generator (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    g.add_argument("--resume", default=None,
                   help="checkpoint to resume from, or 'auto' for OUT/checkpoints/last.pth if present "
                        "(default: None)")

    g = p.add_argument_group("logging")
    g.add_argument("--log-every", type=int, default=50, help="log line every N steps (default: %(default)s)")
    g.add_argument("--val-every", type=int, default=1000,
                   help="validation + PNG sample grid every N steps (default: %(default)s)")
    g.add_argument("--save-every", type=int, default=1000, help="write checkpoints/last.pth every N steps "
                   "(default: %(default)s)")
    g.add_argument("--num-samples", type=int, default=8, help="rows in the sample grid (default: %(default)s)")
    add_gan_arguments(p)
    return p


def main(args: argparse.Namespace) -> dict:
    from lightface.engine.frontal_trainer import train_frontalization

    return train_frontalization(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_with_config(get_args_parser()))
