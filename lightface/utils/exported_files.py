"""Reading the files :mod:`lightface.export` writes: an ONNX Runtime session and the model card stored with an
exported model (ONNX ``metadata_props``, or a TorchScript archive's extra file), under :data:`CARD_KEY`.

Shared by the exported recogniser (:class:`lightface.export.OnnxRecognizer`) and the restorers running an exported
generator (:class:`lightface.restore.loading.ExportedGenerator`).
"""
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = ["CARD_KEY", "onnx_session", "onnx_card", "parse_card", "load_torchscript", "is_torchscript",
           "is_onnx_path"]

logger = logging.getLogger(__name__)

#: the ONNX ``metadata_props`` key (and the TorchScript extra file) holding an exported model's card (JSON)
CARD_KEY = "lightface.card"

PathLike = Union[str, os.PathLike]


def is_onnx_path(path: Any) -> bool:
    """Whether ``path`` (a str / PathLike; anything else: False) names an ``.onnx`` file, by its suffix."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(".onnx")


def is_torchscript(path: PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names)


def onnx_session(path: PathLike, providers: Optional[Sequence[str]] = None, threads: int = 0):
    """An ``onnxruntime.InferenceSession`` on ``path`` (all graph optimisations on).

    Args:
        providers: ONNX Runtime providers (default: CUDA when available, else CPU).
        threads: intra-op threads (0: ONNX Runtime's default).
    Raises:
        FileNotFoundError: no such file.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), opts, providers=list(providers))


def parse_card(stored: Optional[Union[str, bytes]], source: PathLike) -> Dict[str, Any]:
    """The card stored as ``stored`` (JSON text; empty or None: ``{}``); text that is no JSON object is logged
    as ignored (``source`` names the file) and gives ``{}``."""
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", "replace")
    try:
        card = json.loads(stored) if stored else {}
    except ValueError:
        card = None
    if not isinstance(card, dict):
        logger.warning("%s: its %r metadata is not a JSON object; ignored", source, CARD_KEY)
        card = {}
    return card


def onnx_card(session, source: PathLike) -> Dict[str, Any]:
    """The card an ONNX Runtime ``session``'s model carries (``{}`` without one)."""
    return parse_card(session.get_modelmeta().custom_metadata_map.get(CARD_KEY), source)


def load_torchscript(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Tuple[Any, Dict[str, Any]]:
    """``(module, card)``: ``torch.jit.load`` of a TorchScript file in eval mode, and the card
    :func:`lightface.export.export_torchscript` stored in it (``{}`` without one).

    A TorchScript file is a program (TorchScript code, not Python), not a checkpoint of weights: load only
    files you trust, as with any model file you run.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript model not found: {path}")
    extra = {CARD_KEY: ""}
    module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    return module.eval(), parse_card(extra[CARD_KEY], path)
