"""Noisy-label evidence: identification accuracy of trained embeddings under label noise.

    python -m benchmarks.noisy_labels [--datasets orl lfw] [--noise 0 0.2 0.4] [--epochs 30] [--work runs/noisy_labels]

For each data set (ORL: images 1-5 of each identity train, 6-10 test; LFW identities:
images _0001-_0005 train, _0006-_0010 test, aligned with the 5-point landmarks) and each
noise level, a share of the *training* labels is flipped to a random other identity,
then the real pipelines run:

* ``pipelines.train_lightcnn`` with ``--loss ce``, ``soft-bootstrap`` (beta 0.95) and
  ``hard-bootstrap`` (beta 0.8);
* one semantic-bootstrapping round: ``pipelines.relabel`` (threshold 0.7) with the CE
  model, then ``pipelines.train_lightcnn --loss ce`` from scratch on the relabelled LMDB.

Metric: nearest-neighbour identification. Every test image's L2-normalised 256-d
embedding is matched (cosine) to the training images' embeddings; it is correct when the
nearest training image shows the same person (true identities; noise only affects
training). Raw-pixel and untrained-network nearest neighbours are printed for context.

To fit a short CPU budget the model is ``lightcnn_small`` (registered here): the
LightCNN-9 layout with a stride-2 first convolution and half the channels (about 1/14
of LightCNN-9's multiply-adds, same 128x128 gray input and 256-d MFM features), which
standardises its input ((x - 0.5) * 4) and is trained with ``--init kaiming``: with
PyTorch's default initialisation and [0, 1] inputs, training from scratch on 200 images
stayed at log(40) for 20 epochs.
Results: ``results_<datasets>_<noise>.json`` and ``.md`` under ``--work``. Data sets and
trained runs found in ``--work`` are reused, so several invocations (e.g. one per noise
level, in parallel, after one that builds the data) followed by one with every setting
assemble the full table without training twice.
"""
import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import Tensor, nn

from pipelines._argtypes import shared_dir
from lightface.models.lightcnn import FEATURE_DIM, LightCNN, MFMGroup
from lightface.models.registry import MODEL_BUILDERS, register_model
from lightface.nn import MFMConv2d, MFMLinear

log = logging.getLogger("benchmarks.noisy_labels")

SHARED_DATA = shared_dir() / "data"
METHODS = ("ce", "soft-bootstrap", "hard-bootstrap", "relabel")


class LightCNNSmall(LightCNN):
    """LightCNN-9 layout at reduced cost: stride-4 ``conv1`` and half widths; (N,1,128,128) -> (N,256)."""

    arch = "lightcnn_small"

    def __init__(self, num_classes=0, dropout=0.5):
        super().__init__(num_classes, dropout)
        pool = lambda: nn.MaxPool2d(2, 2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(
            MFMConv2d(1, 24, 5, 4, 2), pool(),
            MFMGroup(24, 48), pool(),
            MFMGroup(48, 96), pool(),
            MFMGroup(96, 64), MFMGroup(64, 64), pool(),
        )
        self.fc1 = MFMLinear(2 * 2 * 64, FEATURE_DIM)

    @property
    def embedding(self) -> nn.Module:
        return self.fc1

    def forward_pool(self, x: Tensor) -> Tensor:
        return self.features((x - 0.5) * 4.0)  # standardised input: [0, 1] -> [-2, 2]


if "lightcnn_small" not in MODEL_BUILDERS:
    register_model("lightcnn_small", task="recognition")(LightCNNSmall)


# ---------------------------------------------------------------------------------------
def _orl_lists(root: Path, work: Path):
    ids = sorted((root / "orl_faces").glob("s*"), key=lambda p: int(p.name[1:]))
    train, test = [], []
    for label, d in enumerate(ids):
        for j in range(1, 11):
            (train if j <= 5 else test).append(f"{d / f'{j}.pgm'} {label}")
    return train, test, None


def _lfw_lists(root: Path, work: Path):
    base = root / "lfw_identities"
    names = sorted(p.name for p in (base / "images").iterdir() if p.is_dir())
    train, test = [], []
    for label, name in enumerate(names):
        for j in range(1, 11):
            (train if j <= 5 else test).append(f"{base / 'images' / name / f'{name}_{j:04d}.jpg'} {label}")
    return train, test, base / "landmarks_5pt.txt"


def build_split(name: str, root: Path, work: Path) -> Dict[str, Path]:
    """Clean train / test LMDBs (144x144 gray Light CNN training crops) for ``orl`` or ``lfw``."""
    from lightface.data.build import build_lmdb
    from lightface.data.lmdb_format import is_complete_dataset

    train, test, landmarks = {"orl": _orl_lists, "lfw": _lfw_lists}[name](root, work)
    out = {}
    for split, lines in (("train", train), ("test", test)):
        path = work / "data" / f"{name}_{split}.lmdb"
        if not is_complete_dataset(path):
            lst = work / "data" / f"{name}_{split}.txt"
            lst.parent.mkdir(parents=True, exist_ok=True)
            lst.write_text("\n".join(lines) + "\n")
            build_lmdb(lst, path, size=144, landmarks=landmarks, progress=False, overwrite=True)
        out[split] = path
    return out


def noisy_copy(clean: Path, fraction: float, seed: int, out: Path) -> Dict[str, float]:
    """Copy of ``clean`` with ``fraction`` of its labels flipped (returns the noise statistics)."""
    from lightface.data import LMDBDataset
    from lightface.data.lmdb_format import is_complete_dataset
    from lightface.data.relabel import copy_with_labels, flip_labels

    ds = LMDBDataset(clean)
    noisy, flipped = flip_labels(ds.labels, fraction, ds.num_classes, seed)
    if not is_complete_dataset(out):
        copy_with_labels(ds, out, np.arange(len(ds)), noisy, overwrite=True)
    return {"flipped": int(flipped.sum()), "samples": len(ds)}


def embed(weights: Path, lmdb: Path) -> (np.ndarray, np.ndarray):
    """L2-normalised features (N,256) of an LMDB's images (centre 128 crop) and their labels."""
    from lightface.data import LMDBDataset
    from lightface.data.recognition import SampleTransformDataset, lightcnn_transforms
    from lightface.eval.predict import predict
    from lightface.models.checkpoint import build_from_checkpoint

    model = build_from_checkpoint(str(weights)) if isinstance(weights, (str, Path)) else weights.eval()
    ds = SampleTransformDataset(LMDBDataset(lmdb), lightcnn_transforms()[1])
    _, labels, _, feats = predict(model, ds, batch_size=64, features=True)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12), labels


