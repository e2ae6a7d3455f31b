"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The data goes to a temporary file beside the destination (``.NAME.PID.tmp``: two processes
writing the same file do not rename each other's), is flushed to disk, then renamed over
the destination with ``os.replace``.
"""
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["write_text_atomic", "atomic_file", "atomic_path"]


@contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """A temporary path beside ``path``, for writers that take a file name (an exporter); when the block
    ends without an error the file written there is flushed to disk and renamed over ``path`` (missing
    parent folders are created); on an error it is removed and ``path`` is untouched.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "model.onnx"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_bytes(b"onnx")
        >>> out.read_bytes()
        b'onnx'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Union[str, os.PathLike], mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; when the block ends without an error it is
    flushed to disk and renamed over ``path`` (missing parent folders are created); on an error it is
    removed and ``path`` is untouched (see :func:`atomic_path`).

    Example:
        >>> import numpy as np, tempfile
        >>> out = Path(tempfile.mkdtemp()) / "emb.npz"
        >>> with atomic_file(out) as f:
        ...     np.savez(f, embeddings=np.zeros((2, 4), np.float32))
        >>> np.load(out)["embeddings"].shape
        (2, 4)
    """
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_text_atomic(path: Union[str, os.PathLike], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (missing parent folders are created). Returns the path.

    Example:
        >>> import json, tempfile
        >>> out = write_text_atomic(Path(tempfile.mkdtemp()) / "r" / "results.json", json.dumps({"p": 0.5}))
        >>> json.loads(out.read_text())
        {'p': 0.5}
    """
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)
