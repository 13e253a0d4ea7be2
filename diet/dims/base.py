"""The Dimension contract: everything the framework knows about one prunable dimension type.

A dimension (MLP channels, query heads, hidden dims, whole layers) says what a unit is: how many units a
model has of it (one adapter method), how its per-layer masks map to the entries masks are ranked within
(`Layout`), which rankings its surgery admits, what one unit costs in parameters, how it is removed physically
(and zeroed, for the exactness tests), and what a checkpoint records of its shapes. How units are scored is a
method's business (the activation statistics and DIET's merge repair: diet.methods.activation_scoring). A new
dimension type is one module in diet/dims/ (found by the package's registry), one adapter method for its unit
counts, and its tests.

Masks are lists of 1-D bool tensors in **per-layer form** (one per decoder layer; a model-wide dimension
such as hidden is a one-entry list). Ranking happens on the dimension's **entries** (`Layout.split`):
per layer for MLP channels and KV groups, per (layer, KV group) for heads (the GQA rule), one entry for hidden.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from diet.registry import Registry
from diet.select import masks

# the file of a spec-format checkpoint (diet.export.checkpoint) that holds what `shape_spec` records
SPEC_FILE = "pruning_spec.json"

DIMENSIONS: Registry["Dimension"] = Registry("dimension")  # name -> the (stateless) Dimension instance


def register_dimension(cls: type["Dimension"]) -> type["Dimension"]:
    """Class decorator: registers one instance under the class's `name`."""
    DIMENSIONS.register(cls.name)(cls())
    return cls


class Layout:
    """Per-layer tensors <-> the entries masks are ranked within. The default: one entry per layer."""

    def split(self, per_layer: list[Tensor]) -> list[Tensor]:
        return list(per_layer)

    def join(self, entries: list[Tensor]) -> list[Tensor]:
        return list(entries)


PER_LAYER = Layout()


class Dimension:
    name: ClassVar[str] = "base"
    # where its pruning step runs and where it sorts inside a combined `dims` value ("mlp+heads")
    order: ClassVar[int] = 0
    # method.mask.scope values it honours; under any other scope its units are ranked within their entries
    scopes: ClassVar[tuple[str, ...]] = ("layer",)
    # whether `dims=` may name it (layers are dropped only by ShortGPT's own selection)
    selectable: ClassVar[bool] = True
    # whether the activation-scored methods (diet.methods.activation_scoring) score it; others are offered only by
    # the methods that score them themselves (KV groups: LLM-Pruner)
    scored: ClassVar[bool] = True
    # offset of the random baseline's seed stream, so that adding a dimension never changes another's draw
    random_stream: ClassVar[int] = 0

    # ------------------------------------------------------------------ shape
    def widths(self, model: nn.Module) -> list[int]:
        """Units per layer now (a model-wide dimension: one entry)."""
        raise NotImplementedError

    def units(self, model: nn.Module) -> int:
        return int(sum(self.widths(model)))

    def layout(self, model: nn.Module) -> Layout:
        return PER_LAYER

    def entry_widths(self, model: nn.Module) -> list[int]:
        """Units per ranking entry (what a sparsity's keep_count is rounded on)."""
        return self.widths(model)

    def entry_costs(self, model: nn.Module) -> list[int]:
        """Non-embedding parameters removed with one unit of each ranking entry."""
        raise NotImplementedError

    # ------------------------------------------------------------------ ranking constraints
    def scope(self, configured: str) -> str:
        return configured if configured in self.scopes else "layer"

    def select(self, entry_scores: list[Tensor], sparsity: float, scope: str, min_keep_fraction: float) -> list[Tensor]:
        """One mask (entry layout) of the top units by the scores as given, under the ranking the dimension's
        surgery admits (heads: within each KV group, so every group keeps as many)."""
        return masks.select_top(entry_scores, sparsity, scope=self.scope(scope), min_keep_fraction=min_keep_fraction)

    # ------------------------------------------------------------------ removal
    def prune(self, model: nn.Module, keep: list[Tensor]) -> None:
        """Remove the units whose per-layer mask is False, physically and in place."""
        raise NotImplementedError

    def compensate(self, model: nn.Module, bias: list[Tensor | None]) -> None:
        """Add a method's compensation for the removed units (FLAP's bias), after `prune`."""
        raise NotImplementedError(f"dimension {self.name!r} takes no compensation")

    def zero(self, model: nn.Module, keep: list[Tensor]) -> None:
        """Zero the removed units' weights instead (the reference for exactness tests)."""
        raise NotImplementedError(f"dimension {self.name!r} has no zeroing reference")

    # ------------------------------------------------------------------ checkpoint (diet.export.checkpoint)
    def shape_spec(self, model: nn.Module) -> dict[str, Any]:
        """What a pruned model records of this dimension's shapes (config.diet_pruning, pruning_spec.json)
        when its stock config cannot express them; default: nothing (the config holds them)."""
        return {}

    def config_expresses(self, spec: Mapping[str, Any], config: Any) -> bool:
        """Whether the stock `config` alone gives the shapes `spec` records (raises PrunedCheckpointError when
        the two contradict each other)."""
        return True

    def rebuild(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        """Give a model built from its stock config the shapes `spec` records (its values are loaded next)."""


def has_bias(linear: nn.Linear) -> int:
    return int(linear.bias is not None)


def random_scores(widths: list[int], seed: int) -> list[torch.Tensor]:
    """Per entry of `widths`, i.i.d. U[0, 1) float64 scores from one torch.Generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(int(seed))
    return [torch.rand(width, generator=generator, dtype=torch.float64) for width in widths]
