"""Magnitude: data-free channel weight norm, top-k per layer.

score_j = sqrt(||W_gate[j, :]||^2 + ||W_up[j, :]||^2 + ||W_down[:, j]||^2)   (Frobenius norm of all
weights that belong to MLP channel j: its gate row, its up row and its down column).
"""

from __future__ import annotations

import torch

from diet import masks
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.models.adapters import adapter_for


@torch.no_grad()
def magnitude_scores(model: torch.nn.Module) -> list[torch.Tensor]:
    """Per layer, per MLP channel, the L2 norm of its gate row, up row and down column (float64)."""
    adapter = adapter_for(model)
    scores = []
    for layer in range(adapter.num_layers()):
        mlp = adapter.mlp(layer)
        gate, up, down = (w.weight.detach().to("cpu", torch.float64) for w in (mlp.gate, mlp.up, mlp.down))
        scores.append((gate.square().sum(1) + up.square().sum(1) + down.square().sum(0)).sqrt())
    return scores


@METHODS.register("magnitude")
class Magnitude(Method):
    name = "magnitude"
    seeded = False  # data-free and deterministic: no seed changes the result
    uses = ("sparsity", "dims")

    def select(self, ctx: PruningContext) -> MaskSelection:
        with ctx.timer("mask"):
            final = masks.select_top(magnitude_scores(ctx.loaded.model), ctx.cfg["sparsity"], scope="layer")
        return MaskSelection(mlp_keep=final, stats=masks.mask_stats({}, final))
