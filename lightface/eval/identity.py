"""Identity score of generated faces: cosine similarity of a recogniser's features.

Two kinds of judge:

* a Light CNN (a module or a checkpoint path; :mod:`lightface.models.identity`): 256-d
  features of the face converted to gray and resized to 128x128;
* dlib's ResNet recogniser (the spec ``"dlib"`` or a
  :class:`~lightface.models.dlib_recognizer.DlibRecognizer`): 128-d descriptors from a
  network this project never trained, the independent judge of issue 13. It finds the face
  from the alignment template, so the template the judged images were aligned with must be
  given (``template="lightcnn"`` for the 128 crops of the super-resolver, the frontalizer
  and the SR corpus). dlib's own metric is the Euclidean distance of its descriptors (same
  person below 0.6); their cosine is reported here so that the dlib column reads like the
  Light CNN one.
"""
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.convert import tensor_to_image
from ..models.dlib_recognizer import DlibRecognizer, is_dlib_spec
from ..models.identity import NetworkLike, identity_features, load_identity_network

__all__ = ["JudgeLike", "load_identity_judge", "identity_embeddings", "identity_cosine"]

#: what names an identity judge: a Light CNN (module, checkpoint path, None = random weights),
#: "dlib" or a DlibRecognizer
JudgeLike = Union[NetworkLike, DlibRecognizer]


def load_identity_judge(network: JudgeLike, template: Optional[str] = None,
                        device: Optional[Union[str, torch.device]] = None) -> Union[nn.Module, DlibRecognizer]:
    """A frozen recogniser that scores identity: a Light CNN in eval mode or dlib's recogniser.

    Args:
        network: a Light CNN module, a checkpoint path or None (random weights: smoke tests
            only), see :func:`lightface.models.identity.load_identity_network`; or ``"dlib"``
            / a :class:`~lightface.models.dlib_recognizer.DlibRecognizer`.
        template: the alignment template of the images the judge will see (``"lightcnn"``,
            ``"lightcnn_train"``, ``"arcface"``). Required for ``"dlib"``; a Light CNN ignores
            it (it resizes every face to 128).
        device: where a Light CNN is moved (None: where it is); dlib runs on the CPU.
    Raises:
        ValueError: ``"dlib"`` without ``template``, or a DlibRecognizer built for another template.
        ImportError: dlib is not installed (the message says what to install).
    """
    if isinstance(network, DlibRecognizer):
        if template is not None and template != network.template:
            raise ValueError(f"{network!r} was built for {network.template!r} crops but the images are aligned with "
                             f"{template!r}; build DlibRecognizer({template!r})")
        return network
    if is_dlib_spec(network):
        if template is None:
            raise ValueError("the dlib judge needs the alignment template of the images it judges: pass "
                             "template='lightcnn' for the 128 crops of the super-resolver and frontalizer, "
                             "'lightcnn_train' for the 144 crops of pipelines.build_lmdb")
        return DlibRecognizer(template)
    net = load_identity_network(network)
    return net.to(device) if device is not None else net


@torch.no_grad()
def identity_embeddings(judge: Union[nn.Module, DlibRecognizer], images: Tensor) -> Tensor:
    """Identity features of a batch of faces.

    Args:
        judge: from :func:`load_identity_judge` (a Light CNN module or a DlibRecognizer).
        images: (N, C, H, W) float in [0, 1], C = 1 (gray) or 3 (**RGB**). A Light CNN takes
            any size; dlib needs square faces aligned with its template (converted to uint8 BGR
            crops, the order :meth:`DlibRecognizer.embed` reads).
    Returns:
        float32 (N, 256) on the Light CNN's device, or (N, 128) on ``images``' device for dlib.
    """
    if images.dim() != 4:
        raise ValueError(f"identity_embeddings expects an (N, C, H, W) batch, got {tuple(images.shape)}")
    if isinstance(judge, DlibRecognizer):
        crops = tensor_to_image(images, color="bgr")  # uint8 (N, H, W, 3) BGR or (N, H, W) gray
        emb = np.stack([judge.embed(c) for c in crops]) if len(crops) else np.empty((0, judge.dim), np.float32)
        return torch.from_numpy(emb).to(images.device)
    return identity_features(judge, images)["fc"].float()


@torch.no_grad()
def identity_cosine(network: JudgeLike, a: Tensor, b: Tensor, batch_size: int = 64,
                    template: Optional[str] = None) -> Tensor:
    """Per-pair cosine similarity of a recogniser's features of ``a[i]`` and ``b[i]``.

    Args:
        network: the judge (see :func:`load_identity_judge`): a Light CNN module, a checkpoint
            path, None (random weights: smoke tests only), ``"dlib"`` or a DlibRecognizer.
        a, b: (N, C, H, W) float in [0, 1], C = 1 (gray) or 3 (**RGB**); same N. A Light CNN
            converts them to gray (ITU-R 601) at 128x128; dlib needs square faces (H = W)
            aligned with ``template``.
        batch_size: images per forward pass.
        template: the alignment template of ``a`` and ``b`` (``"lightcnn"``: the 128 crops of
            the super-resolver); required for ``"dlib"``, ignored by a Light CNN.
    Returns:
        (N,) float32 in [-1, 1], on the Light CNN's device (dlib: on ``a``'s device); 1 =
        same direction (same identity to the recogniser). For dlib this is the cosine of its
        128-d descriptors, reported for comparability with Light CNN; dlib itself decides by
        Euclidean distance (same person below 0.6).

    Example:
        >>> cos = identity_cosine("dlib", sr_faces, hr_faces, template="lightcnn")  # doctest: +SKIP
    """
    if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[0]:
        raise ValueError(f"identity_cosine expects two (N, C, H, W) batches of the same N, got {tuple(a.shape)} and {tuple(b.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    judge = load_identity_judge(network, template)
    out = []
    for i in range(0, a.shape[0], batch_size):
        fa = identity_embeddings(judge, a[i:i + batch_size])
        fb = identity_embeddings(judge, b[i:i + batch_size])
        out.append(F.cosine_similarity(fa, fb, dim=1))
    if not out:
        return torch.empty(0)
    return torch.cat(out)
