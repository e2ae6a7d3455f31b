"""Checkpoint files: atomic writes and code-free loads (the bottom layer: models and engine both use it).

Every file is written to a temporary name in the destination folder, flushed to
disk, then renamed over the destination, so a crash never leaves a half-written
checkpoint under the real name. Every load uses ``torch.load(weights_only=True)``:
a checkpoint never executes code.
"""
import errno
import glob
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch

from .exported_files import is_torchscript

__all__ = ["save_atomic", "load_checkpoint", "folder_message", "CheckpointLoadError"]

PathLike = Union[str, os.PathLike]


class CheckpointLoadError(ValueError):
    """A checkpoint file that cannot be read safely: empty, truncated, not a PyTorch file, or
    holding objects other than tensors and plain containers."""


def _tensor_bytes(obj: Any) -> int:
    """Bytes of tensor data in ``obj`` (nested dicts / lists / tuples), an estimate of the file size."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _is_no_space(err: Optional[BaseException]) -> bool:
    """Whether ``err`` is a full disk (or quota), also where it caused or interrupted another error: torch.save's
    archive writer reports the file's failed write as ``RuntimeError: ... unexpected pos N vs M``."""
    seen = set()
    while err is not None and id(err) not in seen:
        if (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left" in str(err):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _lock_tmp(path: Path) -> Tuple[int, str]:
    """An open, ``flock``-ed temporary file beside ``path``: ``.NAME.tmp``, reused after a
    kill, so interrupted saves never pile up; a unique name only while another process is
    saving the same path (its temporary file is locked)."""
    import fcntl

    name = str(path.parent / f".{path.name}.tmp")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, name
    except OSError:
        os.close(fd)
    while True:  # a concurrent save of the same path holds .NAME.tmp
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(name)):
                return fd, name
        except FileNotFoundError:  # removed as stale between mkstemp and flock: take another
            pass
        os.close(fd)


def _remove_stale_tmps(path: Path, keep: str) -> None:
    """Remove temporary files of earlier saves of ``path`` that were killed mid-write
    (``.NAME.tmp``, ``.NAME.XXXXXXXX.tmp``); a file locked by a save in progress is left alone."""
    import fcntl

    for tmp in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*tmp")):
        if tmp == keep or not re.fullmatch(rf"\.{re.escape(path.name)}(\.[^/]*)?\.tmp", os.path.basename(tmp)):
            continue
        try:
            fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(tmp)
        except OSError:
            pass  # locked: a save in progress
        finally:
            os.close(fd)


def save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + rename). Returns the path.

    The temporary file is ``.NAME.tmp`` beside ``path``, locked while written and reused
    by the next save, so saves killed halfway never accumulate temporary files (stale ones
    of older versions, ``.NAME.XXXXXXXX.tmp``, are removed by the next save).

    Raises:
        OSError: ``errno.ENOSPC`` with the path, the bytes needed and the bytes free when
            the disk is full (the previous checkpoint at ``path`` is left intact).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _lock_tmp(path)
    except ImportError:  # pragma: no cover - not POSIX
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "wb", closefd=False) as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # still locked: a concurrent cleanup cannot remove it first
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if _is_no_space(err):
            try:
                free = f", {_mb(shutil.disk_usage(path.parent).free)} free"
            except OSError:
                free = ""
            raise OSError(errno.ENOSPC, f"no space left on device while saving checkpoint {path}: it needs about "
                          f"{_mb(_tensor_bytes(obj))}{free}; free some space (the previous {path.name}, if any, "
                          "is intact)", str(path)) from err
        raise
    finally:
        os.close(fd)
    try:
        _remove_stale_tmps(path, tmp)
    except ImportError:  # pragma: no cover - not POSIX
        pass
    return path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: sentences of torch's messages that must never reach a user: they advise unsafe loading
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|allowlist|file an issue|Check the documentation|"
                            r"arbitrary code|trusted source|two options", re.IGNORECASE)


def _torch_reason(err: BaseException) -> str:
    """Torch's reason for a failed load, without its advice to load unsafely."""
    text = _ANSI.sub("", str(err)).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = [s.strip() for s in sentences if s.strip() and not _UNSAFE_ADVICE.search(s)]
    reason = " ".join(kept)
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__


def folder_message(path: PathLike) -> str:
    """What to say of a folder given as a checkpoint (a training run's ``OUT``): the checkpoints in it to pass
    instead (``model.pt``, ``best.pt``, ``last.pt`` first), or that it holds none."""
    path = Path(path)
    found = [path / n for n in ("model.pt", "best.pt", "last.pt") if (path / n).is_file()]
    found += sorted(p for p in path.iterdir() if p.is_file() and p not in found
                    and p.name.lower().endswith((".pt", ".pth", ".pth.tar", ".ckpt")))[:5]
    which = (f"pass one of its checkpoints: {', '.join(map(str, found))}" if found else
             "it holds no checkpoint file (*.pt, *.pth, *.pth.tar); pass a checkpoint file (a training run writes "
             "OUT/model.pt, OUT/best.pt and OUT/last.pt)")
    return f"checkpoint {path} is a folder, not a regular file: {which}"


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, never code.

    Raises:
        FileNotFoundError: no such file.
        CheckpointLoadError: (a ``ValueError``) not a regular file, an empty or truncated
            file, not a PyTorch checkpoint, or objects other than tensors and plain
            containers; the message says which, with torch's own reason.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointLoadError(folder_message(path))
    if not path.is_file():
        raise CheckpointLoadError(f"checkpoint {path} is not a regular file")
    if path.stat().st_size == 0:
        raise CheckpointLoadError(f"checkpoint {path} is empty (0 bytes): its save was interrupted or the disk "
                                  "was full; use another checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError / EOFError / KeyError ...
        # a file that is neither a zip (torch.save) nor a pickle (the legacy format, official .pth.tar) goes
        # through torch's legacy unpickler too, which fails with the same "Weights only load failed"
        with open(path, "rb") as f:
            head = f.read(4)
        checkpoint_like = head.startswith(b"PK") or head[:1] == b"\x80"  # zip / pickle protocol >= 2
        if not checkpoint_like and path.suffix.lower() == ".onnx":
            what = ("it is an ONNX model, not a PyTorch checkpoint: an .onnx export serves inference only "
                    "(FaceEmbedder, SuperResolver, Frontalizer, the --weights of their CLIs) and cannot be trained or "
                    "fine-tuned; give the PyTorch checkpoint it was exported from")
        elif not checkpoint_like:
            what = "it is not a readable PyTorch checkpoint (neither a torch.save zip nor a pickle: another kind of file)"
        elif is_torchscript(path):
            what = ("it is a TorchScript module (lightface.export.export_torchscript, torch.jit.save), not a "
                    "checkpoint: it serves inference only (FaceEmbedder, SuperResolver, Frontalizer and the --weights of "
                    "their CLIs take the file, or run it with torch.jit.load(path)); training and fine-tuning need "
                    "the PyTorch checkpoint it was exported from")
        elif isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            what = ("it holds objects other than tensors and plain containers, and lightface loads checkpoints "
                    "with weights_only=True (never code); re-save it with tensors only, e.g. "
                    "torch.save(model.state_dict(), path)")
        else:
            what = "it is not a readable PyTorch checkpoint (truncated, corrupt or another kind of file)"
        raise CheckpointLoadError(f"cannot load checkpoint {path}: {what} ({_torch_reason(err)})") from err