def nn_accuracy(gallery: np.ndarray, gallery_labels: np.ndarray, probe: np.ndarray, probe_labels: np.ndarray) -> float:
    """Share of probes whose most similar gallery row (cosine / dot product) has the same label."""
    nearest = (probe @ gallery.T).argmax(1)
    return float((gallery_labels[nearest] == probe_labels).mean())


def _pixels(lmdb: Path):
    from lightface.data import LMDBDataset

    ds = LMDBDataset(lmdb)
    x = np.stack([ds[i]["image"][8:136, 8:136].astype(np.float32).ravel() for i in range(len(ds))])
    x -= x.mean(1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True), ds.labels


def run(args) -> Dict:
    from lightface.data.lmdb_format import is_complete_dataset
    from pipelines.relabel import get_args_parser as relabel_parser, main as relabel_main
    from pipelines.train_lightcnn import get_args_parser as train_parser, main as train_main

    work = Path(args.work)
    results: Dict = {"settings": vars(args), "datasets": {}}
    torch.set_num_threads(args.threads)
    for name in args.datasets:
        t0 = time.perf_counter()
        split = build_split(name, Path(args.shared_data), work)
        px_g, gl = _pixels(split["train"])
        px_p, pl = _pixels(split["test"])
        torch.manual_seed(args.seed)
        untrained = MODEL_BUILDERS[args.arch](num_classes=2)
        g, _ = embed(untrained, split["train"])
        p, _ = embed(untrained, split["test"])
        res = {"raw_pixels": nn_accuracy(px_g, gl, px_p, pl), "untrained": nn_accuracy(g, gl, p, pl), "runs": {}}
        for noise in args.noise:
            tag = f"{name}_noise{int(round(noise * 100))}"
            data = work / "data" / f"{tag}.lmdb"
            stats = noisy_copy(split["train"], noise, args.seed, data)
            row = {"noise": stats}

            def train(loss: str, train_data: Path, out: Path) -> float:
                if not (out / "last.pt").is_file():  # an interrupted run starts over
                    argv = ["--data", str(train_data), "--out", str(out), "--overwrite", "--arch", args.arch, "--loss", loss,
                            "--epochs", str(args.epochs), "--lr-step", str(args.lr_step), "--batch-size", str(args.batch_size),
                            "--lr", str(args.lr), "--clip-grad", str(args.clip_grad), "--init", "kaiming", "--workers", "0", "--seed", str(args.seed), "--log-every", "50",
                            "--no-tensorboard"]
                    train_main(train_parser().parse_args(argv))
                gal, _ = embed(out / "last.pt", split["train"])  # gallery with the true identities
                prb, _ = embed(out / "last.pt", split["test"])
                return nn_accuracy(gal, gl, prb, pl)

            for method in args.methods:
                t = time.perf_counter()
                if method == "relabel":
                    ce_model = work / "runs" / f"{tag}_ce" / "last.pt"
                    if not ce_model.is_file():
                        train("ce", data, ce_model.parent)
                    relabelled = work / "data" / f"{tag}_1R.lmdb"
                    if not is_complete_dataset(relabelled):
                        relabel_main(relabel_parser().parse_args(
                            ["--data", str(data), "--weights", str(ce_model), "--out", str(relabelled),
                             "--threshold", str(args.threshold), "--device", "cpu", "--overwrite"]))
                    report = json.loads((relabelled / "relabel_report.json").read_text())
                    row["relabel_counts"] = report["counts"]
                    row["relabel_label_accuracy"] = _label_accuracy(relabelled, split["train"])
                    acc = train("ce", relabelled, work / "runs" / f"{tag}_1R")
                else:
                    acc = train(method, data, work / "runs" / f"{tag}_{method}")
                row[method] = acc
                log.info("%s noise %.0f%% %s: NN accuracy %.4f (%.0f s)", name, noise * 100, method, acc,
                         time.perf_counter() - t)
            res["runs"][f"{noise:.2f}"] = row
        res["seconds"] = time.perf_counter() - t0
        results["datasets"][name] = res
    tag = "_".join(args.datasets) + "_" + "_".join(f"{int(round(n * 100))}" for n in args.noise)
    (work / f"results_{tag}.json").write_text(json.dumps(results, indent=2))
    (work / f"results_{tag}.md").write_text(markdown(results))
    return results


