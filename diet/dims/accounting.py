"""What a sparsity means in units and parameters, per dimension (`dims`, `sparsity_of`).

`sparsity_of`: `dim` (default) = `sparsity` is the fraction of each pruned dimension removed;
`params` = `sparsity` is the target fraction of NON-EMBEDDING parameters removed, and the one
per-dimension fraction is solved for (`solve_dim_sparsity`): among the fractions r / width that
change the kept count (every ranking entry's width: per-layer MLP widths, heads per KV group, the hidden
width), the one whose exact parameter removal (with the same rounding as the masks) is nearest the target.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from diet.dims.choice import cfg_dims, dimensions, parts_of
from diet.models.adapters import parameter_counts
from diet.select import masks

SPARSITY_OF = ("dim", "params")

# per pruned dimension: (units per ranking entry, parameters per unit of that entry)
Shapes = dict[str, tuple[list[int], list[int]]]


def dim_units(model: nn.Module) -> dict[str, int]:
    """How many units of each dimension type the model has now."""
    return {d.name: d.units(model) for d in dimensions()}


def unit_parameters(model: nn.Module, dims: str) -> dict[str, list[int]]:
    """Non-embedding parameters removed with one unit, per ranking entry of each part of `dims`."""
    return {d.name: d.entry_costs(model) for d in parts_of(dims)}


def _shapes(model: nn.Module, dims: str) -> Shapes:
    return {d.name: (d.entry_widths(model), d.entry_costs(model)) for d in parts_of(dims)}


def removed_parameters(model: nn.Module, dims: str, sparsity: float, shapes: Shapes | None = None) -> int:
    """Exact non-embedding parameters removed by pruning `dims` at per-dimension `sparsity` (the same
    keep_count rounding as the masks: per ranking entry)."""
    shapes = shapes or _shapes(model, dims)
    return int(sum((w - masks.keep_count(w, sparsity)) * c
                   for widths, costs in shapes.values() for w, c in zip(widths, costs)))


def solve_dim_sparsity(model: nn.Module, dims: str, target: float) -> dict[str, Any]:
    """The per-dimension sparsity whose exact non-embedding parameter removal is nearest `target` (a
    fraction of the non-embedding parameters). Candidates: 0 and every r / width (r < width) for the
    entry widths whose kept counts it sets; ties go to the smaller sparsity. Returns the sparsity, the
    predicted removed fraction and the target."""
    shapes = _shapes(model, dims)
    widths = {w for entry_widths, _ in shapes.values() for w in entry_widths}
    candidates = sorted({0.0} | {r / w for w in widths for r in range(1, w)})
    non_embedding = parameter_counts(model)["non_embedding"]
    goal = target * non_embedding
    best = min(candidates, key=lambda s: (abs(removed_parameters(model, dims, s, shapes) - goal), s))
    return {
        "sparsity": float(best),
        "target_parameters": float(target),
        "predicted_parameters": removed_parameters(model, dims, best, shapes) / non_embedding,
    }


def sparsity_facts(model: nn.Module, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What the record says of the target: with sparsity_of=params, the per-dimension fraction solved for
    `model` (`dim_sparsity`, the one the method receives) and the parameter fractions; else the fraction as set."""
    of = cfg.get("sparsity_of") or "dim"
    if of == "dim":
        return {"of": "dim", "dim_sparsity": float(cfg["sparsity"])}
    solved = solve_dim_sparsity(model, cfg_dims(cfg), float(cfg["sparsity"]))
    return {"of": of, "dim_sparsity": solved["sparsity"], **solved}


def dims_accounting(dims: str, units_before: dict[str, int], units_after: list[dict[str, int]],
                    removed: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, Any]]:
    """record["sparsity"]["by_dim"]: per pruned dimension type (plus any other dimension a selection
    removed, e.g. ShortGPT's layers) the units before/after (mean over the evaluated models), the fraction
    removed and the parameters (total / non-embedding) its own pruning step removed."""
    import numpy as np

    parts = [d.name for d in parts_of(dims)]
    parts += [d.name for d in dimensions() if d.name not in parts and any(d.name in job for job in removed)]
    by_dim: dict[str, dict[str, Any]] = {}
    for part in parts:
        after = float(np.mean([units[part] for units in units_after]))
        params = {
            key: int(round(np.mean([job.get(part, {}).get(key, 0) for job in removed])))
            for key in ("total", "non_embedding")
        }
        by_dim[part] = {
            "before": units_before[part],
            "after": after,
            "removed_fraction": 1.0 - after / units_before[part],
            "parameters_removed": params,
        }
    return by_dim


def actual_sparsity(dims: str, by_dim: Mapping[str, Mapping[str, Any]] | None) -> float:
    """THE actual sparsity of a pruned model, for its record, its model card and experiments.show: the
    fraction of MLP channels removed whenever MLP channels were (dims with mlp; ShortGPT's dropped layers),
    else the fraction of the pruned dimension's units (heads, hidden); 0 for a model nothing was removed from
    (`by_dim` None). The parameter fractions beside it: diet.run.pipeline.parameters_section."""
    if not by_dim:
        return 0.0
    return float(by_dim["mlp" if "mlp" in by_dim else dims]["removed_fraction"])

