"""A `dims` value -> its dimensions, and the values methods can offer."""

from __future__ import annotations

from typing import Any, Mapping

from diet.dims.base import DIMENSIONS, Dimension
from diet.errors import DietConfigError
from diet.registry import unknown_name_message

DEFAULT_DIMS = "mlp"
# combinations of several dimensions that are tested end to end (each part at the same sparsity)
COMBINATIONS = ("mlp+heads",)


def dimensions() -> list[Dimension]:
    """Every registered dimension in pruning order."""
    import diet.dims  # noqa: F401  (registers the dimension modules)

    return sorted((DIMENSIONS.get(name) for name in DIMENSIONS.names()), key=lambda d: d.order)


def single_dims() -> tuple[str, ...]:
    """The dimensions `dims=` may name alone, in pruning order."""
    return tuple(d.name for d in dimensions() if d.selectable)


def scored_dims() -> tuple[str, ...]:
    """What an activation-scored method offers: every selectable dimension it scores alone, then the
    combinations."""
    return tuple(d.name for d in dimensions() if d.selectable and d.scored) + COMBINATIONS


def dim_parts(dims: str) -> tuple[str, ...]:
    """'mlp+heads' -> ('mlp', 'heads'); names must be selectable, distinct and in pruning order."""
    parts = tuple(str(dims).split("+")) if isinstance(dims, str) else ()
    allowed = single_dims()
    if not parts or any(part not in allowed for part in parts):
        raise DietConfigError(unknown_name_message("dims", dims, list(allowed) + list(COMBINATIONS)))
    canonical = tuple(sorted(set(parts), key=allowed.index))
    if parts != canonical:
        raise DietConfigError(f"dims={dims!r}: name each dimension once, in the order {'+'.join(canonical)}")
    return parts


def parts_of(dims: str) -> list[Dimension]:
    return [DIMENSIONS.get(part) for part in dim_parts(dims)]


def cfg_dims(cfg: Mapping[str, Any]) -> str:
    return cfg.get("dims") or DEFAULT_DIMS


def sort_key(dims: str) -> tuple[int, int]:
    """Order of `dims` values in tables and figures: pruning order, a combination right after its last
    part (mlp, kv_groups, mlp+kv_groups, heads, mlp+heads, hidden); unknown names last."""
    order = {d.name: d.order for d in dimensions()}
    parts = str(dims).split("+")
    return (max(order.get(part, len(order)) for part in parts), len(parts))
