"""Exponential moving average of model weights (the EMA generator of GAN trainers)."""
import copy
from typing import Optional

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``ema = d_t * ema + (1 - d_t) * param`` after every :meth:`update`.

    With ``warmup`` (default) the decay of the ``t``-th update is
    ``d_t = min(decay, (1 + t) / (10 + t))`` (TensorFlow's ``num_updates`` rule): early
    updates follow the trained weights closely, so the EMA of a short run is not its
    random initialisation. Without it, ``d_t = decay``: after ``t`` updates the
    initialisation still weighs ``decay ** t`` (0.999 ** 300 = 0.74), which is why a
    TP-GAN trained for a few hundred steps gave flat gray EMA outputs (its sigmoid at
    initialisation). ``warmup=False`` keeps the plain rule.

    Buffers (e.g. BatchNorm statistics) are copied. ``module`` is a frozen deep copy
    in eval mode, usable for validation and saved as ``ema_state_dict``; ``updates``
    counts the updates (pass the training step to :meth:`load_state_dict` on resume).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._param_names = {name for name, _ in self.module.named_parameters()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        if not self.warmup:
            return self.decay
        t = self.updates + 1
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        src = _unwrap(model).state_dict()
        for name, value in self.module.state_dict().items():
            if name in self._param_names and value.dtype.is_floating_point:
                value.lerp_(src[name].detach(), 1.0 - decay)
            else:
                value.copy_(src[name])

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state, updates: Optional[int] = None):
        """Load EMA weights; ``updates``: how many updates they hold (the step, for an exact
        resume of the warm-up); None counts them as warmed up (``decay`` from now on)."""
        self.module.load_state_dict(state)
        self.updates = int(updates) if updates is not None else 1 << 40


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
