"""One decoder layer called on hidden states the caller holds, with the arguments the model itself gives it.

A layer-by-layer method (SliceGPT's `rotate_and_slice_sequential`) keeps every calibration batch's input to the
current layer and runs that layer alone. The reference catches layer 0's arguments once and reuses them for
every layer; that is wrong where layers differ in their arguments (Gemma's sliding-window and global layers get
different masks and rotary tables). Here each call runs the model's own forward up to layer l with layers < l
stubbed (they return their input: no computation), so layer l receives exactly its own mask, positions and rotary
embeddings, then runs on the caller's hidden states, and the pass stops there.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from diet.calib.layer_stubs import passthrough, replaced_forwards
from diet.calib.profiler import length_sorted_batches, pad_batch
from diet.models.adapters import adapter_for


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor

    @property
    def padded(self) -> bool:
        return bool((self.attention_mask == 0).any())


def batches_of(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches, longest first (diet.calib.profiler's order)."""
    return [Batch(*pad_batch([sequences[i] for i in index], pad_id))
            for index in length_sorted_batches(sequences, batch_size)]


class _Stop(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


def _stubbed(layers: Sequence[nn.Module], target: int, hidden: torch.Tensor | None) -> AbstractContextManager[None]:
    """Layers < target return their input; layer `target` runs on `hidden` (None: returns its input as given)."""

    def run(hidden_states, *args, **kwargs):
        if hidden is None:
            raise _Stop(hidden_states)
        raise _Stop(type(layers[target]).forward(layers[target], hidden, *args, **kwargs))

    return replaced_forwards(layers, {index: run if index == target else passthrough() for index in range(target + 1)})


def _forward(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    try:
        adapter_for(model).backbone()(input_ids=batch.input_ids.to(device),
                                      attention_mask=batch.attention_mask.to(device),
                                      position_ids=batch.position_ids.to(device), use_cache=False)
    except _Stop as stop:
        return stop.value
    raise RuntimeError("the model's forward never reached the stubbed layer")


@torch.no_grad()
def layer_input(model: nn.Module, batch: Batch) -> torch.Tensor:
    """What layer 0 receives for `batch` (the scaled embeddings)."""
    device = next(model.parameters()).device
    with _stubbed(adapter_for(model).layers(), 0, None):
        return _forward(model, batch, device)


@torch.no_grad()
def call_layer(model: nn.Module, layer: int, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    """Layer `layer`'s output on `hidden` with the arguments the model gives it for `batch`."""
    device = next(model.parameters()).device
    with _stubbed(adapter_for(model).layers(), layer, hidden.to(device)):
        return _forward(model, batch, device)


def capture_input(module: nn.Module) -> tuple[list[torch.Tensor], Any]:
    """Collect what `module` receives on each call (a forward pre-hook); returns (the list, the handle)."""
    seen: list[torch.Tensor] = []

    def hook(_module, args):
        seen.append(args[0].detach())

    return seen, module.register_forward_pre_hook(hook)
