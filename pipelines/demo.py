"""lightface end to end on real faces, offline, in a few minutes on a CPU.

    python -m pipelines.demo                 # ../shared/data when present, else bundled images
    python -m pipelines.demo --quick         # smoke run: two to three minutes on a 2-core CPU
    python -m pipelines.demo --data DIR      # your own identity folder tree (DIR/<person>/*.jpg)

Steps (each runs the real CLI of that pipeline, as a user would):
1. build an LMDB of aligned faces (``pipelines.build_lmdb``);
2. train a Light CNN briefly (``pipelines.train_lightcnn``) and evaluate verification on
   held-out images (``pipelines.evaluate``: 10-fold accuracy, TAR@FAR, ROC plot);
3. extract embeddings with ``lightface.FaceEmbedder`` and search nearest neighbours;
4. train the wavelet super-resolution GAN with the Light CNN identity loss
   (``pipelines.train_super_resolution``) and super-resolve held-out faces
   (``pipelines.super_resolve --evaluate``: contact sheet, PSNR/SSIM/identity cosine);
5. train TP-GAN briefly and frontalize held-out profile faces (``pipelines.frontalize``);
6. write ``OUT/report.md`` and ``OUT/report.html`` linking every number and picture.

Data: ``../shared/data`` (LFW identities with landmarks, CelebA-HQ, CFP) when present;
``--data DIR`` for your own faces; otherwise scikit-image's bundled ``lfw_subset`` faces
(each face becomes an identity seen through augmented views) and InsightFace's bundled
sample photo. Nothing is downloaded. A step whose data is missing is skipped and the
report says why.
"""
import argparse
import html
import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
from tqdm import tqdm

from lightface.data.io import write_image
from pipelines._argtypes import shared_dir

ROOT = Path(__file__).resolve().parents[1]
#: the file that marks a folder as the demo's output, which a later demo may clear
OUTPUT_MARKER = ".lightface_demo"
log = logging.getLogger("lightface.demo")


def default_shared() -> Path:
    """``../shared`` beside the project (``LIGHTFACE_SHARED`` overrides)."""
    return shared_dir()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    p.add_argument("--data", default=None,
                   help="your own faces: a folder with one sub-folder per identity (default: ../shared/data, "
                        "else bundled sample faces)")
    p.add_argument("--shared", default=str(default_shared()),
                   help="folder holding data/ and models/ (default: %(default)s)")
    p.add_argument("--detector", default=None,
                   help="5-point detector ONNX for whole photos (default: <shared>/models/det_500m.onnx if present)")
    p.add_argument("--quick", action="store_true", help="a smoke run of two to three minutes on a 2-core CPU (few steps, small models)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--keep", action="store_true",
                   help="keep an existing OUT folder's contents (default: start fresh; only a folder an earlier demo "
                        "wrote, or an empty one, is cleared)")
    return p


@dataclass
class Demo:
    """State shared by the demo steps: folders, data found, results and report entries."""

    out: Path
    quick: bool
    device: str
    seed: int
    shared_data: Optional[Path]
    user_data: Optional[Path]
    detector: Optional[str]
    results: Dict[str, dict] = field(default_factory=dict)
    # set by step_dataset / step_recognition for the later steps
    root: Optional[Path] = None  # image root of the train / held-out lists
    train: List[tuple] = field(default_factory=list)  # (relative path, label)
    held: List[tuple] = field(default_factory=list)
    align_args: List[str] = field(default_factory=list)  # build_lmdb alignment flags
    weights: Optional[Path] = None  # the trained Light CNN
    sections: List[str] = field(default_factory=list)
    html_sections: List[str] = field(default_factory=list)

    def data(self, name: str) -> Optional[Path]:
        if self.shared_data is None:
            return None
        path = self.shared_data / name
        return path if path.exists() else None

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def add(self, title: str, lines: List[str], images: List[Path] = ()) -> None:
        """Add a report section: markdown ``lines`` and pictures (paths inside OUT)."""
        md = [f"## {title}", ""] + lines + [""] + [f"![{Path(p).stem}]({self.rel(p)})" for p in images if Path(p).exists()]
        self.sections.append("\n".join(md))
        body = "".join(f"<p>{html.escape(l).replace('`', '')}</p>" if not l.startswith("|") else "" for l in lines)
        table = [l for l in lines if l.startswith("|")]
        if table:
            rows = [r.strip("|").split("|") for r in table if not set(r) <= set("|-: ")]
            body += "<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>" for c in r) + "</tr>"
                for i, r in enumerate(rows)) + "</table>"
        body += "".join(f'<p><img src="{html.escape(self.rel(p))}" style="max-width:100%"></p>' for p in images if Path(p).exists())
        self.html_sections.append(f"<h2>{html.escape(title)}</h2>{body}")


