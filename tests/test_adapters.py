"""One contract suite run against every registered model adapter (diet.models.adapters), each on its
tiny random model (diet.models.tiny): a new family is covered once it registers both."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conftest import left_padded_batch, logits, logits_bound
from diet.dims.choice import dimensions, single_dims
from diet.dims.accounting import dim_units
from diet.models.adapters import ADAPTERS, adapter_for, parameter_counts
from diet.models.tiny import TINY_ARCHITECTURES

FAMILY_OF_TINY = {"gemma2": "gemma2", "gemma3": "gemma3_text", "llama": "llama"}


def test_every_adapter_has_a_tiny_model():
    assert sorted(FAMILY_OF_TINY) == TINY_ARCHITECTURES.names()
    assert sorted(FAMILY_OF_TINY.values()) == ADAPTERS.names()


@pytest.fixture(params=sorted(FAMILY_OF_TINY))
def tiny(request):
    model = TINY_ARCHITECTURES.get(request.param)(num_hidden_layers=3)
    assert model.config.model_type == FAMILY_OF_TINY[request.param]
    return model


def discovered_norms(model: nn.Module) -> list[nn.Module]:
    """The residual-stream norms found by shape: direct children of a decoder layer (outside self_attn and
    mlp) with a 1-D weight of the hidden size, then the final norm."""
    adapter = adapter_for(model)
    width = adapter.hidden_width()
    out = []
    for layer in adapter.layers():
        for name, child in layer.named_children():
            weight = getattr(child, "weight", None)
            if name not in ("self_attn", "mlp") and not isinstance(child, nn.Linear) and \
                    isinstance(weight, nn.Parameter) and weight.dim() == 1 and weight.numel() == width:
                out.append(child)
    return out + [adapter.backbone().norm]


def test_the_adapter_names_every_residual_norm(tiny):
    named = adapter_for(tiny).hidden_norms()
    assert [id(n) for n in named] == [id(n) for n in discovered_norms(tiny)]


def test_widths_heads_and_layers_agree_with_the_config(tiny):
    adapter, config = adapter_for(tiny), tiny.config
    assert adapter.num_layers() == config.num_hidden_layers == len(adapter.layers())
    assert adapter.mlp_widths() == [config.intermediate_size] * config.num_hidden_layers
    assert adapter.head_counts() == [config.num_attention_heads] * config.num_hidden_layers
    assert adapter.hidden_width() == config.hidden_size
    assert adapter.kv_head_counts() == [config.num_key_value_heads] * config.num_hidden_layers
    for layer in range(adapter.num_layers()):
        mlp, attn = adapter.mlp(layer), adapter.attention(layer)
        assert adapter.mlp_kind == "gated"
        assert mlp.gate.out_features == mlp.up.out_features == mlp.down.in_features == config.intermediate_size
        assert attn.q.out_features == attn.o.in_features == config.num_attention_heads * adapter.head_dim()
        assert attn.k.out_features == attn.v.out_features == config.num_key_value_heads * adapter.head_dim()
    assert dim_units(tiny) == {"mlp": 3 * config.intermediate_size, "heads": 3 * config.num_attention_heads,
                               "kv_groups": 3 * config.num_key_value_heads, "hidden": config.hidden_size, "layers": 3}


def test_the_embedding_scale_is_what_the_forward_multiplies_by(tiny):
    adapter = adapter_for(tiny)
    ids = torch.tensor([[5, 9, 17]])
    embedded = tiny.get_input_embeddings()(ids)
    raw = tiny.get_input_embeddings().weight[ids]
    scale = adapter.embedding_scale()
    expected = 1.0 if scale is None else scale
    # Gemma multiplies in the weights' dtype: one rounding of the product
    assert torch.allclose(embedded, raw * expected, rtol=torch.finfo(raw.dtype).eps, atol=0)
    if adapter.family.startswith("gemma"):
        assert scale == pytest.approx(math.sqrt(tiny.config.hidden_size))


def test_embedding_parameters_count_a_tied_head_once(tiny):
    counts = parameter_counts(tiny)
    embed = tiny.get_input_embeddings().weight.numel()
    tied = tiny.get_output_embeddings().weight.data_ptr() == tiny.get_input_embeddings().weight.data_ptr()
    assert counts["embedding"] == embed * (1 if tied else 2)
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]


@pytest.mark.parametrize("name", single_dims())
def test_every_dimension_prunes_every_family_to_the_counted_parameters(tiny, name):
    """Each dimension's pruner removes exactly the parameters its unit costs predict, and the model runs."""
    from diet.dims.accounting import removed_parameters

    [dimension] = [d for d in dimensions() if d.name == name]
    layout = dimension.layout(tiny)
    scores = layout.split([torch.arange(w, dtype=torch.float64).flip(0) for w in dimension.widths(tiny)])
    keep = layout.join(dimension.select(scores, 0.5, "layer", 0.0))
    pruned = copy.deepcopy(tiny)
    before = parameter_counts(pruned)["non_embedding"]
    dimension.prune(pruned, keep)
    assert before - parameter_counts(pruned)["non_embedding"] == removed_parameters(tiny, name, 0.5)
    assert dimension.units(pruned) == sum(int(m.sum()) for m in keep)
    out = logits(pruned, left_padded_batch())
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mlp", "kv_groups", "heads"])
def test_zeroing_is_the_reference_of_slicing_on_every_family(tiny, name):
    """Slicing units away equals zeroing their weights (MLP channels, KV groups and heads; hidden dims change the
    norms' means and are not equivalent, diet.prune.hidden)."""
    [dimension] = [d for d in dimensions() if d.name == name]
    layout = dimension.layout(tiny)
    generator = torch.Generator().manual_seed(0)
    scores = layout.split([torch.rand(w, generator=generator, dtype=torch.float64) for w in dimension.widths(tiny)])
    keep = layout.join(dimension.select(scores, 0.5, "layer", 0.0))
    sliced, zeroed = copy.deepcopy(tiny), copy.deepcopy(tiny)
    dimension.prune(sliced, keep)
    dimension.zero(zeroed, keep)
    batch = left_padded_batch()
    a, b = logits(sliced, batch), logits(zeroed, batch)
    assert (a - b).abs().max() <= logits_bound(tiny, b)  # a shorter sum is only rounded differently
