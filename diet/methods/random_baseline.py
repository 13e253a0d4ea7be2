"""Random: seeded uniform random channel scores, top-k per layer. The floor every method must beat."""

from __future__ import annotations

import torch

from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.models.adapters import adapter_for


def random_scores(widths: list[int], seed: int) -> list[torch.Tensor]:
    """Per layer, i.i.d. U[0, 1) float64 scores from one torch.Generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(int(seed))
    return [torch.rand(width, generator=generator, dtype=torch.float64) for width in widths]


@METHODS.register("random")
class Random(Method):
    name = "random"
    uses = ("sparsity", "dims")  # the run's `seed` is a base section

    def select(self, ctx: PruningContext) -> MaskSelection:
        with ctx.timer("mask"):
            scores = random_scores(adapter_for(ctx.loaded.model).mlp_widths(), ctx.cfg["seed"])
            final = masks.select_top(scores, ctx.cfg["sparsity"], scope="layer")
        return MaskSelection(mlp_keep=final, stats=masks.mask_stats({}, final))
