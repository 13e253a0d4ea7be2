"""Random: seeded uniform random channel scores, top-k per layer. The floor every method must beat.

Heads and hidden dims (`dims`) get their own seeded draws (streams seeded with seed + HEADS_STREAM /
seed + HIDDEN_STREAM, so the MLP draw is the same whatever `dims` adds); heads keep the top ones per KV
group (diet/prune_attention.py's GQA rule), hidden the top ones of one global draw.
"""

from __future__ import annotations

import torch

from diet import dims as dims_mod
from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.models.adapters import adapter_for

HEADS_STREAM, HIDDEN_STREAM = 1_000_003, 2_000_003


def random_scores(widths: list[int], seed: int) -> list[torch.Tensor]:
    """Per layer, i.i.d. U[0, 1) float64 scores from one torch.Generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(int(seed))
    return [torch.rand(width, generator=generator, dtype=torch.float64) for width in widths]


@METHODS.register("random")
class Random(Method):
    name = "random"
    uses = ("sparsity", "dims")  # the run's `seed` is a base section
    dims = ("mlp", "heads", "mlp+heads", "hidden")

    def select(self, ctx: PruningContext) -> MaskSelection:
        parts = dims_mod.dim_parts(dims_mod.cfg_dims(ctx.cfg))
        model, seed, sparsity = ctx.loaded.model, ctx.cfg["seed"], ctx.cfg["sparsity"]
        adapter = adapter_for(model)
        finals = {}
        with ctx.timer("mask"):
            if "mlp" in parts:
                finals["mlp"] = masks.select_top(random_scores(adapter.mlp_widths(), seed), sparsity, scope="layer")
            if "heads" in parts:
                scores = random_scores(adapter.head_counts(), seed + HEADS_STREAM)
                finals["heads"] = dims_mod.select_heads(scores, sparsity, dims_mod.HeadLayout.of(model))
            if "hidden" in parts:
                scores = random_scores([adapter.hidden_width()], seed + HIDDEN_STREAM)
                finals["hidden"] = masks.select_top(scores, sparsity, scope="layer")
        return MaskSelection(**dims_mod.selection_fields(finals), stats=dims_mod.selection_stats({}, finals))
