"""DIET: dimension-wise global pruning of LLMs by merging task-specific importance masks."""

__version__ = "0.1.0"
