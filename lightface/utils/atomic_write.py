"""Atomic text-file writes: a reader sees the old file or the new one, never half of one.

The text goes to a temporary file beside the destination (``.NAME.PID.tmp``: two processes
writing the same file do not rename each other's), is flushed to disk, then renamed over
the destination with ``os.replace``.
"""
import os
from pathlib import Path
from typing import Union

__all__ = ["write_text_atomic"]


def write_text_atomic(path: Union[str, os.PathLike], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (missing parent folders are created). Returns the path.

    Example:
        >>> import json, tempfile
        >>> out = write_text_atomic(Path(tempfile.mkdtemp()) / "r" / "results.json", json.dumps({"p": 0.5}))
        >>> json.loads(out.read_text())
        {'p': 0.5}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
