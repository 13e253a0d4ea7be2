"""Magnitude (Mag-sp): data-free weight norm, top-k per layer, as FLAP's `lib/prune.py:prune_magnitude_sp`.

Reference: W_metric = torch.norm(W_down, dim=0), the L2 norm of MLP channel j's down_proj column
(and, for heads, the o_proj columns' norms summed per head; heads are not pruned here: dims=mlp only).

Named deviation: the removed count per layer is diet.select.masks.keep_count's, shared by every method (round
half up), where the reference removes floor(ratio * width).
"""

from __future__ import annotations

import torch

from diet.select import masks
from dataclasses import dataclass

from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.inputs import Target
from diet.models.adapters import adapter_for


@torch.no_grad()
def magnitude_scores(model: torch.nn.Module) -> list[torch.Tensor]:
    """Per layer, per MLP channel, the L2 norm of its down_proj column (float64)."""
    adapter = adapter_for(model)
    return [adapter.mlp(layer).down.weight.detach().to(torch.float64).norm(dim=0).cpu()  # per layer, on its device
            for layer in range(adapter.num_layers())]


@dataclass(frozen=True)
class MagnitudeInputs:
    target: Target


@METHODS.register("magnitude")
class Magnitude(Method):
    name = "magnitude"
    table_rank = 6
    seeded = False  # data-free and deterministic: no seed changes the result
    version = 2  # 2: the reference's down_proj column norm; 1 also counted the gate and up rows

    Inputs = MagnitudeInputs

    def select(self, ctx: PruningContext, inputs: MagnitudeInputs) -> MaskSelection:
        with ctx.timer("mask"):
            final = masks.select_top(magnitude_scores(ctx.loaded.model), inputs.target.sparsity, scope="layer")
        return MaskSelection(keep={"mlp": final}, stats=masks.mask_stats({}, final))
