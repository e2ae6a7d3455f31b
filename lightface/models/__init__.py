"""Models: Light CNN recognisers and the face generators; ``get_model`` builds any by name."""
from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
