"""Pruned models leaving the framework: stock checkpoints (padded when needed), the spec format, model cards."""