def _label_accuracy(relabelled: Path, clean: Path) -> float:
    """Share of a relabelled set's labels that are the true identity (records carry no index, so
    samples are matched by their stored image bytes)."""
    from lightface.data import LMDBDataset

    truth = {}
    c = LMDBDataset(clean)
    for i in range(len(c)):
        truth[bytes(c.record(i)["encoded"])] = int(c.labels[i])
    r = LMDBDataset(relabelled)
    hits = [truth.get(bytes(r.record(i)["encoded"])) == int(r.labels[i]) for i in range(len(r))]
    return float(np.mean(hits))


def markdown(results: Dict) -> str:
    lines = []
    for name, res in results["datasets"].items():
        lines.append(f"### {name} (raw pixels NN {res['raw_pixels']:.3f}, untrained network NN {res['untrained']:.3f})\n")
        lines.append("| flipped labels | CE | soft bootstrap | hard bootstrap | relabel 1R (CE) | relabel kept / relabelled / dropped | label accuracy after relabel |")
        lines.append("|---|---|---|---|---|---|---|")
        for noise, row in res["runs"].items():
            counts = row.get("relabel_counts", {})
            cell = lambda k: f"{row[k]:.3f}" if k in row else "-"  # noqa: E731
            lines.append(
                f"| {float(noise) * 100:.0f}% ({row['noise']['flipped']}/{row['noise']['samples']}) | {cell('ce')} | "
                f"{cell('soft-bootstrap')} | {cell('hard-bootstrap')} | {cell('relabel')} | "
                f"{counts.get('kept', '-')} / {counts.get('relabelled', '-')} / {counts.get('dropped', '-')} | "
                f"{row['relabel_label_accuracy']:.3f} |" if counts else
                f"| {float(noise) * 100:.0f}% | {cell('ce')} | {cell('soft-bootstrap')} | {cell('hard-bootstrap')} | - | - | - |"
            )
        lines.append("")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.noisy_labels", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=["orl", "lfw"], default=["orl", "lfw"], help="data sets")
    p.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.2, 0.4], help="shares of flipped training labels")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="training methods")
    p.add_argument("--arch", default="lightcnn_small", help="model (lightcnn_small is registered by this script)")
    p.add_argument("--epochs", type=int, default=25, help="training epochs per run")
    p.add_argument("--lr-step", type=int, default=20, help="lr x0.457305 every N epochs")
    p.add_argument("--lr", type=float, default=0.005, help="base learning rate")
    p.add_argument("--clip-grad", type=float, default=5.0, help="gradient-norm clipping")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--threshold", type=float, default=0.7, help="relabel threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of noise, initialisation and sample order")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--shared-data", default=str(SHARED_DATA), help="folder with orl_faces/ and lfw_identities/")
    p.add_argument("--work", default="runs/noisy_labels", help="data sets, runs and results go here (reused when present)")
    return p


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lightface.engine.logger").setLevel(logging.WARNING)
    out = run(get_args_parser().parse_args())
    print(markdown(out))