def run_cli(module: str, argv: List[str]):
    """Run ``python -m pipelines.<module> argv`` in this process (its ``main`` through its parser)."""
    import importlib

    from pipelines._cli import parse_with_config

    mod = importlib.import_module(f"pipelines.{module}")
    log.info("$ python -m pipelines.%s %s", module, " ".join(argv))
    return mod.main(parse_with_config(mod.get_args_parser(), argv))


# ---------------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------------

def _lfw_split(demo: Demo):
    """LFW identities: (train items, held-out items), each ``(relative path, label)``; 7 / 3 per person."""
    lfw = demo.data("lfw_identities")
    people = sorted(p.name for p in (lfw / "images").iterdir() if p.is_dir())
    train, held = [], []
    for label, person in enumerate(people):
        files = sorted((lfw / "images" / person).glob("*.jpg"))
        rel = [f"{person}/{f.name}" for f in files]
        train += [(r, label) for r in rel[:7]]
        held += [(r, label) for r in rel[7:]]
    return lfw, people, train, held


def _bundled_identities(folder: Path, n_people: int, views: int, seed: int) -> Path:
    """scikit-image's bundled ``lfw_subset`` faces as an identity tree: each face one person, seen
    through ``views`` augmented variants (shift, rotation, brightness, blur). Returns the tree root."""
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    faces = skdata.lfw_subset()[:100]  # the first 100 entries are faces (25x25, float in [0, 1])
    for i in range(n_people):
        face = cv2.resize((faces[i] * 255).astype(np.uint8), (144, 144), interpolation=cv2.INTER_CUBIC)
        person = folder / f"face{i:03d}"
        person.mkdir(parents=True, exist_ok=True)
        for v in range(views):
            angle, dx, dy = rng.uniform(-8, 8), rng.uniform(-5, 5), rng.uniform(-5, 5)
            M = cv2.getRotationMatrix2D((72, 72), angle, rng.uniform(0.95, 1.05))
            M[:, 2] += (dx, dy)
            img = cv2.warpAffine(face, M, (144, 144), borderMode=cv2.BORDER_REFLECT)
            img = np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
            if rng.random() < 0.5:
                img = cv2.GaussianBlur(img, (3, 3), 0)
            write_image(person / f"{v:02d}.png", img)
    return folder


