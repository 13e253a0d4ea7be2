"""Pruning methods. A method only decides WHAT to remove (a keep-mask); everything after is shared."""

from diet.methods.base import METHODS, MaskSelection, Method, PruningContext

# Importing the modules registers the methods.
from diet.methods import (  # noqa: E402,F401  (registers them)
    activation_pooled,
    dense,
    diet,
    diet_oracle,
    flap,
    llm_pruner,
    magnitude,
    random_baseline,
    shortgpt,
    slicegpt,
    wanda_sp,
)

__all__ = ["METHODS", "MaskSelection", "Method", "PruningContext"]
