"""Embedding throughput: lightface vs the original Light CNN architecture, same weights.

    python -m benchmarks.embed                       # lightcnn9 + lightcnn29v2, batch 1 and 64
    python -m benchmarks.embed --archs lightcnn9 --batch-sizes 64 --rounds 5 --compile

For each architecture, random weights of the original architecture
(benchmarks/_baseline_lightcnn.py: split+max MFM, original key names) are saved in the
official file layout and loaded by every path:

* ``baseline``: the original architecture in eager PyTorch, features L2-normalised;
* ``lightface``: ``FaceEmbedder(checkpoint).embed_tensor`` (eager PyTorch, fused MFM op);
* ``lightface+compile`` (``--compile``): ``FaceEmbedder(checkpoint, compile=True)``;
* ``lightface+onnxruntime``: ``FaceEmbedder("model.onnx")`` after ``lightface.export.export_onnx``.

Inputs are the same preprocessed batch (N, 1, 128, 128) for every path; each round runs
every path once (interleaved, so machine load hits all paths alike) and the best round
counts. ``max |d|`` is the largest absolute difference of the raw 256-d features from the
baseline's; the ratio is embeddings/s over the baseline's.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

from lightface import ops


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Light CNN embedding throughput", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["lightcnn9", "lightcnn29v2"], help="architectures")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64], help="batch sizes")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per path (best counts)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads for PyTorch and ONNX Runtime")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for minutes on a small CPU)")
    p.add_argument("--compile-batch-sizes", nargs="+", type=int, default=None,
                   help="batch sizes timed with --compile (default: all of --batch-sizes)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_arch(arch: str, batch_sizes: List[int], rounds: int, threads: int, compile_sizes: List[int],
               workdir: Path) -> List[Dict]:
    from benchmarks._baseline_lightcnn import build_baseline, official_checkpoint
    from lightface.embed import FaceEmbedder
    from lightface.export import OnnxRecognizer, export_onnx

    torch.manual_seed(0)
    base = build_baseline(arch, num_classes=10).eval()
    ckpt = workdir / f"{arch}.pth.tar"
    torch.save(official_checkpoint(base), ckpt)
    onnx_path = export_onnx(str(ckpt), workdir / f"{arch}.onnx")
    embedders = {"lightface": FaceEmbedder(ckpt, device="cpu")}
    if compile_sizes:
        embedders["lightface+compile"] = FaceEmbedder(ckpt, device="cpu", compile=True)
    embedders["lightface+onnxruntime"] = FaceEmbedder(onnx_path, device="cpu")
    raw = {"lightface": embedders["lightface"].model, "lightface+onnxruntime": OnnxRecognizer(onnx_path, threads=threads)}

    def baseline_embed(x):
        return torch.nn.functional.normalize(base(x)[1], dim=1)

    rows = []
    for n in batch_sizes:
        x = torch.rand(n, 1, 128, 128, generator=torch.Generator().manual_seed(n))
        paths: Dict[str, Callable] = {"baseline": baseline_embed}
        paths.update({name: emb.embed_tensor for name, emb in embedders.items()
                      if name != "lightface+compile" or n in compile_sizes})
        with torch.inference_mode():
            ref = base(x)[1].numpy()
            diffs = {"baseline": 0.0}
            for name, fn in paths.items():
                fn(x)  # warm-up (and compilation)
            for name, model in raw.items():
                out = model(x)
                out = out.numpy() if isinstance(out, torch.Tensor) else out
                diffs[name] = float(np.abs(out - ref).max())
            if "lightface+compile" in paths:  # raw features of the compiled module
                comp = embedders["lightface+compile"]._net(x).numpy()
                diffs["lightface+compile"] = float(np.abs(comp - ref).max())
            best = {name: float("inf") for name in paths}
            for _ in range(rounds):
                for name, fn in paths.items():
                    best[name] = min(best[name], _time(lambda: fn(x)))
        for name in paths:
            rows.append({"arch": arch, "batch": n, "path": name, "emb_per_s": n / best[name],
                         "ratio": best["baseline"] / best[name], "max_abs_diff": diffs[name]})
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)  # progress on long runs
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = ["| arch | batch | path | embeddings/s | vs baseline | max abs diff |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['batch']} | {r['path']} | {r['emb_per_s']:.1f} | {r['ratio']:.2f}x | "
                     f"{r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> List[Dict]:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, best of {args.rounds} interleaved rounds, "
          f"compiled MFM kernels: {ops.extension_available()}", flush=True)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            compile_sizes = (args.compile_batch_sizes or args.batch_sizes) if args.compile else []
            rows += bench_arch(arch, args.batch_sizes, args.rounds, args.threads, compile_sizes, Path(tmp))
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
