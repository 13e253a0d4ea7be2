"""ShortGPT (Men et al. 2024): remove whole decoder layers with the lowest Block Influence.

BI_l = 1 - mean_t cos(x_t^in, x_t^out) of layer l over the calibration tokens (`calib.source`; by default
the task samples pooled), from profile.block_influence().

How many layers: the channel methods at the same `sparsity` remove
    target = sum_l (width_l - keep_count(width_l, sparsity)) * (parameters of one MLP channel)
           ~ sparsity * 3 * hidden * intermediate * layers
parameters. Layers are removed in order of increasing BI (ties: lower index first); the number k in
0..L-1 (at least one layer stays) is the one whose removed parameters (the exact parameter count of
those k decoder layers, taken from the model) are nearest to the target; on a tie the smaller k. So
ShortGPT is compared at the nearest achievable parameter budget, and the record states both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import calibration_profile
from diet.methods.inputs import Calibration, Target
from diet.models.adapters import adapter_for
from diet.select import masks


@dataclass(frozen=True)
class ShortGPTInputs:
    target: Target              # its sparsity sets the parameter budget; the layers dimension is ShortGPT's own
    calibration: Calibration


def layer_parameters(model: torch.nn.Module) -> list[int]:
    """Parameters of each decoder layer (attention, MLP, norms)."""
    return [sum(p.numel() for p in layer.parameters()) for layer in adapter_for(model).layers()]


def channel_removed_parameters(model: torch.nn.Module, sparsity: float) -> int:
    """Parameters the MLP-channel methods remove at `sparsity`: removed channels x parameters per channel
    (gate row, up row, down column, and the gate/up bias entries if the model has them)."""
    adapter = adapter_for(model)
    total = 0
    for layer in range(adapter.num_layers()):
        mlp = adapter.mlp(layer)
        width = mlp.down.in_features
        per_channel = mlp.gate.in_features + mlp.up.in_features + mlp.down.out_features
        per_channel += (mlp.gate.bias is not None) + (mlp.up.bias is not None)
        total += (width - masks.keep_count(width, sparsity)) * per_channel
    return total


def layers_to_drop(block_influence: list[float], params: list[int], target: int) -> tuple[list[int], int]:
    """The k lowest-BI layers whose total parameters are nearest to `target` (k <= L - 1; ties: smaller k).
    Returns (sorted layer indices, parameters removed)."""
    order = sorted(range(len(block_influence)), key=lambda i: (block_influence[i], i))
    best_k, best_removed, removed = 0, 0, 0
    for k in range(1, len(order)):
        removed += params[order[k - 1]]
        if abs(removed - target) < abs(best_removed - target):
            best_k, best_removed = k, removed
    return sorted(order[:best_k]), best_removed


@METHODS.register("shortgpt")
class ShortGPT(Method):
    name = "shortgpt"
    table_rank = 8
    calib_source = True
    # sramshetty/ShortGPT short_hf.py: 1024-token windows of PG19 (not available offline: C4 instead)
    reference_calib = (128, 1024)
    Inputs = ShortGPTInputs

    def select(self, ctx: PruningContext, inputs: ShortGPTInputs) -> MaskSelection:
        model = ctx.loaded.model
        with ctx.timer("profile"):
            profile = calibration_profile(ctx, inputs.calibration, self.reference_calib)
        with ctx.timer("mask"):
            influence = profile.block_influence()
            params = layer_parameters(model)
            target = channel_removed_parameters(model, inputs.target.sparsity)
            drop, removed = layers_to_drop(influence, params, target)
        total_layers, widths = len(params), adapter_for(model).mlp_widths()
        stats = {
            "block_influence": influence,
            "dropped_layers": drop,
            "num_layers": total_layers,
            "kept_layers": total_layers - len(drop),
            "layer_parameters": params,
            "target_removed_parameters": target,
            "actual_removed_parameters": removed,
            "actual_sparsity": sum(widths[i] for i in drop) / sum(widths),  # MLP channels removed with their layers
            "calib_tokens": profile.n_tokens,
        }
        keep = torch.ones(total_layers, dtype=torch.bool)
        keep[drop] = False
        return MaskSelection(keep={"layers": [keep]}, stats=stats)
