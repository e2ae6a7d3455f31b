"""Embedding throughput: lightface vs the original Light CNN architecture, same weights.

    python -m benchmarks.embed                       # lightcnn9 + lightcnn29v2, batch 1 and 64
    python -m benchmarks.embed --archs lightcnn9 --batch-sizes 64 --rounds 5 --compile
    python -m benchmarks.embed --archs lightcnn9 --batch-sizes 1 8 32 64 --chunk-sizes 8 16 32 \\
        --channels-last --bf16 --compile                  # how the default chunk / precision were chosen

For each architecture, weights of the original architecture
(benchmarks/_baseline_lightcnn.py: split+max MFM, original key names; random, or the
backbone of ``--weights``) are saved in the official file layout and loaded by every path:

* ``baseline``: the original architecture in eager PyTorch, features L2-normalised;
* ``lightface whole``: ``FaceEmbedder(ckpt, chunk_size=0).embed_tensor``: eager float32,
  the whole batch in one forward pass (fused MFM op);
* ``lightface default``: ``FaceEmbedder(ckpt)``: what users get (float32, forward passes
  of :data:`lightface.embed.FORWARD_CHUNK` faces, or ``FORWARD_CHUNK_SINGLE_THREAD`` with
  ``--threads 1``);
* ``lightface chunk=K`` (``--chunk-sizes``): ``FaceEmbedder(ckpt, chunk_size=K)``;
* ``+channels_last`` (``--channels-last``), ``+bf16`` (``--bf16``: bfloat16 autocast, only
  at ``--bf16-batch-sizes``: on CPUs without native bf16 it is very slow),
  ``+compile`` (``--compile``: ``torch.compile`` with weight freezing), all at the default chunk;
* ``+onnxruntime``: ``FaceEmbedder("model.onnx")`` after ``lightface.export.export_onnx``.

Inputs are the same preprocessed batch (N, 1, 128, 128) for every path: real aligned
faces (``--faces``, default the LFW crops of ``../shared/data/lfw_identities``, repeated
to fill N), or uniform noise when absent. Each round runs every path once (interleaved,
so machine load hits all paths alike) and the best round counts. ``max |d|`` is the
largest absolute difference of the raw 256-d features from the baseline's; ``min cos``
the smallest cosine similarity of a path's embeddings to ``lightface whole`` (float32
eager); the ratio is embeddings/s over the baseline's. ``--timer cpu --threads 1``
measures the CPU time of one thread instead of elapsed time: on a machine shared with
other jobs it is far steadier (it does not count time spent waiting for a core).
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from lightface import ops
from pipelines._argtypes import shared_dir, weights_spec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FACES = shared_dir() / "data" / "lfw_identities"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Light CNN embedding throughput", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["lightcnn9", "lightcnn29v2"], help="architectures")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64], help="batch sizes")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per path (best counts)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads for PyTorch and ONNX Runtime")
    p.add_argument("--chunk-sizes", nargs="*", type=int, default=[],
                   help="also time FaceEmbedder(chunk_size=K) for each K smaller than the batch")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last (default chunk)")
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast (default chunk)")
    p.add_argument("--bf16-batch-sizes", nargs="+", type=int, default=[1],
                   help="batch sizes timed with --bf16 (slow on CPUs without native bf16)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for minutes on a small CPU)")
    p.add_argument("--compile-batch-sizes", nargs="+", type=int, default=None,
                   help="batch sizes timed with --compile (default: all of --batch-sizes)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime path")
    p.add_argument("--faces", default=str(DEFAULT_FACES),
                   help="folder with images/ and landmarks_5pt.txt (LFW layout) for real aligned inputs; noise if absent")
    p.add_argument("--weights", default=None, type=weights_spec("recognition"),
                   help="a Light CNN checkpoint (project or official) or a shipped model's name (e.g. "
                        "lightcnn29v2_3src_rc15) whose backbone every path loads; default random")
    p.add_argument("--timer", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time; cpu: CPU time of this process (all its threads), far less sensitive "
                        "to other jobs on a shared machine; use it with --threads 1")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


_CLOCK = time.perf_counter


def _time(fn: Callable[[], object]) -> float:
    start = _CLOCK()
    fn()
    return _CLOCK() - start


def load_faces(folder: Optional[str], limit: int = 256) -> Optional[torch.Tensor]:
    """Real aligned Light CNN crops (M, 1, 128, 128) in [0, 1] from an LFW-layout folder, or None."""
    if not folder:
        return None
    root = Path(folder)
    if not (root / "landmarks_5pt.txt").is_file():
        return None
    from lightface.data.align import align_face
    from lightface.data.io import read_image, to_gray
    from lightface.data.sources import read_landmarks_file

    table = read_landmarks_file(root / "landmarks_5pt.txt")
    crops = [to_gray(align_face(read_image(root / "images" / k), table[k], template="lightcnn", size=128)[0])
             for k in sorted(table)[:limit]]
    return torch.from_numpy(np.stack(crops)).unsqueeze(1).float().div_(255.0)


def _baseline_model(arch: str, weights: Optional[str]):
    from benchmarks._baseline_lightcnn import build_baseline

    torch.manual_seed(0)
    base = build_baseline(arch, num_classes=10).eval()
    if weights:
        from lightface.models.checkpoint import read_model_checkpoint
        from lightface.models.pretrained import file_or_shipped

        ckpt = read_model_checkpoint(file_or_shipped(weights, "--weights"))
        if ckpt.arch != arch:
            raise ValueError(f"--weights {weights} holds a {ckpt.arch!r} model, not {arch!r}; pass --archs {ckpt.arch}")
        state = {k: v.float() for k, v in ckpt.state_dict.items() if not k.startswith("classifier.")}
        missing, unexpected = base.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc2.") for k in missing):
            raise ValueError(f"--weights {weights}: keys do not match the original {arch}: {missing[:4]} {unexpected[:4]}")
    return base


def bench_arch(arch: str, batch_sizes: List[int], rounds: int, threads: int, compile_sizes: List[int],
               workdir: Path, chunk_sizes: List[int] = (), channels_last: bool = False, bf16_sizes: List[int] = (),
               onnx: bool = True, faces: Optional[torch.Tensor] = None, weights: Optional[str] = None) -> List[Dict]:
    from benchmarks._baseline_lightcnn import official_checkpoint
    from lightface.embed import FORWARD_CHUNK, FORWARD_CHUNK_SINGLE_THREAD, FaceEmbedder
    from lightface.export import OnnxRecognizer, export_onnx

    default_chunk = FORWARD_CHUNK_SINGLE_THREAD if torch.get_num_threads() == 1 else FORWARD_CHUNK

    base = _baseline_model(arch, weights)
    ckpt = workdir / f"{arch}.pth.tar"
    torch.save(official_checkpoint(base), ckpt)
    # name -> (embedder, batch sizes it runs at: None = all)
    embedders: Dict[str, tuple] = {"lightface whole": (FaceEmbedder(ckpt, device="cpu", chunk_size=0), None),
                                   "lightface default": (FaceEmbedder(ckpt, device="cpu"), None)}
    for k in chunk_sizes:
        if k != default_chunk:
            embedders[f"lightface chunk={k}"] = (FaceEmbedder(ckpt, device="cpu", chunk_size=k), None)
    if channels_last:
        embedders["lightface+channels_last"] = (FaceEmbedder(ckpt, device="cpu", channels_last=True), None)
    if bf16_sizes:
        embedders["lightface+bf16"] = (FaceEmbedder(ckpt, device="cpu", precision="bfloat16"), list(bf16_sizes))
    if compile_sizes:
        embedders["lightface+compile"] = (FaceEmbedder(ckpt, device="cpu", compile=True), list(compile_sizes))
    raw = {"lightface whole": embedders["lightface whole"][0].model}
    if onnx:
        onnx_path = export_onnx(str(ckpt), workdir / f"{arch}.onnx")
        embedders["lightface+onnxruntime"] = (FaceEmbedder(onnx_path, device="cpu"), None)
        raw["lightface+onnxruntime"] = OnnxRecognizer(onnx_path, threads=threads)
        embedders["lightface+onnxruntime"][0]._onnx = raw["lightface+onnxruntime"]  # same --threads as PyTorch

    def baseline_embed(x):
        return torch.nn.functional.normalize(base(x)[1], dim=1)

    rows = []
    for n in batch_sizes:
        if faces is not None:
            x = faces[torch.arange(n) % len(faces)].contiguous()
        else:
            x = torch.rand(n, 1, 128, 128, generator=torch.Generator().manual_seed(n))
        paths: Dict[str, Callable] = {"baseline": baseline_embed}
        for name, (emb, sizes) in embedders.items():
            if sizes is not None and n not in sizes:
                continue
            if name.startswith("lightface chunk=") and int(name.split("=")[1]) >= n:
                continue  # one chunk: the same as whole
            paths[name] = emb.embed_tensor
        with torch.inference_mode():
            ref = base(x)[1].numpy()
            outs = {name: fn(x).numpy() for name, fn in paths.items()}  # warm-up (and compilation)
            diffs = {"baseline": 0.0}
            for name, model in raw.items():
                out = model(x)
                out = out.numpy() if isinstance(out, torch.Tensor) else out
                diffs[name] = float(np.abs(out - ref).max())
            if "lightface+compile" in paths:  # raw features of the compiled module
                comp = embedders["lightface+compile"][0]._net(x).numpy()
                diffs["lightface+compile"] = float(np.abs(comp - ref).max())
            cos = {name: float((o.astype(np.float64) * outs["lightface whole"]).sum(1).min()) for name, o in outs.items()}
            best = {name: float("inf") for name in paths}
            for _ in range(rounds):
                for name, fn in paths.items():
                    best[name] = min(best[name], _time(lambda: fn(x)))
        for name in paths:
            rows.append({"arch": arch, "batch": n, "path": name, "emb_per_s": n / best[name],
                         "ratio": best["baseline"] / best[name], "max_abs_diff": diffs.get(name),
                         "min_cos": cos[name], "inputs": "lfw faces" if faces is not None else "noise"})
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)  # progress on long runs
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = ["| arch | batch | path | embeddings/s | vs baseline | max abs diff | min cos |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        diff = "-" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.1e}"
        cos = "-" if r.get("min_cos") is None else f"{r['min_cos']:.6f}"
        lines.append(f"| {r['arch']} | {r['batch']} | {r['path']} | {r['emb_per_s']:.1f} | {r['ratio']:.2f}x | "
                     f"{diff} | {cos} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> List[Dict]:
    global _CLOCK
    _CLOCK = time.process_time if args.timer == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    from lightface.embed import FORWARD_CHUNK, FORWARD_CHUNK_SINGLE_THREAD

    faces = load_faces(args.faces)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.timer} time, best of {args.rounds} interleaved rounds, "
          f"compiled MFM kernels: {ops.extension_available()}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"default chunk {FORWARD_CHUNK_SINGLE_THREAD if args.threads == 1 else FORWARD_CHUNK}, inputs: {'%d real LFW crops' % len(faces) if faces is not None else 'noise'}, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            compile_sizes = (args.compile_batch_sizes or args.batch_sizes) if args.compile else []
            rows += bench_arch(arch, args.batch_sizes, args.rounds, args.threads, compile_sizes, Path(tmp),
                               chunk_sizes=args.chunk_sizes, channels_last=args.channels_last,
                               bf16_sizes=args.bf16_batch_sizes if args.bf16 else [], onnx=not args.no_onnx,
                               faces=faces, weights=args.weights)
    print(format_table(rows))
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
