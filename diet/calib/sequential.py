"""Layer-by-layer calibration: profile decoder layer l on the outputs of layers 0..l-1 as already pruned.

The reference pruners (FLAP's `prune_wanda_sp`, SparseGPT, Wanda) keep every calibration sequence's
input to the current layer in a buffer and run one layer at a time. Here the model's own forward is
used (so masks, positions and rotary embeddings stay the model's business), with two shortcuts that
make pass l cost two decoder layers instead of l + 1:

- layers 0..l-2 are stubbed out: l-2 returns the buffered input of layer l-1 (captured in pass l-1),
  the ones before it return their input untouched (whatever they return is overwritten);
- the pass stops after layer l (diet.calib.profiler's `layers=[l]`).
Layer l-1 runs for real, with whatever pruning its `after_layer` callback installed, so layer l sees
pruned inputs. Batches are formed identically in every pass (diet.calib.profiler.length_sorted_batches),
so buffer i belongs to batch i.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, Sequence

import torch
from torch import nn

from diet.models.adapters import adapter_for
from diet.calib.layer_stubs import passthrough, replaced_forwards
from diet.calib.profiler import ActivationProfile, profile_activations


class _LayerInputs:
    """Captures, batch by batch, the hidden states a decoder layer receives."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def hook(self, module, args, kwargs):
        self.batches.append((args[0] if args else kwargs["hidden_states"]).detach())


def _stubbed(layers: Sequence[nn.Module], upto: int, buffered: list[torch.Tensor] | None,
             returns_tuple: bool) -> AbstractContextManager[None]:
    """Layers [0, upto) skip their computation; layer upto-1 returns the buffered batches in order."""
    counter = {"batch": 0}

    def replay(hidden_states, *args, **kwargs):
        out = buffered[counter["batch"]]
        counter["batch"] += 1
        return (out,) if returns_tuple else out

    return replaced_forwards(layers, {index: replay if index == upto - 1 else passthrough(returns_tuple)
                                      for index in range(upto)})


@torch.no_grad()
def sequential_profiles(model: nn.Module, sequences: Sequence[Sequence[int]],
                        after_layer: Callable[[int, ActivationProfile], None],
                        batch_size: int = 8, pad_id: int = 0, desc: str = "sequential",
                        exclude_first: bool = False) -> int:
    """For l = 0..L-1: profile layer l (diet.calib.profiler, `layers=[l]`) with layers < l as pruned so far, then
    call `after_layer(l, profile)`, which decides layer l's pruning and installs it (e.g. as hooks) before
    layer l+1 is profiled. Returns the calibration tokens per pass."""
    layers = adapter_for(model).layers()
    probe: dict[str, bool] = {}

    def record_output_type(module, args, output) -> None:  # returns None: a hook's return value replaces the output
        probe.setdefault("tuple", isinstance(output, tuple))

    probe_handle = layers[0].register_forward_hook(record_output_type)
    buffered: list[torch.Tensor] | None = None  # inputs of layer l-1, captured in pass l-1
    tokens = 0
    for layer in range(len(layers)):
        capture = _LayerInputs()
        handle = layers[layer].register_forward_pre_hook(capture.hook, with_kwargs=True) if layer else None
        try:
            with _stubbed(layers, max(0, layer - 1), buffered, probe.get("tuple", False)):
                profile = profile_activations(model, sequences, batch_size, pad_id, layers=[layer],
                                              desc=f"{desc} layer {layer}", exclude_first=exclude_first)
        finally:
            if handle is not None:
                handle.remove()
            probe_handle.remove()  # the first pass told whether layers return tuples (removing twice is a no-op)
        buffered = capture.batches
        tokens = profile.n_tokens
        after_layer(layer, profile)
    return tokens
