"""Checkpoint files: atomic writes and code-free loads.

Every file is written to a temporary name in the destination folder, flushed to
disk, then renamed over the destination, so a crash never leaves a half-written
checkpoint under the real name. Every load uses ``torch.load(weights_only=True)``:
a checkpoint never executes code.

:func:`capture_rng_state` / :func:`restore_rng_state` save and restore every random
number generator a training run draws from (torch CPU and CUDA, NumPy's global
generator, Python's ``random``) as tensors and plain numbers, so a resumed run
continues with exactly the random draws of the uninterrupted one.
"""
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

__all__ = ["save_atomic", "load_checkpoint", "capture_rng_state", "restore_rng_state"]

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


def capture_rng_state() -> Dict[str, Any]:
    """The state of all global random number generators, safe for ``weights_only=True`` loads.

    Returns:
        ``{"torch": uint8 tensor, "cuda": list of uint8 tensors (one per visible GPU; empty
        without CUDA), "numpy": {"keys": int64 tensor (624,), "pos", "has_gauss",
        "cached_gaussian"}, "python": {"version", "state": int64 tensor (625,), "gauss_next"}}``.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    if np_name != "MT19937":  # pragma: no cover - numpy's legacy global generator is always MT19937
        raise RuntimeError(f"unsupported numpy bit generator {np_name!r}")
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Restore generators saved by :func:`capture_rng_state` (missing entries are left alone).

    CUDA states are restored for as many devices as both the state and this machine have.
    """
    if not isinstance(state, dict):
        raise TypeError(f"restore_rng_state expects the dict from capture_rng_state(), got {type(state).__name__}")
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu().to(torch.uint8), index)
    if "numpy" in state:
        s = state["numpy"]
        keys = np.asarray(s["keys"].cpu().numpy(), dtype=np.uint32)
        np.random.set_state(("MT19937", keys, int(s["pos"]), int(s["has_gauss"]), float(s["cached_gaussian"])))
    if "python" in state:
        s = state["python"]
        py_state = tuple(int(v) for v in s["state"].tolist())
        random.setstate((int(s["version"]), py_state, s["gauss_next"]))
