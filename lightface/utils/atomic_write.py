"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The data goes to a temporary file beside the destination (``.NAME.PID.tmp``: two processes
writing the same file do not rename each other's), is flushed to disk, then renamed over
the destination with ``os.replace``.
"""
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["write_text_atomic", "atomic_file"]


@contextmanager
def atomic_file(path: Union[str, os.PathLike], mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; when the block ends without an error it is
    flushed to disk and renamed over ``path`` (missing parent folders are created); on an error it is
    removed and ``path`` is untouched.

    Example:
        >>> import numpy as np, tempfile
        >>> out = Path(tempfile.mkdtemp()) / "emb.npz"
        >>> with atomic_file(out) as f:
        ...     np.savez(f, embeddings=np.zeros((2, 4), np.float32))
        >>> np.load(out)["embeddings"].shape
        (2, 4)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
