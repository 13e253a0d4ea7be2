"""Model loading (one source per way of obtaining weights) and one adapter per architecture family."""

from diet.models.adapters import ADAPTERS, ModelAdapter, adapter_for
from diet.models.loaders import LoadedModel, load_model

__all__ = ["ADAPTERS", "ModelAdapter", "adapter_for", "LoadedModel", "load_model"]
