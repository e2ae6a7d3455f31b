"""Exact (brute-force) cosine search over float16 embeddings, chunked so any gallery that fits
on disk can be searched with bounded memory.

The gallery is read block by block straight from its memory map; nothing is loaded in
full. Two kernels:

* one or two queries (``Q <= GEMV_MAX_QUERIES``) over more than ``GEMV_MIN_ROWS`` rows:
  the scan is memory-bound, so the float16 rows are used as they are: ``torch.mv`` on
  float16 runs PyTorch's reduced-precision GEMV fast path (float16 loads, float32
  accumulation), reading half the bytes of a float32 scan. Its scores are rounded to
  float16 on output, so the best ``k + RERANK_MARGIN`` candidates are re-scored in
  float32 before the final top-k.
* otherwise (more queries, or a gallery small enough to stay in cache): each block is
  converted to float32 in a reused buffer and multiplied with one SGEMM (the conversion
  is paid once per block for all queries, where the float16 GEMV would re-read the
  block once per query). The SGEMM is numpy's (OpenBLAS), measured 1.5-3x faster than
  ``torch.mm`` (MKL) on this project's AMD CPUs; top-k is ``torch.topk``.

Both give the same scores: float32 dot products of the float32 queries with the stored
float16 rows (converted exactly), top-k merged across blocks.

Galleries small enough to keep a float32 copy (:class:`lightface.gallery.FaceGallery`
caches one up to ``FP32_CACHE_BYTES``) are searched on it directly: no conversion.

Small scans (fewer than :data:`SINGLE_THREAD_MACS` multiply-adds: e.g. one query over a
gallery of under 64k faces) run on one thread: waking PyTorch's thread pool costs more
than the scan, and on a busy machine (threads waiting for a core) 5-10x more. The
thread count is restored afterwards; set the constant to 0 to disable.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

import numpy as np
import torch

__all__ = ["exact_search", "GEMV_MAX_QUERIES", "RERANK_MARGIN", "SINGLE_THREAD_MACS"]

GEMV_MAX_QUERIES = 2
GEMV_MIN_ROWS = 1 << 16
RERANK_MARGIN = 16
SINGLE_THREAD_MACS = 1 << 24
# Rows per block. Large blocks keep the number of parallel regions (thread wake-ups) low,
# which matters on a busy machine; a float32 GEMM block is 32 MiB, a float16 GEMV block
# reads 128 MiB of the memory map and writes 512 KiB of scores per query.
_GEMV_BLOCK = 1 << 18
_GEMM_BLOCK = 1 << 15


@contextlib.contextmanager
def _threads_for(macs: int) -> Iterator[None]:
    n = torch.get_num_threads()
    if n <= 1 or macs >= SINGLE_THREAD_MACS:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _as_tensor(block: np.ndarray) -> torch.Tensor:
    if not block.flags.writeable:  # read-only maps (np.load(mmap_mode="r")): torch wants writable memory
        block = np.array(block)
    return torch.from_numpy(np.ascontiguousarray(block))


def _rescore(embeddings: np.ndarray, queries: torch.Tensor, rows: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Float32 scores of the candidate ``rows`` (Q, C); returns the best k of each row."""
    flat = rows.reshape(-1).numpy()
    order = np.argsort(flat, kind="stable")  # sorted reads from the memory map
    vec = np.empty((len(flat), embeddings.shape[1]), np.float32)
    vec[order] = embeddings[flat[order]]
    vec_t = torch.from_numpy(vec).view(rows.shape[0], rows.shape[1], -1)
    scores = torch.einsum("qd,qcd->qc", queries, vec_t)
    top, idx = scores.topk(k, dim=1)
    return top, rows.gather(1, idx)


@torch.inference_mode()
def exact_search(embeddings: np.ndarray, queries, k: int, row_offset: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k cosine search over every row of ``embeddings``.

    Args:
        embeddings: float16 (N, D) array or memory map, rows L2-normalised (float32 is
            accepted too and searched without conversion).
        queries: float32 (Q, D) numpy array or tensor, rows L2-normalised.
        k: neighbours per query (clipped to N).
        row_offset: added to the returned row numbers (search of a slice of a gallery).
    Returns:
        ``(scores, rows)``: float32 (Q, min(k, N)) cosine similarities, descending, and
        int64 (Q, min(k, N)) row numbers.
    """
    q = torch.as_tensor(queries, dtype=torch.float32).contiguous()
    if q.dim() != 2:
        raise ValueError(f"queries must be (Q, D), got {tuple(q.shape)}")
    n = int(embeddings.shape[0])
    if n and q.shape[1] != embeddings.shape[1]:
        raise ValueError(f"queries are {q.shape[1]}-d but the embeddings are {embeddings.shape[1]}-d")
    kk = min(int(k), n)
    nq = q.shape[0]
    if kk <= 0 or nq == 0:
        return np.zeros((nq, max(kk, 0)), np.float32), np.zeros((nq, max(kk, 0)), np.int64)
    with _threads_for(n * nq * q.shape[1]):
        return _search(embeddings, q, kk, nq, n, row_offset)


def _search(embeddings: np.ndarray, q: torch.Tensor, kk: int, nq: int, n: int, row_offset: int):
    is32 = embeddings.dtype == np.float32
    use_gemv = nq <= GEMV_MAX_QUERIES and n > GEMV_MIN_ROWS and not is32
    keep = min(kk + RERANK_MARGIN, n) if use_gemv else kk
    block_rows = min(_GEMV_BLOCK if use_gemv else _GEMM_BLOCK, n)
    cand_s, cand_i = [], []
    qn = q.numpy()
    if use_gemv:
        q16 = q.half()
        out16 = torch.empty((nq, block_rows), dtype=torch.float16)
    elif not is32:
        buf = torch.empty((block_rows, q.shape[1]), dtype=torch.float32)
    for start in range(0, n, block_rows):
        if use_gemv:
            block = _as_tensor(embeddings[start:start + block_rows])
            c = block.shape[0]
            for j in range(nq):
                torch.mv(block, q16[j], out=out16[j, :c])
            scores = out16[:, :c].float()
        else:
            if is32:  # float32 rows (a cached copy): no conversion
                b32 = np.asarray(embeddings[start:start + block_rows])
            else:
                block = _as_tensor(embeddings[start:start + block_rows])
                b32 = buf[:block.shape[0]]
                b32.copy_(block)  # float16 -> float32 into a reused buffer: fast, no page faults
                b32 = b32.numpy()
            c = b32.shape[0]
            # numpy's matmul (OpenBLAS): 1.5-3x faster than torch.mm's MKL on AMD CPUs for these shapes
            scores = torch.from_numpy(qn @ b32.T)
        s, i = scores.topk(min(keep, c), dim=1)
        cand_s.append(s)
        cand_i.append(i + start)
    s_all, i_all = torch.cat(cand_s, 1), torch.cat(cand_i, 1)
    s_top, j = s_all.topk(keep, dim=1)
    rows = i_all.gather(1, j)
    if use_gemv:
        s_top, rows = _rescore(embeddings, q, rows, kk)
    return s_top.numpy().astype(np.float32, copy=False), rows.numpy() + row_offset
