"""The shared pruner: a method's selection (diet.methods.base.MaskSelection) removed physically."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from diet.dims.choice import dimensions
from diet.dims.shapes import record_shapes
from diet.models.adapters import parameter_counts


def apply_selection(model: nn.Module, selection: Any) -> dict[str, dict[str, int]]:
    """Remove whatever a method selected, one dimension after the other in pruning order (MLP channels
    and their compensation, query heads, hidden dims, whole layers). Returns the parameters each
    dimension's steps removed ({dimension: {"total", "non_embedding"}}, only the dimensions pruned)."""
    removed: dict[str, dict[str, int]] = {name: dict(counts) for name, counts in selection.rewritten.items()}

    def step(name: str, fn: Callable[..., None], *args: Any) -> None:
        before = parameter_counts(model)
        fn(model, *args)
        after = parameter_counts(model)
        done = removed.setdefault(name, {"total": 0, "non_embedding": 0})
        for key in done:
            done[key] += before[key] - after[key]

    unknown = sorted((set(selection.keep) | set(selection.bias) | set(selection.rewritten))
                     - {d.name for d in dimensions()})
    if unknown:
        raise ValueError(f"selection names unknown dimension(s) {unknown}")
    for dimension in dimensions():
        if dimension.name in selection.keep:
            step(dimension.name, dimension.prune, selection.keep[dimension.name])
        if dimension.name in selection.bias:
            step(dimension.name, dimension.compensate, selection.bias[dimension.name])
    if removed:
        record_shapes(model)
    return removed
