"""Face search: FaceGallery vs numpy brute force vs a deepface-style scan; FAISS recall and speed.

    python -m benchmarks.search                          # 10k and 100k synthetic faces + real LFW faces
    python -m benchmarks.search --sizes 10k 100k 1M      # + the 1M gallery (about 1.5 GB of RAM for the baselines)
    python -m benchmarks.search --real-only --evidence   # real faces only: rank-1 and false-accept rate

Synthetic galleries are clustered like real identities: ``N / 10`` people, 10 faces each,
256-d unit vectors ``centre + noise`` drawn to match the statistics of real face
embeddings (measured on dlib's recogniser over the shared faces: strangers 0.00 +- 0.17,
same person 0.66 +- 0.17, 90% of the variance in ~50 dimensions; see ``SPECTRUM``);
``--isotropic`` is a harder variant. Queries are new faces of enrolled people. For each
size, same queries:

* ``search (ours)``: :meth:`FaceGallery.search` with ``backend="exact"``: chunked scan of
  the float16 memory map (no copy in RAM), top-k merged across chunks, identities and
  photo paths read from SQLite for the k results; ``exact kernel``: the scan alone
  (:func:`lightface.gallery.exact.exact_search` on what ``search`` scans: the float16 map,
  or the float32 copy of galleries under 64 MiB; rows and scores, like the numpy baseline);
* ``numpy f32``: the gallery as a float32 matrix already in RAM, ``q @ G.T`` then
  ``argpartition`` top-k (the usual brute force; twice our memory);
* ``deepface-style``: what ``deepface.find`` does per query: a Python loop over every stored
  face (embeddings kept as lists, as in its pickle) computing its ``find_cosine_distance``,
  then a sort (without its pandas overhead). Timed on the first 20k faces at most and
  scaled linearly to the gallery size (it is a linear scan), which the table marks with ``*``;
* ``faiss``: the index :meth:`FaceGallery.build_index` picks for the size (HNSW up to 2M
  faces, IVF above), recall@1 = the fraction of queries whose top-1 face equals the exact
  top-1 (in brackets: whose top-1 identity does, what identification needs).

Two query regimes: one query at a time (``Q=1``: interactive, memory-bound) and one batch of
``--queries`` queries (bulk identification). Each regime runs the paths interleaved for
``--rounds`` rounds and keeps each path's best round. Also measured: faces/s of ``add``,
disk bytes per face (embedding file + SQLite), resident bytes per face (ours: growth of
the process's resident memory over one search: the float16 pages mapped by the scan, plus
the float32 copy kept for galleries under 64 MiB; numpy: its float32 array;
deepface-style: lists, by tracemalloc on up to 20k faces, scaled), and the time to open the gallery (``FaceGallery(path)`` + len).

Real faces (``--real``, default ``../shared/data`` when present): photos of
``lfw_train`` enrolled with :meth:`FaceGallery.enroll` (the default detector pipeline:
detect, align, embed, store) against the same photos only embedded
(``FaceEmbedder.try_embed(aligned=False)``), then exact search over the real embeddings.
``--evidence``: identification on people the shipped recogniser never trained on: LFW
View-2 fold 2 (``lfw_train``, aligned from the given landmarks) and the 35 held-out CFP
people (``cfp/``, whole photos through the detector). One photo per person is enrolled
for four fifths of the people; their other photos are identified (closed-set rank-1 and
rank-5; open-set DIR, the detection-and-identification rate: right person and score >=
threshold); every photo of the remaining fifth (and of LFW's single-photo people) is a
never-enrolled face, whose false-accept rate (best score >= threshold) is reported at
the model's threshold; DIR is also given at the threshold that accepts 1% of them.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from pipelines._argtypes import shared_dir, weights_spec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL = shared_dir() / "data"
DEEPFACE_MAX = 20_000
DIM = 256


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"sizes look like 10k, 100k, 1M or 5000, got {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("benchmarks.search", description="Face search benchmark",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", nargs="*", type=parse_size, default=[10_000, 100_000],
                   help="synthetic gallery sizes (10k, 100k, 1M); none: real faces only")
    p.add_argument("--queries", type=int, default=256, help="queries in the batch regime (and for recall@1)")
    p.add_argument("--single", type=int, default=10, help="single queries timed one by one per round")
    p.add_argument("--k", type=int, default=5, help="neighbours per query")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best counts)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch / FAISS / BLAS threads")
    p.add_argument("--no-faiss", action="store_true", help="skip FAISS even when installed")
    p.add_argument("--isotropic", action="store_true",
                   help="isotropic synthetic embeddings (a stress test for FAISS) instead of the real-face statistics")
    p.add_argument("--real", default=str(DEFAULT_REAL) if DEFAULT_REAL.is_dir() else None,
                   help="shared data folder with lfw_train/ (None: skip real faces)")
    p.add_argument("--real-photos", type=int, default=120, help="photos enrolled for the real enrolment throughput")
    p.add_argument("--weights", default=None, type=weights_spec("recognition"),
                   help="recogniser for real faces (default: the shipped one; when none ships, random LightCNN-9 "
                        "weights, labelled as such)")
    p.add_argument("--detector", default=None,
                   help="detector for real enrolment (default: ../shared/models/det_500m.onnx when present, else the "
                        "embedder's default)")
    p.add_argument("--evidence", action="store_true",
                   help="run the real-face identification protocol (embeds every lfw_train photo: minutes)")
    p.add_argument("--evidence-folds", nargs="+", default=["2"],
                   help="LFW View-2 folds of the lfw_train people used by --evidence (fold 2: held out of the shipped "
                        "model's training; 'all' for every person)")
    p.add_argument("--real-only", action="store_true", help="skip the synthetic galleries and the enrolment timing")
    p.add_argument("--reference-embeddings", default=None,
                   help="with --evidence: also run the protocol on precomputed embeddings of an LMDB's samples "
                        "(e.g. LMDB/teacher_dlib.npy from pipelines.teacher_embeddings), as a strong-model reference")
    p.add_argument("--workdir", default=None, help="where galleries are written (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


# -- helpers -------------------------------------------------------------------------------------------
def _best(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _fmt_n(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else (f"{n // 1000}k" if n % 1000 == 0 else str(n))


def _rss_file_bytes() -> int:
    """Resident file-backed pages of this process (RssFile: memory-mapped files)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    return 0


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


