"""Train the wavelet-domain face super-resolution GAN (Wavelet-SRNet generator, Light CNN identity loss).

    python -m pipelines.train_super_resolution --data HR_LMDB --scale 8 --identity-weights LIGHTCNN --out runs/NAME
    torchrun --nproc_per_node 4 -m pipelines.train_super_resolution --data ... --out ...

All options can also come from ``--config run.yaml`` (keys = flag names with underscores);
the resolved configuration is saved as ``OUT/config.yaml``.
"""
import argparse
import logging

from lightface.data.degradation import RESIZE_METHODS
from lightface.engine.config import parse_with_config, save_config
from lightface.engine.gan import add_gan_arguments
from lightface.engine.sr_trainer import SRTrainConfig, train_super_resolution

D = SRTrainConfig([], "")  # defaults


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "train_super_resolution", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("data and run")
    g.add_argument("--data", required=True, nargs="+", help="HR faces: lightface LMDBs (pipelines.build_lmdb --color rgb, aligned) and/or image folders, concatenated")
    g.add_argument("--out", required=True, help="run folder: metrics.jsonl, samples/, checkpoints/, model.pth, config.yaml")
    g.add_argument("--val-data", default=D.val_data, help="held-out HR faces for validation; default: --val-count images held out of --data (default: %(default)s)")
    g.add_argument("--val-count", type=int, default=D.val_count, help="validation images (default: %(default)s)")
    g.add_argument("--hr-size", type=int, default=D.hr_size, help="HR face size in pixels (non-square sources are centre-cropped) (default: %(default)s)")
    g.add_argument("--workers", type=int, default=D.workers, help="DataLoader workers per process (default: %(default)s)")
    g.add_argument("--device", default=D.device, help="auto, cpu, cuda or cuda:N (under torchrun: the local rank's GPU) (default: %(default)s)")
    g.add_argument("--seed", type=int, default=D.seed, help="random seed (rank is added per process) (default: %(default)s)")
    g = p.add_argument_group("model (wavelet_srnet)")
    g.add_argument("--scale", type=int, default=D.scale, choices=(2, 4, 8, 16), help="upscaling factor (default: %(default)s)")
    g.add_argument("--channels", type=int, default=D.channels, help="embedding-network width (default: %(default)s)")
    g.add_argument("--num-blocks", type=int, default=D.num_blocks, help="residual blocks in the embedding network (default: %(default)s)")
    g.add_argument("--head-channels", type=int, default=D.head_channels, help="hidden width of each wavelet head (default: %(default)s)")
    g.add_argument("--head-groups", type=int, default=D.head_groups, help="wavelet-prediction heads (must divide 4**log2(scale)) (default: %(default)s)")
    g = p.add_argument_group("losses")
    g.add_argument("--wavelet-weight", type=float, default=D.wavelet_weight, help="wavelet prediction loss weight (default: %(default)s)")
    g.add_argument("--approx-weight", type=float, default=D.approx_weight, help="per-subband weight of the approximation band (default: %(default)s)")
    g.add_argument("--detail-weight", type=float, default=D.detail_weight, help="per-subband weight of each detail band (default: %(default)s)")
    g.add_argument("--texture-weight", type=float, default=D.texture_weight, help="texture loss weight (default: %(default)s)")
    g.add_argument("--texture-alpha", type=float, default=D.texture_alpha, help="texture loss alpha: SR detail energy must reach alpha x HR energy (default: %(default)s)")
    g.add_argument("--texture-eps", type=float, default=D.texture_eps, help="texture loss epsilon (default: %(default)s)")
    g.add_argument("--image-weight", type=float, default=D.image_weight, help="full-image MSE weight (default: %(default)s)")
    g.add_argument("--identity-weights", default=D.identity_weights, help="Light CNN checkpoint for the identity loss and identity metrics; unset: no identity loss (default: %(default)s)")
    g.add_argument("--identity-weight", type=float, default=D.identity_weight, help="identity loss weight (default: %(default)s)")
    g.add_argument("--adv-weight", type=float, default=D.adv_weight, help="weight of the GAN generator objective (adversarial term plus its --feature-matching / --pull-away terms); 0 disables the discriminator (default: %(default)s)")
    g.add_argument("--adv-start", type=int, default=D.adv_start, help="first step with the adversarial loss (default: %(default)s)")
    g.add_argument("--discriminator", default=D.discriminator, choices=("image", "wavelet"), help="critic on images or on wavelet detail coefficients (WaveletGAN) (default: %(default)s)")
    g.add_argument("--d-channels", type=int, default=D.d_channels, help="discriminator base width (default: %(default)s)")
    g = p.add_argument_group("degradation (LR made on the fly)")
    g.add_argument("--degradations", nargs="+", default=D.degradations, choices=RESIZE_METHODS, help="downscale kernels drawn at random (default: %(default)s)")
    g.add_argument("--blur-prob", type=float, default=D.blur_prob, help="probability of a Gaussian blur before downscaling (default: %(default)s)")
    g.add_argument("--noise-prob", type=float, default=D.noise_prob, help="probability of Gaussian noise on the LR image (default: %(default)s)")
    g.add_argument("--jpeg-prob", type=float, default=D.jpeg_prob, help="probability of JPEG compression of the LR image (default: %(default)s)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=D.batch_size, help="images per step over all processes (default: %(default)s)")
    g.add_argument("--lr", type=float, default=D.lr, help="generator Adam learning rate (default: %(default)s)")
    g.add_argument("--d-lr", type=float, default=D.d_lr, help="discriminator Adam learning rate (default: %(default)s)")
    g.add_argument("--steps", type=int, default=D.steps, help="total training steps (default: %(default)s)")
    g.add_argument("--max-minutes", type=float, default=D.max_minutes, help="stop (validate, save) after this much wall-clock training time; unset: run all --steps (default: %(default)s)")
    g.add_argument("--ema-decay", type=float, default=D.ema_decay, help="EMA generator decay (default: %(default)s)")
    g.add_argument("--val-every", type=int, default=D.val_every, help="validate (PSNR/SSIM/identity cosine) and write a sample grid every N steps (default: %(default)s)")
    g.add_argument("--save-every", type=int, default=D.save_every, help="write checkpoints/latest.pth every N steps (default: %(default)s)")
    g.add_argument("--log-every", type=int, default=D.log_every, help="log averaged loss terms every N steps (default: %(default)s)")
    g.add_argument("--resume", default=D.resume, help="checkpoint to resume from, or 'auto' for OUT/checkpoints/latest.pth (default: %(default)s)")
    add_gan_arguments(p)
    return p


def main(args: argparse.Namespace) -> dict:
    save_config(args, f"{args.out}/config.yaml")
    return train_super_resolution(SRTrainConfig.from_namespace(args))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_with_config(get_args_parser()))
