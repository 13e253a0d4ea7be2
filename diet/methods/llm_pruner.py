"""LLM-Pruner (Ma et al., NeurIPS 2023), block-wise, as the reference's own scripts run it.

Reference: horseee/LLM-Pruner, `llama3.py` / `hf_prune.py` with `--block_wise --pruner_type taylor` and
`LLMPruner/pruner/hf_llama_pruner.py::TaylorImportance` (group_reduction "sum"):

- A coupled group per MLP channel j of a pruned layer: row j of gate_proj and up_proj and column j of down_proj
  (the dependency group of root `mlp.gate_proj`). Its importance sums, over the group's weights, the salience of
  `taylor`: `param_first` |W * dL/dW| (the scripts' default), `vectorize` |sum W * dL/dW| per weight row or
  column, `param_second` |W * acc_grad * W|, `param_mix` |W * dL/dW - 0.5 * W * acc_grad * W|, where acc_grad is
  the sum over the calibration sequences of their own gradient squared / n (`diet.calib.gradients`).
- Gradients of the language-model loss from one backward pass over the calibration windows: 10 windows of 64
  tokens in the reference (`get_examples('bookcorpus', tokenizer, 10, seq_len=64)`); here the generic text of
  `calib.source` (BookCorpus is not in the data folder: `calib.source=c4` is the documented protocol), or the
  task samples.
- Uniform per layer over a layer range: each pruned layer keeps int(width * (1 - sparsity)) channels (MetaPruner's
  `prune_local`: n_pruned = width - int(width * (1 - ratio))), the lowest-importance ones removed. The reference
  prunes LLaMA-7B's layers 4..29 and keeps the first 4 and last 2 of 32 unpruned; `skip_first` / `skip_last` say
  the same as fractions of the depth (1/8, 1/16), rounded half up, so `sparsity` is the ratio inside the range
  and the record's parameter fractions say what it removed of the whole model.

- `dims=mlp+kv_groups` adds the block-wise mode's attention groups (llama3.py: roots `self_attn.k_proj` of the
  same layer range, consecutive groups of head_dim, the same ratio): KV head g of a pruned layer with the query
  heads of its group (k/v rows, q rows, o columns: diet.prune.attention.prune_kv_groups). MetaPruner removes
  (C - int(C * (1 - ratio))) // head_dim groups of C = n_kv * head_dim k_proj channels, so no group goes below a
  ratio of 1/n_kv (none on Gemma-3 270M's single KV head; SmolLM2-135M's 3 from 1/3 on). The score is the
  reference's, not the GQA grouping it removes by: TaylorImportance aligns q_proj's and o_proj's H * head_dim
  channels to k_proj's n_kv * head_dim by `imp.view(-1, n_kv * head_dim).sum(0)`, so group g is scored with its
  k/v rows and the query heads h = g (mod n_kv), while MetaPruner removes the heads h // (H / n_kv) = g
  (recorded from the reference's own code: tests/fixtures/llm_pruner_reference.json, `kv_groups`).

Named deviations: the salience is computed in float64 from the model's weights and gradients (the reference, in
the model's dtype: float16 on a GPU); our windows start with the BOS token when the model's tokenizer adds one
(Gemma is evaluated with it), the reference's are cut from anywhere in a document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from diet.calib.gradients import loss_gradients, per_sample_squares
from diet.checks import in_range, one_of
from diet.dims.choice import dim_parts
from diet.errors import DietConfigError
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.by_dimension import selection_stats
from diet.methods.calibrated import calibration_sequences
from diet.methods.inputs import Calibration, Target
from diet.models.adapters import adapter_for
from diet.registry import Registry

# taylor variant -> salience of one weight matrix from (W, dL/dW, acc_grad or None), all float64
SALIENCE: Registry[Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = Registry("taylor")
SALIENCE.register("param_first")(lambda w, g, acc: w * g)
SALIENCE.register("vectorize")(lambda w, g, acc: w * g)
SALIENCE.register("param_second")(lambda w, g, acc: w * acc * w)
SALIENCE.register("param_mix")(lambda w, g, acc: w * g - 0.5 * w * acc * w)
SECOND_ORDER = ("param_second", "param_mix")  # need acc_grad


def reduce_salience(salience: torch.Tensor, taylor: str, dim: int) -> torch.Tensor:
    """TaylorImportance's per-channel norm: `vectorize` sums then takes |.|, the param_* variants the reverse."""
    return salience.sum(dim).abs() if taylor == "vectorize" else salience.abs().sum(dim)


