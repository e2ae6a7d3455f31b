"""Reading the files :mod:`lightface.export` writes: an ONNX Runtime session and the model card stored with an
exported model (ONNX ``metadata_props``, or a TorchScript archive's extra file), under :data:`CARD_KEY`.

Shared by the exported recogniser (:class:`lightface.export.OnnxRecognizer`) and the restorers running an exported
generator (:class:`lightface.restore.loading.ExportedGenerator`).
"""
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Set, Tuple, Union

import torch

__all__ = ["CARD_KEY", "onnx_session", "onnx_card", "parse_card", "load_torchscript", "is_torchscript",
           "is_onnx_path", "is_exported", "traced_devices", "torchscript_on_device"]

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


def is_exported(weights: Any) -> bool:
    """Whether ``weights`` is the path of a file :mod:`lightface.export` writes: an ``.onnx`` file (by its
    suffix, as :class:`~lightface.FaceEmbedder` tells one) or a TorchScript archive (by its content)."""
    if not isinstance(weights, (str, os.PathLike)):
        return False
    return is_onnx_path(weights) or (os.path.isfile(weights) and is_torchscript(weights))


def traced_devices(module: Any) -> Set[str]:
    """The devices a loaded TorchScript ``module``'s graph names as constants (``{"cpu"}`` for a trace that
    made a tensor with ``device=x.device``, e.g. the generators of lightface before its exports were
    device-free); empty for a graph that runs on whatever device its weights and input are on."""
    graph = str(module.inlined_graph)
    return set(re.findall(r'Device = prim::Constant\[value="([^"]+)"\]', graph))


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


def torchscript_on_device(module: Any, device: torch.device, source: str) -> torch.device:
    """Move a loaded TorchScript ``module`` (loaded on the CPU) to the device it runs on for a caller on
    ``device``, and return that device: ``device`` itself for a device-free graph (what
    :func:`lightface.export.export_torchscript` writes); for a graph that names one device as a constant (a
    file of a lightface before its exports were device-free, or a trace of your own that made a tensor with
    ``device=x.device``) that device, with a warning naming ``source`` when it is not ``device``.

    Raises:
        ValueError: the graph names several devices.
    """
    pinned = traced_devices(module)
    if not pinned:
        run = device
    elif len(pinned) == 1:
        run = torch.device(next(iter(pinned)))
        if run.type != device.type or (run.index or 0) != (device.index or 0):
            logger.warning("%s: its traced graph makes tensors on the fixed device %s (exported by a lightface before "
                           "its TorchScript files were device-free, or traced so), so it runs there, not on %s: export "
                           "it again with lightface.export.export_torchscript to run it on any device", source, run,
                           device)
    else:
        raise ValueError(f"{source}: its traced graph makes tensors on several fixed devices ({sorted(pinned)}), so it "
                         "runs on none of them alone: export it again with lightface.export.export_torchscript")
    if run.type != "cpu":
        module.to(run)
    return run
