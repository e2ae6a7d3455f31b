"""Models: Light CNN recognisers and the face generators; ``get_model`` builds any by name.

Each model module registers its builders on import; add one import line per module.
"""
from .registry import get_model, list_models, register_model
from .pretrained import PretrainedError, PretrainedWeights, default_weights, get_pretrained, list_pretrained
from . import lightcnn  # noqa: F401  (registers lightcnn9, lightcnn29, lightcnn29v2)
from . import wavelet_srnet, discriminators  # noqa: F401  (wavelet_srnet, image_/wavelet_discriminator)
from . import tpgan  # noqa: F401  (tpgan, tpgan_discriminator)
from . import autoencoder_discriminator  # noqa: F401  (autoencoder_discriminator, BEGAN)

__all__ = ["get_model", "list_models", "register_model", "list_pretrained", "get_pretrained", "default_weights",
           "PretrainedWeights", "PretrainedError"]