def pruned_layers(num_layers: int, skip_first: float, skip_last: float) -> range:
    """The decoder layers pruned: all but round-half-up(skip_first * L) at the bottom and skip_last * L at the top."""
    first = math.floor(skip_first * num_layers + 0.5)
    last = num_layers - math.floor(skip_last * num_layers + 0.5)
    return range(first, max(first, last))


def kept_channels(width: int, ratio: float) -> int:
    """MetaPruner.prune_local's count: int(width * (1 - ratio)) channels stay."""
    return int(width * (1 - ratio))


def kept_kv_groups(kv: int, head_dim: int, ratio: float) -> int:
    """MetaPruner.prune_local on k_proj's kv * head_dim channels in consecutive groups of head_dim: n_pruned =
    C - int(C * (1 - ratio)) channels, whole groups n_pruned // head_dim removed."""
    channels = kv * head_dim
    return kv - (channels - int(channels * (1 - ratio))) // head_dim


def weight_importance(weight: torch.Tensor, grad: torch.Tensor, acc: torch.Tensor | None, taylor: str,
                      dim: int) -> torch.Tensor:
    """One weight matrix's salience reduced per channel (float64): dim=1 per output channel (row), dim=0 per input
    channel (column), as TaylorImportance does for a linear layer's out / in channels."""
    return reduce_salience(SALIENCE.get(taylor)(weight.double(), grad.double(), acc), taylor, dim)


def channel_importance(weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       accs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, taylor: str) -> torch.Tensor:
    """One layer's MLP-channel importance (float64): gate and up rows (out channels) and down columns (in
    channels) of each channel, their saliences reduced per channel and summed (group_reduction "sum")."""
    return sum(weight_importance(w, g, None if accs is None else accs[index], taylor, 0 if index == 2 else 1)
               for index, (w, g) in enumerate(zip(weights, grads)))


def kv_group_importance(weights: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...],
                        accs: tuple[torch.Tensor, ...] | None, taylor: str, kv: int, head_dim: int) -> torch.Tensor:
    """One layer's KV-group importance (float64, one per KV head) from (q, k, v, o) weights, as the reference's
    TaylorImportance computes it: per channel, k and v rows; q rows and o columns folded onto k's kv * head_dim
    channels by channel mod (kv * head_dim) (its alignment step); summed, then per group of head_dim channels."""
    per_channel = torch.zeros(kv * head_dim, dtype=torch.float64, device=weights[0].device)
    for index, (w, g) in enumerate(zip(weights, grads)):
        part = weight_importance(w, g, None if accs is None else accs[index], taylor, 0 if index == 3 else 1)
        per_channel += part.view(-1, kv * head_dim).sum(0)
    return per_channel.view(kv, head_dim).sum(1)


@dataclass(frozen=True)
class CoupledGroups:
    """One `dims` part's coupled groups in a pruned layer: the linears they span, how many units a layer has, the
    units' importance from (weights, grads, accs, taylor, adapter, layer) and how many MetaPruner keeps."""

    linears: Callable[[Any, int], tuple[torch.nn.Linear, ...]]
    widths: Callable[[Any], list[int]]
    importance: Callable[..., torch.Tensor]
    kept: Callable[[int, Any, float], int]


def _mlp_linears(adapter: Any, layer: int) -> tuple[torch.nn.Linear, ...]:
    mlp = adapter.mlp(layer)
    return mlp.gate, mlp.up, mlp.down


def _attention_linears(adapter: Any, layer: int) -> tuple[torch.nn.Linear, ...]:
    attention = adapter.attention(layer)
    return attention.q, attention.k, attention.v, attention.o


GROUPS: Registry[CoupledGroups] = Registry("LLM-Pruner group")
GROUPS.register("mlp")(CoupledGroups(  # root mlp.gate_proj
    linears=_mlp_linears,
    widths=lambda adapter: adapter.mlp_widths(),
    importance=lambda weights, grads, accs, taylor, adapter, layer: channel_importance(weights, grads, accs, taylor),
    kept=lambda width, adapter, ratio: kept_channels(width, ratio)))
