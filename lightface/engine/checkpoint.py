"""Checkpoint files: atomic writes and code-free loads.

Every file is written to a temporary name in the destination folder, flushed to
disk, then renamed over the destination, so a crash never leaves a half-written
checkpoint under the real name. Every load uses ``torch.load(weights_only=True)``:
a checkpoint never executes code.
"""
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

__all__ = ["save_atomic", "load_checkpoint"]

PathLike = Union[str, os.PathLike]


def save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; clear errors for missing or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError with long messages
        raise ValueError(
            f"cannot load checkpoint {path} safely (weights_only=True): {str(err).splitlines()[0]}. "
            "lightface only loads tensors and plain containers; re-save the file with a state_dict."
        ) from err
