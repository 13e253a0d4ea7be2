"""Random: seeded uniform random channel scores, top-k per layer. The floor every method must beat.

Every dimension (`dims`) gets its own seeded draw (seed + its Dimension.random_stream, so the MLP draw is
the same whatever `dims` adds); heads keep the top ones per KV group (diet/prune/attention.py's GQA rule),
hidden the top ones of one global draw.
"""

from __future__ import annotations

from dataclasses import dataclass

from diet.dims.base import random_scores
from diet.dims.choice import parts_of, scored_dims
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.by_dimension import selection_stats
from diet.methods.inputs import Seed, Target
from diet.select import masks


@dataclass(frozen=True)
class RandomInputs:
    target: Target
    seed: Seed


@METHODS.register("random")
class Random(Method):
    name = "random"
    table_rank = 7
    dims = scored_dims()
    Inputs = RandomInputs

    def select(self, ctx: PruningContext, inputs: RandomInputs) -> MaskSelection:
        model, seed, sparsity = ctx.loaded.model, inputs.seed.value, inputs.target.sparsity
        finals = {}
        with ctx.timer("mask"):
            for dimension in parts_of(inputs.target.dims):
                layout = dimension.layout(model)
                scores = layout.split(random_scores(dimension.widths(model), seed + dimension.random_stream))
                finals[dimension.name] = layout.join(masks.select_top(scores, sparsity, scope="layer"))
        return MaskSelection(keep=finals, stats=selection_stats({}, finals))