GROUPS.register("kv_groups")(CoupledGroups(  # root self_attn.k_proj, consecutive groups of head_dim
    linears=_attention_linears,
    widths=lambda adapter: adapter.kv_head_counts(),
    importance=lambda weights, grads, accs, taylor, adapter, layer: kv_group_importance(
        weights, grads, accs, taylor, adapter.num_kv_heads(layer), adapter.head_dim()),
    kept=lambda width, adapter, ratio: kept_kv_groups(width, adapter.head_dim(), ratio)))


@dataclass(frozen=True)
class LLMPrunerOptions:
    taylor: str = field(default="param_first", metadata=one_of(SALIENCE.names))
    skip_first: float = field(default=0.125, metadata=in_range(0.0, 1.0, False, True))  # 4 of LLaMA-7B's 32
    skip_last: float = field(default=0.0625, metadata=in_range(0.0, 1.0, False, True))  # 2 of 32

    def __post_init__(self) -> None:
        if self.skip_first + self.skip_last >= 1.0:
            raise DietConfigError(f"method.skip_first={self.skip_first} + method.skip_last={self.skip_last} leave "
                                  f"no layer to prune: their sum must be below 1")


@dataclass(frozen=True)
class LLMPrunerInputs:
    target: Target
    calibration: Calibration
    options: LLMPrunerOptions


@METHODS.register("llm_pruner")
class LLMPruner(Method):
    name = "llm_pruner"
    table_rank = 5  # beside FLAP
    calib_source = True
    reference_calib = (10, 64)  # get_examples('bookcorpus', tokenizer, 10, seq_len=64)
    compared_at = "actual"      # 0.24 inside layers 2..16 of Gemma-3 270M removes DIET's 20% of the channels
    dims = ("mlp", "kv_groups", "mlp+kv_groups")
    Options = LLMPrunerOptions
    Inputs = LLMPrunerInputs
    params_target_refusal = ("its ratio applies inside its layer range (method.skip_first / method.skip_last), "
                             "which the parameter solver does not model")

    def select(self, ctx: PruningContext, inputs: LLMPrunerInputs) -> MaskSelection:
        model, options, parts = ctx.loaded.model, inputs.options, dim_parts(inputs.target.dims)
        adapter = adapter_for(model)
        layers = pruned_layers(adapter.num_layers(), options.skip_first, options.skip_last)
        linears = {part: {layer: GROUPS.get(part).linears(adapter, layer) for layer in layers} for part in parts}
        params = [linear.weight for by_layer in linears.values() for group in by_layer.values() for linear in group]
        pad_id = ctx.loaded.tokenizer.pad_token_id or 0
        with ctx.timer("profile"):
            sequences = calibration_sequences(ctx, inputs.calibration, self.reference_calib)
            accs = per_sample_squares(model, params, sequences, pad_id) if options.taylor in SECOND_ORDER else None
            grads, loss = loss_gradients(model, params, sequences, ctx.batch_size, pad_id)
        position = {id(param): index for index, param in enumerate(params)}
        keep: dict[str, list[torch.Tensor]] = {}
        with ctx.timer("mask"):
            for part in parts:
                rule, keep[part] = GROUPS.get(part), []
                for layer, width in enumerate(rule.widths(adapter)):
                    mask = torch.ones(width, dtype=torch.bool)
                    if layer in linears[part]:
                        at = [position[id(linear.weight)] for linear in linears[part][layer]]
                        importance = rule.importance(tuple(params[i] for i in at), tuple(grads[i] for i in at),
                                                     None if accs is None else tuple(accs[i] for i in at),
                                                     options.taylor, adapter, layer)
                        kept = rule.kept(width, adapter, inputs.target.sparsity)
                        if kept < 1:
                            raise DietConfigError(f"sparsity={inputs.target.sparsity} would remove every unit of "
                                                  f"dims part {part!r} in layer {layer}: keep at least one")
                        mask[torch.argsort(importance)[:width - kept]] = False
                    keep[part].append(mask)
        stats = selection_stats({}, keep)
        stats.update(pruned_layers=[layers.start, layers.stop], calib_loss=loss,
                     calib_tokens=sum(len(s) for s in sequences))
        return MaskSelection(keep=keep, stats=stats)
