"""Whole decoder layers: dropped by ShortGPT's own selection (one entry, True = keep the layer)."""

from __future__ import annotations

from torch import Tensor, nn

from diet.dims.base import register_dimension, Dimension
from diet.models.adapters import adapter_for
from diet.prune.layers import drop_decoder_layers


@register_dimension
class DecoderLayers(Dimension):
    name = "layers"
    order = 4
    selectable = False

    def widths(self, model: nn.Module) -> list[int]:
        return [adapter_for(model).num_layers()]

    def prune(self, model: nn.Module, keep: list[Tensor]) -> None:
        drop_decoder_layers(model, dropped(keep))


def dropped(keep: list[Tensor]) -> list[int]:
    """The indices of the layers a layers-mask drops."""
    return [index for index, kept in enumerate(keep[0].tolist()) if not kept]
