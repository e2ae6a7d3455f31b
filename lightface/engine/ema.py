"""Exponential moving average of model weights (the EMA generator of GAN trainers)."""
import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * param`` after every :meth:`update`.

    Buffers (e.g. BatchNorm statistics) are copied. ``module`` is a frozen deep copy
    in eval mode, usable for validation and saved as ``ema_state_dict``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._param_names = {name for name, _ in self.module.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = _unwrap(model).state_dict()
        for name, value in self.module.state_dict().items():
            if name in self._param_names and value.dtype.is_floating_point:
                value.lerp_(src[name].detach(), 1.0 - self.decay)
            else:
                value.copy_(src[name])

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
