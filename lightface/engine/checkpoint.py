"""Training-state helpers: every random number generator's state, saved and restored.

:func:`capture_rng_state` / :func:`restore_rng_state` save and restore every random
number generator a training run draws from (torch CPU and CUDA, NumPy's global
generator, Python's ``random``) as tensors and plain numbers, so a resumed run
continues with exactly the random draws of the uninterrupted one.

Checkpoint file I/O (:func:`save_atomic`, :func:`load_checkpoint`) lives in the bottom
layer, :mod:`lightface.utils.checkpoint_io`, and is re-exported here.
"""
import random
from typing import Any, Dict

import numpy as np
import torch

from ..utils.checkpoint_io import CheckpointLoadError, load_checkpoint, save_atomic

__all__ = ["save_atomic", "load_checkpoint", "CheckpointLoadError", "capture_rng_state", "restore_rng_state"]


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