# The synthetic galleries copy the statistics of real face embeddings, measured on dlib's
# ResNet recogniser (128-d, LFW 99.38%) over the shared lfw_train / celeba_ids / cfp faces
# (the teacher embeddings of pipelines.teacher_embeddings), centred: strangers score
# 0.00 +- 0.17..0.185, two photos of one person 0.66..0.68 +- 0.12..0.18, the median gap
# between a face's best and second-best same-person match is 0.02..0.03, and 90% of the
# variance lies in 48-49 dimensions (participation ratio 28-33). Here: variance of
# dimension i ~ i^-0.4 exp(-i/30) (90% in 50 of 256 dims, ratio 33), identity centres and
# per-face noise drawn with that spectrum, noise scale 0.65 exp(0.45 N(0,1)) per face,
# which gives strangers 0.00 +- 0.174, same person 0.66 +- 0.17, gap 0.021.
# ``--isotropic`` draws everything isotropic in 256-d instead (strangers +- 0.06, same
# person 0.61 +- 0.03, gap 0.012: a far harder case for approximate search than real faces).
SPECTRUM = (0.4, 30.0)
NOISE = (0.65, 0.45)
ISOTROPIC_NOISE = 0.8


def _scale(dim: int, isotropic: bool) -> np.ndarray:
    if isotropic:
        return np.full(dim, 1.0, np.float32)
    i = np.arange(1, dim + 1, dtype=np.float64)
    lam = i ** -SPECTRUM[0] * np.exp(-i / SPECTRUM[1])
    return np.sqrt(lam / lam.mean()).astype(np.float32)


