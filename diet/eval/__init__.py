"""Evaluation: tasks (from the lm-eval task YAMLs), document selection, the stock and fast lm-eval backends."""
