"""Run a classifier (a Light CNN with its classifier) over a dataset, in order, with optional mixed precision."""
from contextlib import nullcontext
from typing import Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..utils.worker_signals import starting_workers

__all__ = ["AMP_DTYPES", "autocast", "predict"]

#: ``--amp`` values: none (float32), bf16 (GPU or CPU), fp16 (GPU, with loss scaling when training)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: Union[str, torch.device], amp: str = "none"):
    """``torch.autocast`` for ``amp`` (a key of :data:`AMP_DTYPES`) on ``device``; a no-op for ``"none"``."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128, workers: int = 0, device="cpu",
            amp: str = "none", channels_last: bool = False, features: bool = False, progress: bool = False,
            classify: bool = True):
    """Run a classifier over a dataset of ``(image, label, index)`` items, in order.

    Args:
        model: called as ``model(images, return_logits=True) -> (logits, features)``
            (a :class:`~lightface.models.lightcnn.LightCNN` with a classifier); set to eval mode.
        dataset: items ``(image (C,H,W) float [0,1], label, index)``, e.g.
            :class:`lightface.data.recognition.SampleTransformDataset`.
        classify: run the classifier (False: features only, for a model without one; ``probs``
            is then None).
    Returns:
        ``(probs (N, K) float32 softmax, labels (N,) int64, indices (N,) int64)`` as numpy
        arrays, plus ``features (N, 256) float32`` (not normalised) when ``features=True``.
    Raises:
        ValueError: the dataset is empty.
    """
    model.eval()
    # an explicit generator keeps the global RNG untouched (resumed runs replay the same draws)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    with starting_workers():  # a stop signal to the process group (a trainer's relabelling) spares the workers
        batches = iter(loader)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=len(loader), desc="predict", unit="batch")
    device = torch.device(device)
    probs, labels, indices, feats = [], [], [], []
    for images, target, index in batches:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            if classify:
                logits, f = model(images, return_logits=True)
                probs.append(logits.float().softmax(1).cpu())
            else:
                f = model(images)
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(target))
        indices.append(torch.as_tensor(index))
    if not indices:
        raise ValueError("predict: the dataset is empty")
    out = (torch.cat(probs).numpy() if classify else None, torch.cat(labels).numpy().astype(np.int64), torch.cat(indices).numpy().astype(np.int64))
    return (*out, torch.cat(feats).numpy()) if features else out
