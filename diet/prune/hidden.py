"""Physical removal of hidden (residual-stream) dimensions: one global mask for the whole model.

A hidden mask is one 1-D bool tensor of length hidden_size, True = keep. Removing dimension d removes
column d of the input embedding (and of the LM head, tied or not), entry d of every hidden-size norm
(Gemma: input/post-attention/pre-feedforward/post-feedforward norms of each block and the final norm;
Llama: input/post-attention norms and the final norm), input column d of q/k/v_proj and gate/up_proj,
and output row d of o_proj and down_proj. Gemma-3's q_norm / k_norm act on head_dim, not on the
residual stream, and are left alone. `config.hidden_size` becomes the new width (so the checkpoint
saves and reloads), `config.head_dim` is pinned first where it was derived from hidden_size.

Embedding scale: Gemma multiplies the embeddings by sqrt(hidden_size), computed by transformers from
`config.hidden_size` when the model is built (a non-persistent buffer, never saved). Pruning keeps the
ORIGINAL value: the embedding module (and its buffer) is kept, only its weight is sliced, and
`diet.export.checkpoint.save_pruned` writes the value into the spec, from which `load_pruned` restores it after
the pruned config has built the model with sqrt(new width). (A hidden-pruned Gemma checkpoint loaded
with plain `from_pretrained` would get the wrong scale: load it with `load_pruned`.)

Not equivalent to masking: RMSNorm divides by sqrt(mean over the hidden dimensions of x^2 + eps).
Zeroing dimensions keeps the mean over all H dims (S / H, the zeros included), slicing them away
averages over the H' kept dims (S / H'), so every normalised activation of the sliced model is
sqrt(H' / H) times the masked one (up to eps), at every norm of every layer, and the two models
differ: no equivalence with a masked model is claimed or tested (only shapes, that the pruned model
runs, the unchanged embedding scale and an exact save/load round trip).
"""

from __future__ import annotations

import torch
from torch import nn

from diet.errors import DietConfigError
from diet.models.adapters import adapter_for
from diet.prune.modules import module_names, replace_module, slice_linear


def check_hidden_mask(model: nn.Module, keep: torch.Tensor) -> torch.Tensor:
    width = adapter_for(model).hidden_width()
    mask = torch.as_tensor(keep).detach().to("cpu")
    if mask.dtype != torch.bool or mask.dim() != 1 or mask.numel() != width:
        raise DietConfigError(
            f"hidden mask must be a 1-D bool tensor of length {width} (the hidden size, True = keep), "
            f"got dtype {mask.dtype}, shape {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        raise DietConfigError("hidden mask keeps no dimension: keep at least 1")
    return mask


def _slice_parameter(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> nn.Parameter:
    old = getattr(module, name)
    new = nn.Parameter(old.detach().index_select(dim, index.to(old.device)).clone(), requires_grad=old.requires_grad)
    setattr(module, name, new)
    return new


def prune_hidden(model: nn.Module, keep: torch.Tensor) -> nn.Module:
    """Physically remove the hidden dimensions `keep` marks False, everywhere, in place; returns `model`."""
    mask = check_hidden_mask(model, keep)
    adapter = adapter_for(model)
    config = model.config
    if getattr(config, "head_dim", None) is None:
        config.head_dim = adapter.head_dim()  # it would otherwise be re-derived from the new hidden_size
    index = mask.nonzero().squeeze(1)
    width = int(index.numel())
    names = module_names(model)
    norms = adapter.hidden_norms()
    with torch.no_grad():
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        tied = head is not None and head.weight is embed.weight
        new_weight = _slice_parameter(embed, "weight", index, dim=1)
        embed.embedding_dim = width
        if tied:
            head.weight = new_weight
            head.in_features = width
        elif head is not None:
            replace_module(model, names, head, slice_linear(head, index, dim=1))
        for norm in norms:
            _slice_parameter(norm, "weight", index, dim=0)
            if getattr(norm, "bias", None) is not None:
                _slice_parameter(norm, "bias", index, dim=0)
        for layer_index, layer in enumerate(adapter.layers()):
            attn, mlp = adapter.attention(layer_index), adapter.mlp(layer_index)
            for linear in (attn.q, attn.k, attn.v, mlp.gate, mlp.up):
                replace_module(model, names, linear, slice_linear(linear, index, dim=1))
            for linear in (attn.o, mlp.down):
                replace_module(model, names, linear, slice_linear(linear, index, dim=0))
            for module in (layer, layer.mlp):
                if isinstance(getattr(module, "hidden_size", None), int):
                    module.hidden_size = width
    config.hidden_size = width
    return model
