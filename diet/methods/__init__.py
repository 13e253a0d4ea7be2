"""Pruning methods. A method only decides WHAT to remove (a keep-mask); everything after is shared."""

from diet.methods.base import METHODS, MaskSelection, Method, PruningContext

# Importing the modules registers the methods.
from diet.methods import dense, diet  # noqa: E402,F401  (registers them)

__all__ = ["METHODS", "MaskSelection", "Method", "PruningContext"]