def _faces(centres: np.ndarray, people: np.ndarray, rng, isotropic: bool) -> np.ndarray:
    dim = centres.shape[1]
    z = rng.standard_normal((len(people), dim), dtype=np.float32)
    if isotropic:
        x = centres[people] + np.float32(ISOTROPIC_NOISE / np.sqrt(dim)) * z
    else:
        s = (NOISE[0] * np.exp(NOISE[1] * rng.standard_normal(len(people)))).astype(np.float32)
        x = centres[people] + s[:, None] * _scale(dim, False) * z
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int = DIM, per_person: int = 10, seed: int = 0, isotropic: bool = False,
              chunk: int = 200_000):
    """``(centres, chunks)``: identity centres and a generator of (embeddings float32 (c, dim),
    identity names) chunks of a gallery of ``n`` faces, ``per_person`` per identity."""
    rng = np.random.default_rng(seed)
    people = max(1, n // per_person)
    centres = rng.standard_normal((people, dim), dtype=np.float32) * _scale(dim, isotropic)
    if isotropic:
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def chunks():
        for start in range(0, n, chunk):
            idx = np.arange(start, min(start + chunk, n)) // per_person % people
            yield _faces(centres, idx, rng, isotropic), [f"id{p:07d}" for p in idx]

    return centres, chunks()


def make_queries(centres: np.ndarray, q: int, seed: int = 1, isotropic: bool = False) -> np.ndarray:
    """``q`` new faces (not in the gallery) of random enrolled identities."""
    rng = np.random.default_rng(seed)
    return _faces(centres, rng.integers(0, len(centres), q), rng, isotropic)


def numpy_search(g32: np.ndarray, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The float32 brute force: all scores, argpartition, sort the k."""
    scores = q @ g32.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, part, 1)
    order = np.argsort(-top, axis=1)
    return np.take_along_axis(top, order, 1), np.take_along_axis(part, order, 1)


def find_cosine_distance(source_representation, test_representation):
    """deepface.modules.verification.find_cosine_distance (lists converted per call, as deepface does)."""
    if isinstance(source_representation, list):
        source_representation = np.array(source_representation)
    if isinstance(test_representation, list):
        test_representation = np.array(test_representation)
    a = np.matmul(np.transpose(source_representation), test_representation)
    b = np.sum(np.multiply(source_representation, source_representation))
    c = np.sum(np.multiply(test_representation, test_representation))
    return 1 - (a / (np.sqrt(b) * np.sqrt(c)))


def deepface_search(representations: List[list], query: np.ndarray, k: int) -> List[Tuple[float, str]]:
    """One query the deepface way: every stored face in a Python loop, then a sort."""
    target = query.tolist()
    distances = [(find_cosine_distance(rep[1], target), rep[0]) for rep in representations]
    distances.sort(key=lambda d: d[0])
    return distances[:k]


# -- synthetic galleries -----------------------------------------------------------------------------------
def bench_size(n: int, args, workdir: Path) -> Dict:
    from lightface.gallery import FaceGallery, faiss_backend

    out: Dict = {"size": n}
    path = workdir / f"synthetic-{_fmt_n(n)}"
    if path.exists():
        shutil.rmtree(path)
    centres, chunks = synthetic(n, isotropic=args.isotropic)
    g32 = np.empty((n, DIM), np.float32)
    gallery = FaceGallery(path)
    t_add, pos = 0.0, 0
    for x, names in chunks:
        g32[pos:pos + len(x)] = x
        t0 = time.perf_counter()
        gallery.add(x, names, {"path": [f"photos/{s}/{pos + i}.jpg" for i, s in enumerate(names)]})
        t_add += time.perf_counter() - t0
        pos += len(x)
    gallery.close()
    out["add_faces_per_s"] = n / t_add
    out["disk_bytes_per_face"] = _dir_bytes(path) / n
    # open time (memory map + SQLite; nothing is loaded)
    gc.collect()
    opens = []
    for _ in range(3):
        t0 = time.perf_counter()
        g = FaceGallery(path, create=False)
        assert len(g) == n
        opens.append(time.perf_counter() - t0)
        g.close()
    out["open_s"] = min(opens)
    gallery = FaceGallery(path, create=False)
    queries = make_queries(centres, args.queries, isotropic=args.isotropic)
    singles = make_queries(centres, args.single, seed=2, isotropic=args.isotropic)
    k = args.k
    # resident memory of ours after one search: the float16 pages the scan mapped, plus the float32
    # copy small galleries keep (after a warm-up search of one row, so torch's own first-call
    # allocations are not counted)
    from lightface.gallery.exact import exact_search

    exact_search(gallery.embeddings[:1], singles[:1], k)
    rss0 = _rss_file_bytes()
    gallery.search(singles[:1], k=k, backend="exact")
    f32 = gallery._f32.nbytes if gallery._f32 is not None else 0  # the float32 copy of small galleries
    out["ours_resident_bytes_per_face"] = (max(_rss_file_bytes() - rss0, 0) + f32) / n
    out["numpy_resident_bytes_per_face"] = g32.nbytes / n
    # deepface-style representations (lists, as in its pickle) for up to DEEPFACE_MAX faces
    m = min(n, DEEPFACE_MAX)
    tracemalloc.start()
    reps = [[f"photos/{i}.jpg", g32[i].tolist()] for i in range(m)]
    out["deepface_resident_bytes_per_face"] = tracemalloc.get_traced_memory()[0] / m
    tracemalloc.stop()
    scale = n / m
    # correctness: ours == numpy on the batch
    ours_b = gallery.search(queries, k=k, backend="exact")
    _, np_rows = numpy_search(g32, queries, k)
    out["top1_equal_numpy"] = float(np.mean(ours_b.face_ids[:, 0] == np_rows[:, 0]))
    dq = min(len(singles), 3)
    emb = gallery._exact_rows()  # what search() scans: the float16 map (a float32 copy below 64 MiB)
    paths: Dict[str, Dict[str, Callable]] = {
        "single": {
            "exact (ours)": lambda: [gallery.search(q, k=k, backend="exact") for q in singles],
            "exact kernel": lambda: [exact_search(emb, q[None], k) for q in singles],
            "numpy f32": lambda: [numpy_search(g32, q[None], k) for q in singles],
            "deepface-style": lambda: [deepface_search(reps, q, k) for q in singles[:dq]],
        },
        "batch": {
            "exact (ours)": lambda: gallery.search(queries, k=k, backend="exact"),
            "exact kernel": lambda: exact_search(emb, queries, k),
            "numpy f32": lambda: numpy_search(g32, queries, k),
        },
    }
    counts = {"single": {"exact (ours)": len(singles), "exact kernel": len(singles), "numpy f32": len(singles),
                         "deepface-style": dq},
              "batch": {"exact (ours)": len(queries), "exact kernel": len(queries), "numpy f32": len(queries)}}
    use_faiss = faiss_backend.available() and not args.no_faiss
    if use_faiss:
        t0 = time.perf_counter()
        info = gallery.build_index("auto")
        out["faiss_build_s"] = time.perf_counter() - t0
        out["faiss_factory"], out["faiss_params"] = info["factory"], info["params"]
        out["faiss_bytes_per_face"] = (path / info["file"]).stat().st_size / n
        approx = gallery.search(queries, k=k, backend="faiss")
        out["faiss_recall_at_1"] = float(np.mean(approx.face_ids[:, 0] == ours_b.face_ids[:, 0]))
        out["faiss_identity_agreement"] = float(np.mean(approx.identities[:, 0] == ours_b.identities[:, 0]))
        out["faiss_recall_at_k"] = float(np.mean([len(set(a) & set(b)) / k
                                                  for a, b in zip(approx.face_ids, ours_b.face_ids)]))
        paths["single"]["faiss"] = lambda: [gallery.search(q, k=k, backend="faiss") for q in singles]
        paths["batch"]["faiss"] = lambda: gallery.search(queries, k=k, backend="faiss")
        counts["single"]["faiss"], counts["batch"]["faiss"] = len(singles), len(queries)
    for regime, fns in paths.items():
        best = {name: float("inf") for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                best[name] = min(best[name], _best(fn))
        qps = {name: counts[regime][name] / best[name] for name in fns}
        if "deepface-style" in qps:
            qps["deepface-style"] /= scale
        out[regime] = qps
        print(f"  {_fmt_n(n)} {regime}: " + ", ".join(f"{k2} {v:,.1f} q/s" for k2, v in qps.items()), flush=True)
    out["deepface_scaled"] = scale > 1
    gallery.close()
    del g32, reps
    gc.collect()
    return out


def format_synthetic(rows: List[Dict]) -> str:
    lines = ["| gallery | regime | search (ours) q/s | exact kernel q/s | numpy f32 q/s | kernel / numpy | search / numpy | "
             "deepface-style q/s | search / deepface | FAISS q/s | FAISS / search | FAISS recall@1 (same identity) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for regime, label in (("single", "Q=1"), ("batch", "batch")):
            qps = r[regime]
            ours, kern, ref = qps["exact (ours)"], qps["exact kernel"], qps["numpy f32"]
            deep = qps.get("deepface-style")
            fa = qps.get("faiss")
            star = "*" if r.get("deepface_scaled") else ""
            lines.append(
                f"| {_fmt_n(r['size'])} | {label} | {ours:,.1f} | {kern:,.1f} | {ref:,.1f} | {kern / ref:.2f}x | "
                f"{ours / ref:.2f}x | "
                + (f"{deep:,.3f}{star} | {ours / deep:,.0f}x | " if deep else "- | - | ")
                + (f"{fa:,.1f} | {fa / ours:,.1f}x | {r['faiss_recall_at_1']:.3f} ({r['faiss_identity_agreement']:.3f}) |"
                   if fa else "- | - | - |"))
    return "\n".join(lines)


def format_costs(rows: List[Dict]) -> str:
    lines = ["| gallery | add faces/s | disk B/face | open (s) | resident B/face: ours | numpy f32 | "
             "deepface-style | FAISS index | FAISS build (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        fa = (f"{r['faiss_factory']} {r['faiss_params']}, {r['faiss_bytes_per_face']:,.0f} B/face"
              if "faiss_factory" in r else "-")
        lines.append(f"| {_fmt_n(r['size'])} | {r['add_faces_per_s']:,.0f} | {r['disk_bytes_per_face']:,.0f} | "
                     f"{r['open_s']:.4f} | {r['ours_resident_bytes_per_face']:,.0f} | "
                     f"{r['numpy_resident_bytes_per_face']:,.0f} | {r['deepface_resident_bytes_per_face']:,.0f} | {fa} | "
                     + (f"{r['faiss_build_s']:.1f} |" if "faiss_build_s" in r else "- |"))
    return "\n".join(lines)


# -- real faces -------------------------------------------------------------------------------------------
def real_embedder(args):
    """(FaceEmbedder, label). The shipped model, --weights, or random LightCNN-9 weights (said so)."""
    from lightface.embed import FaceEmbedder

    detector = args.detector
    if detector is None:
        det = shared_dir() / "models" / "det_500m.onnx"
        detector = str(det) if det.is_file() else None
    if args.weights:
        emb = FaceEmbedder(args.weights, device="cpu", detector=detector)
        return emb, f"{emb.weights_info.name} ({emb.weights_info.arch}, sha256 {emb.weights_info.sha256[:12]})"
    try:
        emb = FaceEmbedder(device="cpu", detector=detector)
        return emb, f"shipped {emb.weights_info.name} ({emb.weights_info.arch}, sha256 {emb.weights_info.sha256[:12]})"
    except Exception as err:  # no shipped recogniser in this install
        from lightface.models import get_model

        torch.manual_seed(0)
        emb = FaceEmbedder(get_model("lightcnn9", num_classes=0), device="cpu", detector=detector)
        return emb, f"RANDOM (untrained) LightCNN-9 weights: no trained recogniser available ({str(err)[:60]}...)"


def _lfw_people(real: Path) -> Dict[str, List[Path]]:
    root = real / "lfw_train" / "images"
    return {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}


def bench_real_enrolment(args, workdir: Path, embedder, label: str) -> Dict:
    from lightface.gallery import FaceGallery

    people = _lfw_people(Path(args.real))
    photos: Dict[str, List[Path]] = {}
    count = 0
    for name, files in people.items():
        if count >= args.real_photos:
            break
        photos[name] = files[:4]
        count += len(photos[name])
    flat = [p for files in photos.values() for p in files]
    path = workdir / "real-lfw"
    if path.exists():
        shutil.rmtree(path)
    embedder.embed(flat[:2], aligned=False)  # warm-up (detector and network loaded)
    t0 = time.perf_counter()
    res = embedder.try_embed(flat, aligned=False, batch_size=32)
    t_embed = time.perf_counter() - t0
    gallery = FaceGallery(path, embedder)
    report = gallery.enroll(photos, batch_size=32, duplicate_threshold=0.98)
    out = {"model": label, "photos": len(flat), "embed_only_photos_per_s": len(flat) / t_embed,
           "enroll_photos_per_s": len(flat) / report.seconds, "enrolled": report.added,
           "failed": len(report.failed), "duplicates": len(report.duplicates), "faces": len(gallery),
           "embed_failed": len(res.errors)}
    q = res.embeddings[res.valid][:64]
    best = float("inf")
    for _ in range(args.rounds):
        best = min(best, _best(lambda: [gallery.search(v, k=args.k, backend="exact") for v in q]))
    out["exact_single_qps"] = len(q) / best
    out["disk_bytes_per_face"] = _dir_bytes(path) / max(len(gallery), 1)
    gallery.close()
    return out


def _landmarks(real: Path) -> Dict[str, np.ndarray]:
    table = {}
    for line in (real / "lfw_train" / "landmarks_5pt.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 11:
            table[parts[0]] = np.array(parts[1:], np.float32).reshape(5, 2)
    return table


def _never_enrolled(name: str) -> bool:
    """A fixed fifth of the people (by name hash) is never enrolled: the open-set impostors."""
    return zlib.crc32(name.encode()) % 5 == 0


def identification(name: str, emb: np.ndarray, people: List[str], enrol: List[int], probes: Dict[str, List[int]],
                   impostors: List[int], threshold: float, workdir: Path, model: str) -> Dict:
    """Enrol ``emb[enrol]`` into a gallery, identify every probe set and the never-enrolled faces."""
    from lightface.gallery import FaceGallery

    path = workdir / f"evidence-{name}"
    if path.exists():
        shutil.rmtree(path)
    gallery = FaceGallery(path)
    gallery.add(emb[enrol], [people[i] for i in enrol])
    s_imp = gallery.search(emb[impostors], k=1, backend="exact").scores[:, 0] if impostors else np.zeros(0)
    thr_far1 = float(np.quantile(s_imp, 0.99)) if len(s_imp) else float("nan")
    out = {"protocol": name, "model": model, "enrolled_people": len(enrol), "never_enrolled_faces": len(impostors),
           "never_enrolled_people": len({people[i] for i in impostors}), "threshold": threshold,
           "far": float(np.mean(s_imp >= threshold)) if len(s_imp) else float("nan"),
           "threshold_far_1pct": thr_far1, "sets": {}}
    for set_name, idx in probes.items():
        if not idx:
            continue
        res = gallery.search(emb[idx], k=5, backend="exact")
        truth = np.array([people[i] for i in idx], object)
        top1 = res.identities[:, 0] == truth
        out["sets"][set_name] = {
            "probes": len(idx), "rank1": float(top1.mean()), "rank5": float((res.identities == truth[:, None]).any(1).mean()),
            "dir": float(np.mean(top1 & (res.scores[:, 0] >= threshold))),
            "dir_far_1pct": float(np.mean(top1 & (res.scores[:, 0] >= thr_far1))) if len(s_imp) else float("nan")}
    gallery.close()
    return out


def evidence_lfw(args, workdir: Path, embedder, label: str) -> Dict:
    """LFW people of the chosen View-2 folds (default fold 2: people no lightface model trains on): the first photo
    of four fifths of the people with 2+ photos enrolled, their other photos identified; the other fifth and every
    single-photo person never enrolled. Crops aligned from the given 5-point landmarks as ``embedder`` crops whole
    photos (:meth:`~lightface.FaceEmbedder.align`: its ``align_method``, the crops its weights were trained on)."""
    from lightface.data.io import read_image, to_gray

    real = Path(args.real)
    folds = {line.split()[0]: line.split()[3] for line in (real / "lfw_train" / "people_folds.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    wanted = set(args.evidence_folds)
    people = {n: f for n, f in _lfw_people(real).items() if "all" in wanted or folds.get(n) in wanted}
    marks = _landmarks(real)
    items = [(n, p) for n, files in people.items() for p in files if f"{n}/{p.name}" in marks]
    crops = np.stack([to_gray(embedder.align(read_image(p), marks[f"{n}/{p.name}"])[0]) for n, p in items])
    t0 = time.perf_counter()
    x = torch.from_numpy(crops).unsqueeze(1).float().div_(255.0)
    emb = np.concatenate([embedder.embed_tensor(x[s:s + 64]).cpu().numpy() for s in range(0, len(x), 64)])
    t_embed = time.perf_counter() - t0
    names = [n for n, _ in items]
    count = {n: names.count(n) for n in set(names)}
    enrol, genuine, impostors, seen = [], [], [], set()
    for i, n in enumerate(names):
        if count[n] < 2 or _never_enrolled(n):
            impostors.append(i)
        elif n not in seen:
            enrol.append(i)
            seen.add(n)
        else:
            genuine.append(i)
    out = identification("lfw", emb, names, enrol, {"other photos": genuine}, impostors, float(embedder.threshold),
                         workdir, label)
    out.update(folds=sorted(wanted), embed_s=t_embed, faces=len(items))
    return out


def evidence_cfp(args, workdir: Path, embedder, label: str) -> Dict:
    """CFP's 35 people of ``cfp/`` (held out of the shipped model's training): frontal photo 01 of four fifths
    enrolled; their other frontal photos and their near-90-degree profiles identified; the other fifth never
    enrolled. Whole photos through the detector."""
    root = Path(args.real) / "cfp" / "Images"
    items = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for view in ("frontal", "profile"):
            items += [(person.name, view, f) for f in sorted((person / view).glob("*.jpg"))]
    t0 = time.perf_counter()
    res = embedder.try_embed([f for _, _, f in items], aligned=False, batch_size=32)
    t_embed = time.perf_counter() - t0
    names = [n for n, _, _ in items]
    enrol, frontal, profile, impostors, seen = [], [], [], [], set()
    for i, (n, view, _) in enumerate(items):
        if i in res.errors:
            continue
        if _never_enrolled(n):
            impostors.append(i)
        elif view == "frontal" and n not in seen:
            enrol.append(i)
            seen.add(n)
        else:
            (frontal if view == "frontal" else profile).append(i)
    out = identification("cfp", res.embeddings, names, enrol, {"frontal": frontal, "profile": profile}, impostors,
                         float(embedder.threshold), workdir, label)
    out.update(embed_s=t_embed, faces=len(items), no_face=len(res.errors))
    return out


def evidence_precomputed(args, workdir: Path) -> Dict:
    """The same protocol on precomputed embeddings of an LMDB's samples (``--reference-embeddings``, e.g. the dlib
    teacher's ``teacher_dlib.npy`` beside the LMDB, from ``python -m pipelines.teacher_embeddings``): what the gallery
    delivers with a strong recogniser. Identities are the LMDB's labels; no model threshold (reported at FAR 1%)."""
    from lightface.data import LMDBDataset

    path = Path(args.reference_embeddings)
    emb = np.load(path).astype(np.float32)
    labels = LMDBDataset(path.parent).labels
    ok = np.isfinite(emb).all(1)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    names = [f"class{int(c)}" for c in labels]
    count: Dict[str, int] = {}
    for i in np.flatnonzero(ok):
        count[names[i]] = count.get(names[i], 0) + 1
    enrol, genuine, impostors, seen = [], [], [], set()
    for i in np.flatnonzero(ok):
        n = names[i]
        if count[n] < 2 or _never_enrolled(n):
            impostors.append(int(i))
        elif n not in seen:
            enrol.append(int(i))
            seen.add(n)
        else:
            genuine.append(int(i))
    label = f"{path.name} ({path.parent.name}, {emb.shape[1]}-d)"
    out = identification(f"{path.parent.stem} ({path.stem})", emb, names, enrol, {"other photos": genuine}, impostors,
                         float("nan"), workdir, label)
    out.update(faces=int(ok.sum()))
    return out


def format_evidence(rows: List[Dict]) -> str:
    lines = ["| protocol | enrolled people | probe set | probes | rank-1 | rank-5 | DIR @ model thr | FAR @ model thr "
             "(never-enrolled faces) | DIR @ FAR 1% |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for e in rows:
        for set_name, m in e["sets"].items():
            at_model = "-" if np.isnan(e["threshold"]) else f"{m['dir']:.3f}"
            far = "-" if np.isnan(e["threshold"]) else f"{e['far']:.3f}"
            lines.append(f"| {e['protocol']} | {e['enrolled_people']} | {set_name} | {m['probes']} | {m['rank1']:.3f} | "
                         f"{m['rank5']:.3f} | {at_model} | {far} ({e['never_enrolled_faces']} of "
                         f"{e['never_enrolled_people']} people) | {m['dir_far_1pct']:.3f} (thr {e['threshold_far_1pct']:.3f}) |")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> Dict:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS too
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    print(f"torch {torch.__version__}, numpy {np.__version__}, faiss {faiss_version}, {args.threads} threads, "
          f"k={args.k}, {args.queries} batch queries, {args.single} single queries, best of {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results: Dict = {"synthetic": [], "real": None, "evidence": None}
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lightface-search-")
        workdir = Path(tmp.name)
    try:
        for n in ([] if args.real_only else args.sizes):
            print(f"synthetic gallery of {_fmt_n(n)} faces", flush=True)
            results["synthetic"].append(bench_size(n, args, workdir))
        if args.real and (Path(args.real) / "lfw_train").is_dir():
            embedder, label = real_embedder(args)
            print(f"real faces ({args.real}): model {label}", flush=True)
            if not args.real_only:
                results["real"] = bench_real_enrolment(args, workdir, embedder, label)
            if args.evidence:
                results["evidence"] = [evidence_lfw(args, workdir, embedder, label)]
                if (Path(args.real) / "cfp" / "Images").is_dir():
                    results["evidence"].append(evidence_cfp(args, workdir, embedder, label))
        if args.evidence and args.reference_embeddings:
            results["evidence"] = (results["evidence"] or []) + [evidence_precomputed(args, workdir)]
    finally:
        if tmp is not None:
            tmp.cleanup()
    if results["synthetic"]:
        print("\nExact search and FAISS (queries/s; * deepface-style timed on 20k faces and scaled):")
        print(format_synthetic(results["synthetic"]))
        print("\nCosts:")
        print(format_costs(results["synthetic"]))
    if results["real"]:
        r = results["real"]
        print(f"\nReal faces, model {r['model']}:")
        print("| photos | embed only photos/s | enroll photos/s (detect, align, embed, store) | enrolled | failed | "
              "duplicates flagged | exact Q=1 q/s | disk B/face |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['photos']} | {r['embed_only_photos_per_s']:.1f} | {r['enroll_photos_per_s']:.1f} | {r['enrolled']} | "
              f"{r['failed']} | {r['duplicates']} | {r['exact_single_qps']:,.0f} | {r['disk_bytes_per_face']:,.0f} |")
    if results["evidence"]:
        print("\nIdentification (models: " + "; ".join(sorted({e["model"] for e in results["evidence"]})) + "):")
        print(format_evidence(results["evidence"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
