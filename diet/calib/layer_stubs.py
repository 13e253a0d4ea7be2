"""Decoder layers whose forward is replaced for the length of a `with` block: the shared mechanism of the
layer-by-layer passes (diet.calib.sequential replays buffered inputs, diet.calib.layer_calls runs one layer on
held hidden states), which let the model's own forward hand each layer its masks, positions and rotary tables."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

from torch import nn


def passthrough(returns_tuple: bool = False) -> Callable[..., object]:
    """A layer forward that skips the computation and returns its input (as a 1-tuple where layers return tuples)."""

    def forward(hidden_states, *args, **kwargs):
        return (hidden_states,) if returns_tuple else hidden_states

    return forward


@contextmanager
def replaced_forwards(layers: Sequence[nn.Module], forwards: Mapping[int, Callable[..., object]]) -> Iterator[None]:
    """Layer i runs forwards[i] instead of its own forward inside the block (an instance attribute shadows the
    class's), restored on exit whatever happens."""
    try:
        for index, forward in forwards.items():
            layers[index].forward = forward
        yield
    finally:
        for index in forwards:
            layers[index].__dict__.pop("forward", None)
