"""The sha256 of a module's state: how a model held in memory is told apart from another."""
import hashlib

import torch

__all__ = ["state_sha256"]


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry in key order: its key, dtype, shape and raw bytes.

    Two modules with the same state get the same digest whatever their Python class or
    device; any change to a weight, a buffer, a dtype or a key changes it. Used for
    ``FaceEmbedder(module).weights_info`` and by galleries to recognise the model that
    filled them.
    """
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