def _tree_split(root: Path, held_fraction: float = 0.3):
    """An identity folder tree -> (train, held-out) ``(relative path, label)`` lists (last 30% held out)."""
    from lightface.data.io import IMAGE_EXTENSIONS

    people = sorted(p for p in root.iterdir() if p.is_dir())
    train, held = [], []
    for label, person in enumerate(people):
        files = sorted(f for f in person.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        if len(files) < 2:
            continue
        k = max(1, int(round(len(files) * held_fraction)))
        rel = [f.relative_to(root).as_posix() for f in files]
        train += [(r, label) for r in rel[:-k]]
        held += [(r, label) for r in rel[-k:]]
    return train, held


def _write_list(path: Path, items) -> Path:
    path.write_text("".join(f"{p} {label}\n" for p, label in items))
    return path


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------

def step_dataset(demo: Demo) -> None:
    """1. An LMDB of aligned 144x144 gray training crops."""
    work = demo.out / "data"
    work.mkdir(parents=True, exist_ok=True)
    align_args: List[str] = []
    if demo.user_data is not None:
        root, source = demo.user_data, f"your folder {demo.user_data}"
        train, held = _tree_split(root)
        if demo.detector:
            align_args = ["--detect", demo.detector]
    elif demo.data("lfw_identities") is not None:
        lfw, _, train, held = _lfw_split(demo)
        root, source = lfw / "images", "LFW identities (18 people, 5-point landmarks)"
        align_args = ["--landmarks", str(lfw / "landmarks_5pt.txt")]
    else:
        root = _bundled_identities(work / "bundled_faces", 20 if demo.quick else 40, 8, demo.seed)
        source = "scikit-image's bundled lfw_subset faces (each face one identity, 8 augmented views)"
        train, held = _tree_split(root, held_fraction=0.25)
    if not train:
        raise ValueError(f"no identities with two or more images found in {root}")
    train_list = _write_list(work / "train_list.txt", train)
    lmdb_path = work / "train.lmdb"
    summary = run_cli("build_lmdb", [str(train_list), str(lmdb_path), "--root", str(root), "--size", "144",
                                     "--template", "lightcnn_train", "--overwrite", *align_args])
    info = json.loads((lmdb_path / "build_report.json").read_text()) if (lmdb_path / "build_report.json").exists() else {}
    from lightface.data import LMDBDataset

    ds = LMDBDataset(lmdb_path)
    n, classes = len(ds), len(ds.classes)
    sheet = work / "train_samples.png"
    tiles = [ds[i]["image"] for i in range(0, n, max(1, n // 16))][:16]
    write_image(sheet, np.concatenate([cv2.resize(t, (96, 96)) for t in tiles], axis=1))
    demo.results["dataset"] = {"source": source, "root": str(root), "lmdb": str(lmdb_path), "samples": n,
                               "classes": classes, "held_out": len(held), "build_exit_code": summary}
    demo.root, demo.train, demo.held, demo.align_args = root, train, held, align_args
    demo.add("1. Dataset", [f"Source: {source}.",
                            f"`python -m pipelines.build_lmdb` wrote `{demo.rel(lmdb_path)}`: {n} aligned 144x144 gray "
                            f"crops of {classes} identities; {len(held)} images held out for evaluation."
                            + (f" Skipped files: {info.get('skipped', 0)}." if info else "")], [sheet])


def step_recognition(demo: Demo) -> None:
    """2. Train a Light CNN briefly, then evaluate verification on held-out pairs."""
    run = demo.out / "lightcnn"
    argv = ["--data", demo.results["dataset"]["lmdb"], "--arch", "lightcnn9", "--out", str(run), "--overwrite",
            "--batch-size", "32", "--workers", "0", "--seed", str(demo.seed), "--device", demo.device,
            "--log-every", "5", "--no-tensorboard", "--val-split", "0",
            # small data from scratch: kaiming init, lr 0.005 and clipping (docs/noisy_labels.md)
            "--init", "kaiming", "--lr", "0.005", "--clip-grad", "5"]
    argv += ["--epochs", "2", "--max-steps", "6"] if demo.quick else ["--epochs", "30", "--lr-step", "12"]
    summary = run_cli("train_lightcnn", argv)
    weights = run / "model.pt"
    demo.weights = weights
    # verification pairs over the held-out images: every same-identity pair, every different-identity pair
    held = demo.held
    pairs = [(1 if a[1] == b[1] else 0, a[0], b[0]) for i, a in enumerate(held) for b in held[i + 1:]]
    pairs_file = demo.out / "data" / "pairs.txt"
    pairs_file.write_text("".join(f"{l} {a} {b}\n" for l, a, b in pairs))
    align = (["--landmarks", demo.align_args[1]] if demo.align_args[:1] == ["--landmarks"]
             else ["--detector", demo.align_args[1]] if demo.align_args[:1] == ["--detect"] else [])
    report = run_cli("evaluate", ["--weights", str(weights), "--pairs", str(pairs_file), "--images",
                                  str(demo.root), "--out", str(run / "verification.json"),
                                  "--plot", str(run / "roc.png"), "--device", demo.device, *align])
    m = report.get("metrics", report)
    demo.results["recognition"] = {"train": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
                                   "verification": m, "pairs": len(pairs)}
    lines = [f"`python -m pipelines.train_lightcnn` trained LightCNN-9 from scratch on the LMDB "
             f"({summary.get('steps', summary.get('step', '?'))} steps); checkpoint `{demo.rel(weights)}`.",
             f"`python -m pipelines.evaluate` on {len(pairs)} held-out pairs "
             f"({sum(p[0] for p in pairs)} same-identity):", "", "| metric | value |", "|---|---|"]
    lines.append(f"| 10-fold accuracy | {m['accuracy_mean']:.4f} +- {m['accuracy_std']:.4f} "
                 f"(all-different baseline {m['n_diff'] / max(m['n_pairs'], 1):.4f}) |")
    for key in ("threshold", "auc", "eer"):
        lines.append(f"| {key.upper() if key != 'threshold' else 'cosine threshold'} | {m[key]:.4f} |")
    for far, tar in (m.get("tar_at_far") or {}).items():
        lines.append(f"| TAR @ FAR {far} | {'n/a (too few negatives)' if tar is None else f'{tar:.4f}'} |")
    lines.append("")
    demo.add("2. Light CNN training and verification", lines, [run / "roc.png", run / "curves.png"])


def step_embeddings(demo: Demo) -> None:
    """3. FaceEmbedder on held-out images and a nearest-neighbour search (gallery: one image per person)."""
    from lightface import FaceEmbedder, similarity
    from lightface.data.io import read_image
    from lightface.utils.atomic_write import atomic_file

    held = demo.held
    root = demo.root
    images, how = [], ""
    landmarks = demo.align_args[:1] == ["--landmarks"]
    aligned = landmarks or not (demo.detector and demo.user_data is not None)
    embedder = FaceEmbedder(demo.weights, device=demo.device, detector=demo.detector if not aligned else None)
    if landmarks:
        marks = {}
        for line in Path(demo.align_args[1]).read_text().split("\n"):
            parts = line.split()
            if len(parts) == 11:
                marks[parts[0]] = np.asarray(parts[1:], np.float32).reshape(5, 2)
        for rel, _ in held:  # cut as the embedder cuts whole photos: the alignment its weights were trained on
            images.append(embedder.align(read_image(root / rel), marks[rel])[0])
        how = "aligned with the 5-point landmarks to the Light CNN template"
    elif not aligned:
        images, how = [str(root / rel) for rel, _ in held], f"detected and aligned ({Path(demo.detector).name})"
    else:
        images = [cv2.resize(read_image(root / rel, "gray")[8:136, 8:136], (128, 128)) for rel, _ in held]
        how = "centre crops"
    t0 = time.perf_counter()
    emb = embedder.embed(images, aligned=aligned)
    rate = len(images) / max(time.perf_counter() - t0, 1e-9)
    labels = np.array([label for _, label in held])
    gallery_idx = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    probe_idx = [i for i in range(len(held)) if i not in set(gallery_idx)]
    sims = similarity(emb[probe_idx], emb[gallery_idx], pairwise=True)
    top = np.argsort(-sims, axis=1)
    hits = labels[np.array(gallery_idx)[top[:, 0]]] == labels[probe_idx]
    rank1 = float(hits.mean()) if len(hits) else float("nan")
    chance = 1.0 / max(len(gallery_idx), 1)
    # picture: probe | best 3 gallery matches, for the first 6 probes
    rows = []
    for r, pi in enumerate(probe_idx[:6]):
        tiles = [_tile(read_image(root / held[pi][0]), "probe")]
        for k in top[r, :3]:
            gi = gallery_idx[k]
            ok = labels[gi] == labels[pi]
            tiles.append(_tile(read_image(root / held[gi][0]), f"{sims[r, k]:.2f} {'OK' if ok else 'x'}"))
        rows.append(np.concatenate(tiles, axis=1))
    nn_png = demo.out / "embeddings_nn.png"
    if rows:
        write_image(nn_png, np.concatenate(rows, axis=0))
    with atomic_file(demo.out / "embeddings.npz") as f:
        np.savez(f, embeddings=emb, labels=labels, paths=np.array([p for p, _ in held]))
    demo.results["embeddings"] = {"count": int(len(emb)), "dim": int(emb.shape[1]), "per_second": rate,
                                  "rank1": rank1, "chance": chance, "gallery": len(gallery_idx), "probes": len(probe_idx)}
    demo.add("3. Embeddings and nearest-neighbour search", [
        f"`FaceEmbedder` embedded {len(emb)} held-out faces ({how}) into L2-normalised {emb.shape[1]}-d vectors "
        f"at {rate:.1f} faces/s; saved to `embeddings.npz`.",
        f"Nearest neighbour over a gallery of one image per person: rank-1 {rank1:.3f} on {len(probe_idx)} probes "
        f"(chance {chance:.3f}). Rows: probe, then its three closest gallery faces with cosine similarity."], [nn_png])


def step_shipped_recognition(demo: Demo) -> None:
    """4. The shipped recogniser (FaceEmbedder() with no weights) on held-out people."""
    from lightface import FaceEmbedder, similarity
    from lightface.eval.dev_protocols import crop_embedder, run_dev_protocols
    from lightface.models import PretrainedError, default_weights

    try:
        entry = default_weights("recognition")
    except PretrainedError as err:
        demo.add("4. The shipped recogniser", [f"No recogniser ships with this install: {err}"])
        return
    # --quick: without the card's flip fusion, at half the compute (the card's threshold without it)
    embedder = FaceEmbedder(device=demo.device, detector=demo.detector, flip=False if demo.quick else None)
    lines = [f"`FaceEmbedder()` loaded the shipped `{entry.name}` ({entry.arch}, sha256 `{entry.sha256[:12]}...`, "
             f"threshold {embedder.threshold:.3f}, flip fusion {'on' if embedder.flip else 'off'}); "
             "see docs/model_zoo.md for how it was trained."]
    images: List[Path] = []
    if demo.shared_data is not None and (demo.shared_data / "lfw_train").is_dir():
        protocols = ["lfw_dev"] if demo.quick else ["lfw_dev", "cfp_fp"]
        r = run_dev_protocols(crop_embedder(embedder), demo.shared_data, protocols, align_method=embedder.align_method)
        demo.results["shipped_recognition"] = {"model": entry.name, **r}
        lines += ["", "| protocol (people never seen in training) | result |", "|---|---|",
                  f"| LFW fold-2 pairs, 10-fold accuracy | {r['lfw_dev']['accuracy']:.4f} |",
                  f"| LFW fold-2 pairs, AUC | {r['lfw_dev']['auc']:.4f} |"]
        if "cfp_fp" in r:
            lines += [f"| CFP held-out frontal-profile accuracy | {r['cfp_fp']['fp_accuracy']:.4f} |",
                      f"| CFP held-out rank-1, profile -> frontal gallery | {r['cfp_fp']['rank1_profile_to_frontal']:.4f} |"]
        cfp = demo.shared_data / "cfp" / "Images"
        people = sorted(p for p in cfp.iterdir() if p.is_dir())[: 8 if demo.quick else 35]
        if people and demo.detector is not None:
            # whole photos: detected, aligned and embedded; gallery = one frontal photo per person
            gallery = [sorted((p / "frontal").glob("*.jpg"))[0] for p in people]
            probes = [f for p in people for f in sorted((p / "frontal").glob("*.jpg"))[1:3]]
            g = embedder.embed([str(f) for f in gallery], aligned=False)
            q = embedder.embed([str(f) for f in probes], aligned=False)
            sims = similarity(q, g, pairwise=True)
            top = np.argsort(-sims, axis=1)
            truth = np.repeat(np.arange(len(people)), 2)
            rank1 = float((top[:, 0] == truth).mean())
            lines.append(f"| whole CFP photos ({Path(str(demo.detector)).name} detector), rank-1 of {len(probes)} "
                         f"probes against {len(gallery)} people | {rank1:.4f} |")
            rows = []
            for r_i in range(min(6, len(probes))):
                tiles = [_tile(cv2.imread(str(probes[r_i])), "probe")]
                for k in top[r_i, :3]:
                    tiles.append(_tile(cv2.imread(str(gallery[k])), f"{sims[r_i, k]:.2f} {'OK' if k == truth[r_i] else 'x'}"))
                rows.append(np.concatenate(tiles, axis=1))
            sheet = demo.out / "shipped_search.png"
            write_image(sheet, np.concatenate(rows, axis=0))
            images.append(sheet)
            demo.results.setdefault("shipped_recognition", {})["whole_photo_rank1"] = rank1
    demo.add("4. The shipped recogniser", lines, images)


def _tile(img: np.ndarray, text: str, size: int = 112) -> np.ndarray:
    from lightface.data.io import to_bgr

    t = cv2.resize(to_bgr(img), (size, size), interpolation=cv2.INTER_AREA)
    cv2.putText(t, text, (3, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 255, 255), 1, cv2.LINE_AA)
    return t


def step_super_resolution(demo: Demo) -> None:
    """5. Train the 4x wavelet SR GAN (Light CNN identity loss) and evaluate on held-out faces."""
    work = demo.out / "super_resolution"
    hr_lmdb = demo.out / "data" / "hr_faces.lmdb"
    train_items = demo.train if demo.quick else demo.train + demo.held[: len(demo.held) // 2]
    _write_list(demo.out / "data" / "hr_list.txt", train_items)
    run_cli("build_lmdb", [str(demo.out / "data" / "hr_list.txt"), str(hr_lmdb), "--root", str(demo.root),
                           "--size", "128", "--template", "lightcnn", "--color", "rgb", "--overwrite", *demo.align_args])
    run = work / "train"
    argv = ["--data", str(hr_lmdb), "--out", str(run), "--overwrite", "--scale", "4", "--identity-weights", str(demo.weights),
            "--workers", "0", "--device", demo.device, "--seed", str(demo.seed), "--val-count", "4"]
    argv += (["--channels", "16", "--num-blocks", "2", "--head-channels", "16", "--batch-size", "4", "--steps", "6",
              "--val-every", "6", "--log-every", "3"] if demo.quick else
             ["--channels", "32", "--num-blocks", "4", "--head-channels", "32", "--batch-size", "8", "--steps", "400",
              "--val-every", "200", "--log-every", "25", "--max-minutes", "2"])
    run_cli("train_super_resolution", argv)
    # held-out HR faces: CelebA-HQ when present (never seen in training), else the held-out identities' images
    celeba = demo.data("celeba_hq")
    evaluation = work / "evaluation"
    if celeba is not None and demo.detector:
        hr_dir, aligned_flag, what = celeba, ["--detector", demo.detector], "CelebA-HQ (not used in training)"
        if demo.quick:
            hr_dir = demo.out / "data" / "celeba_subset"
            hr_dir.mkdir(parents=True, exist_ok=True)
            for f in sorted(celeba.rglob("*.jpg"))[:2]:
                shutil.copy(f, hr_dir / f.name)
    else:
        hr_dir = demo.out / "data" / "sr_heldout"
        hr_dir.mkdir(parents=True, exist_ok=True)
        from lightface.data import LMDBDataset

        ds = LMDBDataset(hr_lmdb)
        for i in range(min(len(ds), 6)):  # aligned 128 crops (training images when nothing else is held out)
            write_image(hr_dir / f"{i:02d}.png", ds[i]["image"])
        aligned_flag, what = ["--aligned"], "aligned crops"
    argv = ["-o", str(evaluation), "--weights", str(run / "model.pt"), "--evaluate", str(hr_dir),
            "--identity-weights", str(demo.weights), "--device", demo.device, *aligned_flag]
    report = run_cli("super_resolve", argv)
    mean = report["evaluation"]["mean"]
    images = [evaluation / "contact_sheet.png"]

    def row(name, m, key):
        return f"| {name} | {m['psnr_' + key]:.2f} | {m['ssim_' + key]:.4f} | {m.get('id_cos_' + key, float('nan')):.4f} |"

    lines = [f"`python -m pipelines.train_super_resolution` trained a 4x (32 -> 128) Wavelet-SRNet with the frozen Light CNN "
             f"from step 2 as identity loss; `python -m pipelines.super_resolve --evaluate` on {what}:", "",
             "| | PSNR (dB) | SSIM | identity cosine |", "|---|---|---|---|",
             row("bicubic", mean, "bicubic"), row("SR, trained in this demo", mean, "sr")]
    from lightface.models.pretrained import PretrainedError, default_weights, sr_alias

    sr_weights = run / "model.pt"
    shipped_names = []
    for scale in (4, 8):  # the super-resolvers that ship with lightface (docs/model_zoo.md), without --weights
        try:
            shipped = default_weights(sr_alias(scale))
        except PretrainedError:
            continue
        if demo.quick:
            break
        ev = work / f"evaluation_shipped_x{scale}"
        shipped_argv = list(argv)
        shipped_argv[shipped_argv.index("-o") + 1] = str(ev)
        i = shipped_argv.index("--weights")
        shipped_argv[i:i + 2] = ["--scale", str(scale)]
        shipped_mean = run_cli("super_resolve", shipped_argv)["evaluation"]["mean"]
        name = f"SR, shipped `{shipped.name}` (`SuperResolver(scale={scale})`)"
        if scale == 4:
            lines.append(row(name, shipped_mean, "sr"))
            sr_weights = None
        else:
            lines += ["", f"{scale}x ({128 // scale} -> 128), same faces:", "",
                      "| | PSNR (dB) | SSIM | identity cosine |", "|---|---|---|---|",
                      row(f"bicubic {scale}x", shipped_mean, "bicubic"), row(name, shipped_mean, "sr")]
        images.append(ev / "contact_sheet.png")
        shipped_names.append(f"the shipped {scale}x model")
        demo.results[f"super_resolution_shipped_x{scale}"] = {"name": shipped.name, **shipped_mean}
    lines += ["", "Contact sheet rows: LR | bicubic | SR | HR (first: the demo's model"
              + "".join(f", then {n}" for n in shipped_names) + ")."]
    whole = demo.data("real_lq_faces")
    if whole is not None and demo.detector and not demo.quick:
        photo = sorted(whole.glob("*whole_imgs/*.jpg"))[:1]
        if photo:
            weights = ["--weights", str(sr_weights)] if sr_weights is not None else ["--scale", "4"]
            run_cli("super_resolve", ["-i", str(photo[0]), "-o", str(work / "whole_photo"), *weights,
                                      "--detector", demo.detector, "--device", demo.device])
            cmp = sorted((work / "whole_photo" / "cmp").glob("*.png"))[:2]
            images += cmp
            lines.append(f"Whole photo `{photo[0].name}`: faces detected, aligned, super-resolved and pasted back "
                         f"(`{demo.rel(work / 'whole_photo')}`); below, input crop | restored crop.")
    demo.results["super_resolution"] = {"evaluated_on": what, **mean}
    demo.add("5. Face super-resolution", lines, images)


def step_frontalization(demo: Demo) -> None:
    """6. Train TP-GAN briefly on CFP and frontalize held-out profile faces."""
    cfp = demo.data("cfp")
    if cfp is None:
        demo.results["frontalization"] = {"skipped": "no CFP-style frontal/profile data"}
        demo.add("6. Frontalization", ["Skipped: frontalization needs frontal/profile photos of the same people "
                                       "(e.g. ../shared/data/cfp, layout <id>/frontal/*.jpg, <id>/profile/*.jpg)."])
        return
    from lightface.data.pose_pairs import write_cfp_landmarks

    work = demo.out / "frontalization"
    n_ids = 8 if demo.quick else 35
    subset = demo.out / "data" / "cfp_subset"
    ids = sorted(p.name for p in (cfp / "Images").iterdir() if p.is_dir())[:n_ids]
    for sub in ("Images", "Fiducials"):
        (subset / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            link = subset / sub / i
            if not link.exists():
                link.symlink_to(cfp / sub / i, target_is_directory=True)
    marks = demo.out / "data" / "cfp_landmarks.txt"
    write_cfp_landmarks(subset, marks)
    pose_lmdb = demo.out / "data" / "cfp_pose.lmdb"
    run_cli("build_lmdb", [str(subset / "Images"), str(pose_lmdb), "--size", "128", "--template", "lightcnn",
                           "--color", "rgb", "--landmarks", str(marks), "--overwrite"])
    run = work / "train"
    held_ids = 3 if demo.quick else 10
    argv = ["--data", str(pose_lmdb), "--out", str(run), "--overwrite", "--identity-weights", str(demo.weights),
            "--train-identities", str(n_ids - held_ids), "--workers", "0", "--device", demo.device,
            "--seed", str(demo.seed)]
    argv += (["--width", "8", "--d-width", "8", "--feature-dim", "32", "--noise-dim", "8", "--steps", "4",
              "--batch-size", "2", "--log-every", "2", "--val-every", "4"] if demo.quick else
             ["--width", "16", "--d-width", "16", "--feature-dim", "64", "--noise-dim", "16", "--steps", "300",
              "--batch-size", "8", "--log-every", "25", "--val-every", "300", "--max-minutes", "1.5"])
    summary = run_cli("train_frontalization", argv)
    # held-out identities' profile crops from the LMDB
    from lightface.data import LMDBDataset

    ds = LMDBDataset(pose_lmdb)
    held_labels = sorted(set(ds.labels.tolist()))[-held_ids:]
    crops = work / "profiles"
    crops.mkdir(parents=True, exist_ok=True)
    n = 0
    for i in range(len(ds)):
        if int(ds.labels[i]) in held_labels and ds.attributes(i).get("pose") == "profile" and n < (3 if demo.quick else 8):
            write_image(crops / f"{ds.classes[int(ds.labels[i])].replace('/', '_')}_{i:04d}.png", ds[i]["image"])
            n += 1
    result = work / "frontalized"
    run_cli("frontalize", ["-i", str(crops), "-o", str(result), "--weights", str(run / "model.pt"),
                           "--aligned", "--device", demo.device])
    cmp = sorted((result / "cmp").glob("*.png"))
    sheet = work / "contact_sheet.png"
    if cmp:
        write_image(sheet, np.concatenate([cv2.imread(str(c)) for c in cmp], axis=0))
    images = [sheet]
    from lightface.models.pretrained import PretrainedError, default_weights

    try:
        shipped = default_weights("frontalization")  # the frontalizer that ships with lightface, if one does
    except PretrainedError:
        shipped = None
    if shipped is not None and not demo.quick:
        run_cli("frontalize", ["-i", str(crops), "-o", str(work / "frontalized_shipped"), "--aligned",
                               "--device", demo.device])  # no --weights: Frontalizer()'s default
        shipped_cmp = sorted((work / "frontalized_shipped" / "cmp").glob("*.png"))
        if shipped_cmp:
            images.append(work / "contact_sheet_shipped.png")
            write_image(images[-1], np.concatenate([cv2.imread(str(c)) for c in shipped_cmp], axis=0))
    val = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float)) and k.startswith("val_")}
    demo.results["frontalization"] = {"identities": n_ids, "held_out": held_ids, "frontalized": len(cmp), **val}
    lines = [f"`python -m pipelines.train_frontalization` trained a small TP-GAN on {n_ids - held_ids} CFP identities "
             f"(aligned with their hand-annotated fiducials); `python -m pipelines.frontalize --aligned` turned "
             f"{len(cmp)} profile faces of {held_ids} held-out identities frontal. Rows: profile input | synthesised frontal."]
    if val:
        lines += ["", "Validation on the held-out identities (cosine / rank-1 against their frontal gallery, raw "
                  "profile vs frontalised):", "", "| validation | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in val.items()] + [""]
    lines.append("A few CPU minutes are far from the paper's Multi-PIE training: expect blurry, average-looking faces.")
    if len(images) > 1:
        lines.append(f"Second sheet: the same profiles frontalized by the shipped model `{shipped.name}` "
                     "(`python -m pipelines.frontalize` without `--weights`).")
    demo.add("6. Frontalization (TP-GAN)", lines, images)


STEPS: List[Callable[[Demo], None]] = [step_dataset, step_recognition, step_embeddings, step_shipped_recognition,
                                       step_super_resolution, step_frontalization]


def step_status(demo: Demo, name: str, failures: Dict[str, str]) -> str:
    """A step's status in the report: ``FAILED: error``, ``skipped: reason`` (the step recorded
    ``{"skipped": reason}`` as its results) or ``ok``."""
    if name in failures:
        return f"FAILED: {failures[name]}"
    result = demo.results.get(name)
    if isinstance(result, dict) and "skipped" in result:
        return f"skipped: {result['skipped']}"
    return "ok"


def write_report(demo: Demo, timings: Dict[str, float], failures: Dict[str, str]) -> Path:
    """Write OUT/report.md, OUT/report.html and OUT/results.json (each atomically); returns the markdown path."""
    from lightface.utils.atomic_write import write_text_atomic

    head = [f"# lightface demo{' (quick)' if demo.quick else ''}", "",
            f"Finished {time.strftime('%Y-%m-%d %H:%M:%S')} on {demo.device}; total {sum(timings.values()):.0f} s.", "",
            "| step | seconds | status |", "|---|---|---|"]
    head += [f"| {name} | {sec:.1f} | {step_status(demo, name, failures)} |" for name, sec in timings.items()]
    md = "\n\n".join(["\n".join(head)] + demo.sections) + "\n"
    write_text_atomic(demo.out / "report.md", md)
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 8px}"
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{s:.1f}</td><td>{html.escape(step_status(demo, n, failures))}</td></tr>"
                   for n, s in timings.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lightface demo</title><style>{style}</style></head>"
            f"<body><h1>lightface demo</h1><table><tr><th>step</th><th>seconds</th><th>status</th></tr>{rows}</table>"
            + "".join(demo.html_sections) + "</body></html>")
    write_text_atomic(demo.out / "report.html", page)
    write_text_atomic(demo.out / "results.json", json.dumps({"timings": timings, "failures": failures, **demo.results},
                                                            indent=2, default=str))
    return demo.out / "report.md"


class OutputFolderError(ValueError):
    """``--out`` names a folder the demo must not clear, or a file."""


def is_demo_output(folder: Path) -> bool:
    """Whether ``folder`` was written by a demo: it holds :data:`OUTPUT_MARKER`, or (demos before the
    marker) the report.md and results.json every finished demo wrote."""
    return (folder / OUTPUT_MARKER).is_file() or all((folder / n).is_file() for n in ("report.md", "results.json"))


def prepare_output_folder(out: Path, keep: bool, data: Optional[str]) -> None:
    """Create ``out`` (marked with :data:`OUTPUT_MARKER`), clearing it first unless ``keep``.

    Only a folder an earlier demo wrote (:func:`is_demo_output`) or an empty one is cleared: any
    other existing folder is refused with :class:`OutputFolderError`, and so is a ``--data``
    folder inside ``out``, so that a mistyped ``--out`` never deletes a user's files."""
    if data is not None and Path(data).resolve().is_relative_to(out.resolve()):
        raise OutputFolderError(f"--data {data} is inside --out {out}, which the demo writes into: choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file: give a folder")
    if out.is_dir() and not keep and any(out.iterdir()):
        if not is_demo_output(out):
            raise OutputFolderError(f"--out {out} already holds files the demo did not write (no {OUTPUT_MARKER}); "
                             "the demo clears its output folder before it runs: choose another --out, "
                             "or pass --keep to write into it beside them")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUTPUT_MARKER).touch()


def run_demo(args: argparse.Namespace) -> Dict[str, object]:
    """Run every step; returns ``{"report": path, "results": ..., "failures": {step: message}}``."""
    out = Path(args.out)
    prepare_output_folder(out, args.keep, args.data)
    shared = Path(args.shared)
    shared_data = shared / "data" if (shared / "data").is_dir() else None
    detector = args.detector
    if detector is None and (shared / "models" / "det_500m.onnx").is_file():
        detector = str(shared / "models" / "det_500m.onnx")
    random.seed(args.seed)
    np.random.seed(args.seed)
    import torch

    torch.manual_seed(args.seed)
    demo = Demo(out=out.resolve(), quick=args.quick, device=args.device, seed=args.seed,
                shared_data=None if args.data else shared_data, user_data=Path(args.data).resolve() if args.data else None,
                detector=detector)
    timings: Dict[str, float] = {}
    failures: Dict[str, str] = {}
    bar = tqdm(STEPS, desc="lightface demo", unit="step")
    for step in bar:
        name = step.__name__.replace("step_", "")
        bar.set_postfix_str(name)
        log.info("=== %s: %s", name, step.__doc__.strip().splitlines()[0])
        t0 = time.perf_counter()
        try:
            step(demo)
        except Exception as err:  # one step's failure is reported; the steps that need it are skipped
            log.exception("step %s failed", name)
            failures[name] = f"{type(err).__name__}: {err}"
            timings[name] = time.perf_counter() - t0
            if name in ("dataset", "recognition"):
                break
            continue
        timings[name] = time.perf_counter() - t0
    report = write_report(demo, timings, failures)
    return {"report": str(report), "html": str(out / "report.html"), "results": demo.results, "failures": failures}


def main(args: argparse.Namespace) -> Dict[str, object]:
    return run_demo(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lightface.engine.stop_signals import TrainingInterrupted

    try:
        result = main(get_args_parser().parse_args())
    except TrainingInterrupted as stop:  # Ctrl-C during a training stage: saved, and the demo ends there
        print(f"demo: stopped by {stop.signal_name} in a training stage (step {stop.summary.get('step')})",
              file=sys.stderr)
        sys.exit(stop.exit_status)
    except OutputFolderError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"\nReport: {result['report']}\n        {result['html']}")
    if result["failures"]:
        print("Failed steps: " + ", ".join(f"{k} ({v})" for k, v in result["failures"].items()), file=sys.stderr)
        sys.exit(1)
