"""Dataset build and DataLoader read throughput: LMDB vs reading the same faces from a folder.

    python -m benchmarks.data [--data ../shared/data] [--workers 2] [--epochs 4]

Source: the LFW identities in ``../shared/data/lfw_identities`` with their 5-point
landmarks (180 JPEGs, 18 identities). Three readers produce the same training sample
(gray 128x128 float tensor in [0,1], random crop from the 144 ``lightcnn_train`` crop,
flip, blur/noise/JPEG augmentation), DataLoader with 2 workers, shuffled:

* ``lmdb (png|jpeg q95|raw)``: :class:`lightface.data.LMDBDataset` over the datasets
  ``build_lmdb`` wrote with each ``--encoding``;
* ``folder (photos)``: the source folder read as it is, each sample decoded and aligned
  from the photo (what a training job does without a built dataset);
* ``folder (crops)``: the LMDB's own PNG crops written out as one file per sample
  (same bytes, so it isolates file-system access from decode + alignment).

Prints a side-by-side table with ratios; ``--json FILE`` saves the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightface.data import LMDBDataset, build_lmdb
from pipelines._argtypes import shared_dir
from lightface.data.align import align_face
from lightface.data.io import read_image, to_gray
from lightface.data.sources import attach_landmarks, read_landmarks_file, scan_folder
from lightface.data.transforms import train_transform

ROOT = Path(__file__).resolve().parents[1]


class PhotoFolder(Dataset):
    """Baseline: decode each source photo and align it with its landmarks on every access."""

    def __init__(self, root, landmarks, transform):
        plan, _ = attach_landmarks(scan_folder(root), read_landmarks_file(landmarks))
        self.items = [(it.ref, it.label, np.asarray(it.landmarks).reshape(5, 2)) for it in plan.items]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label, lm = self.items[i]
        crop, _ = align_face(read_image(path), lm, "lightcnn_train", 144)
        return {"image": self.transform(image=to_gray(crop))["image"], "label": label}


class CropFolder(Dataset):
    """Baseline: one PNG file per already-aligned 144x144 crop (the LMDB's bytes)."""

    def __init__(self, files, labels, transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = cv2.imread(self.files[i], cv2.IMREAD_GRAYSCALE)
        return {"image": self.transform(image=img)["image"], "label": int(self.labels[i])}


def _worker_init(_):
    cv2.setNumThreads(1)


def make_loader(ds, workers, batch_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g,
                      worker_init_fn=_worker_init, persistent_workers=workers > 0)


def epoch_rate(loader):
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 128, 128)
        n += len(batch["label"])
    return n / (time.perf_counter() - t0)


def read_throughput(datasets, workers, epochs, batch_size):
    """Samples/s per dataset: persistent loaders, one warm-up epoch each, then ``epochs``
    rounds that time one epoch of every reader in turn (so load changes on a shared
    machine hit all readers alike); the median round is reported."""
    loaders = {name: make_loader(ds, workers, batch_size) for name, ds in datasets.items()}
    for loader in loaders.values():
        epoch_rate(loader)
    rates = {name: [] for name in loaders}
    for _ in range(epochs):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader))
    return {name: float(np.median(r)) for name, r in rates.items()}


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(shared_dir() / "data"), help="the shared real-data folder")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (and build workers for the parallel build)")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per reader (after one warm-up epoch)")
    p.add_argument("--batch-size", type=int, default=32, help="DataLoader batch size")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def main(args):
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    lfw = Path(args.data) / "lfw_identities"
    if not lfw.is_dir():
        raise SystemExit(f"{lfw} not found: pass --data pointing at the shared real-data folder")
    images, landmarks = lfw / "images", lfw / "landmarks_5pt.txt"
    tmp = Path(tempfile.mkdtemp(prefix="lightface_bench_data_"))
    try:
        res = {}
        s0 = build_lmdb(images, tmp / "png.lmdb", landmarks=landmarks, encoding="png", progress=False)
        s2 = build_lmdb(images, tmp / "png_par.lmdb", landmarks=landmarks, encoding="png", workers=args.workers,
                        progress=False)
        res["build_images_per_s"] = {"workers=0": s0["images_per_second"],
                                     f"workers={args.workers}": s2["images_per_second"]}
        for enc in ("jpeg", "raw"):
            build_lmdb(images, tmp / f"{enc}.lmdb", landmarks=landmarks, encoding=enc, quality=95, progress=False)
        aug = train_transform(blur=0.2, noise=0.2, jpeg=0.2)
        png_ds = LMDBDataset(tmp / "png.lmdb", transform=aug)
        crops = tmp / "crops"
        crops.mkdir()
        files = []
        for i in range(len(png_ds)):
            f = crops / f"{i:06d}.png"
            f.write_bytes(png_ds.record(i)["encoded"])
            files.append(str(f))
        readers = {
            "lmdb (png)": png_ds,
            "lmdb (jpeg q95)": LMDBDataset(tmp / "jpeg.lmdb", transform=aug),
            "lmdb (raw)": LMDBDataset(tmp / "raw.lmdb", transform=aug),
            "folder (photos)": PhotoFolder(images, landmarks, aug),
            "folder (crops)": CropFolder(files, png_ds.labels, aug),
        }
        speeds = read_throughput(readers, args.workers, args.epochs, args.batch_size)
        res["read_samples_per_s"] = speeds
        res["bytes_per_sample"] = {enc: round((tmp / f"{enc}.lmdb" / "data.mdb").stat().st_size / len(png_ds))
                                   for enc in ("png", "jpeg", "raw")}
        res["setup"] = {"images": len(png_ds), "workers": args.workers, "epochs": args.epochs,
                        "batch_size": args.batch_size, "cpu_count": os.cpu_count(), "torch": torch.__version__}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nBuild ({res['setup']['images']} LFW photos -> 144x144 gray PNG, aligned with landmarks)")
    for k, v in res["build_images_per_s"].items():
        print(f"  build_lmdb {k:<10} {v:8.1f} images/s")
    print(f"\nRead: DataLoader, {args.workers} workers, shuffled, decode + Light CNN train augmentation")
    photos, crops_v = speeds["folder (photos)"], speeds["folder (crops)"]
    print(f"  {'reader':<18}{'samples/s':>12}{'vs photos':>12}{'vs crops':>11}")
    for name, v in speeds.items():
        print(f"  {name:<18}{v:12.1f}{v / photos:11.2f}x{v / crops_v:10.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main(get_args_parser().parse_args())
