"""Identity networks: a frozen Light CNN as the judge of generated faces (loading, features).

The identity-preserving losses (:mod:`lightface.losses.identity`) and the identity scores
(:mod:`lightface.eval.identity`) both start here.

Images are float (N, C, H, W) in [0, 1], C = 1 (gray) or 3 (**RGB**), any size: they
are converted to gray with ITU-R 601 weights and resized to 128x128 inside
(:func:`lightface.models.lightcnn.to_lightcnn_input`), so they should be roughly aligned
like Light CNN crops (eyes level, face filling the frame).
"""
import logging
import os
from typing import Dict, Optional, Union

from torch import Tensor, nn

from .checkpoint import build_from_checkpoint
from .dlib_recognizer import is_dlib_spec
from .lightcnn import LightCNN, check_features, to_lightcnn_input
from .pretrained import PretrainedError, default_weights, resolve_weights
from .registry import get_model

__all__ = ["NetworkLike", "NO_IDENTITY", "resolve_identity_weights", "load_identity_network", "identity_features"]

logger = logging.getLogger(__name__)

NetworkLike = Union[nn.Module, str, os.PathLike, None]


#: values of ``--identity-weights`` that switch the identity network off explicitly
NO_IDENTITY = ("none", "off")


def resolve_identity_weights(weights: Optional[Union[str, os.PathLike]], purpose: str = "the identity loss") -> Optional[str]:
    """The identity network a generator trainer uses (``--identity-weights``), as a checkpoint path or None (off).

    * a path (or a shipped entry's name, e.g. ``"recognition"``): that network;
    * ``"none"`` / ``"off"``: no identity network (the identity loss and metrics are off);
    * None (flag unset): the recogniser that ships with lightface,
      :func:`lightface.models.default_weights` ``("recognition")`` (its sha256 is checked
      here); when none ships, a warning says so and None is returned (off).

    Args:
        weights: the flag's value.
        purpose: what it is for, in the warning (``"the identity loss"``).
    Returns:
        a checkpoint path, or None.
    Raises:
        lightface.models.PretrainedError: a shipped file is damaged (sha256 mismatch), or names a model of
            another task; :class:`~lightface.models.pretrained.WeightsNotFoundError`: no such file nor
            shipped name (the message lists the close shipped names).
    """
    if weights is not None:
        text = os.fspath(weights)
        if text.strip().lower() in NO_IDENTITY:
            logger.info("identity network switched off (--identity-weights %s); not computed: %s", text, purpose)
            return None
        entry = resolve_weights(text, "recognition", "--identity-weights")  # a typo lists the close shipped names
        return text if entry is None else str(entry.path())
    try:
        entry = default_weights("recognition")
    except PretrainedError:
        logger.warning("no --identity-weights and no shipped recogniser ('recognition' in lightface/weights/"
                       "manifest.json): %s is off; pass --identity-weights LIGHTCNN_CHECKPOINT", purpose)
        return None
    path = str(entry.path())  # sha256-checked: a damaged install fails here, not silently
    logger.info("identity network: the shipped recogniser %s (%s, sha256 %s...)", entry.name, entry.arch,
                entry.sha256[:12])
    return path


def load_identity_network(network: NetworkLike, default_arch: str = "lightcnn29v2") -> nn.Module:
    """A frozen recogniser in eval mode from a module, a checkpoint path, or None.

    Args:
        network: an ``nn.Module`` (used as is, frozen in place), a checkpoint path (this
            project's or an official Light CNN release; see
            :func:`lightface.models.checkpoint.build_from_checkpoint`), or ``None``: a
            randomly initialised ``default_arch``, which only makes sense for smoke tests
            (a warning is logged).
    Returns:
        the module, ``requires_grad`` off for every parameter, in eval mode. It must map
        (N,1,128,128) gray in [0,1] to (N,D) features; ``feature_maps(x)`` (Light CNN) gives
        the intermediate ``pool`` features too.
    """
    if network is None:
        logger.warning("identity network: no weights given, using a randomly initialised %s "
                       "(meaningless except for smoke tests); pass a Light CNN checkpoint", default_arch)
        network = get_model(default_arch, num_classes=0)
    elif is_dlib_spec(network):
        raise ValueError(f"{network!r} (dlib's recogniser) only judges identity (lightface.eval.identity."
                         "identity_cosine, benchmarks' --identity-weights NAME=dlib); it has no gradients and no "
                         "feature maps for an identity loss: give a Light CNN checkpoint or a shipped name")
    elif isinstance(network, (str, os.PathLike)):
        network = build_from_checkpoint(network, num_classes=0, expect=LightCNN)  # a recogniser, not a GAN
    elif not isinstance(network, nn.Module):
        raise TypeError(f"identity network must be an nn.Module, a checkpoint path or None, got {type(network).__name__}")
    for p in network.parameters():
        p.requires_grad_(False)
    return network.eval()


def identity_features(network: nn.Module, images: Tensor) -> Dict[str, Tensor]:
    """Features of ``images`` (N, C, H, W) float [0, 1], C = 1 or 3 (RGB), any size, moved to the
    network's device: ``{"pool": (N, 8192), "fc": (N, 256)}`` for Light CNNs, ``{"fc": network(x)}``
    for other recognisers."""
    try:
        device = next(network.parameters()).device
    except StopIteration:
        device = images.device
    if images.device != device:  # no op when on it already: a trace (lightface.export) records no fixed device
        images = images.to(device)
    x = to_lightcnn_input(images)
    if hasattr(network, "feature_maps"):
        return network.feature_maps(x)
    return {"fc": check_features(network(x), len(x), "identity network")}
