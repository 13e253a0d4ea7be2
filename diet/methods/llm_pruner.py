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

Named deviations: the salience is computed in float64 from the model's weights and gradients (the reference, in
the model's dtype: float16 on a GPU); our windows start with the BOS token when the model's tokenizer adds one
(Gemma is evaluated with it), the reference's are cut from anywhere in a document; KV-group (attention) pruning
of the reference's block-wise mode is not offered: on every model here at a ratio below 1/4 it removes no group
(int(width * (1 - ratio)) keeps every KV group of Gemma-3 270M's 1, SmolLM2-135M's 3 and Gemma-2 2B's 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from diet.calib.gradients import loss_gradients, per_sample_squares
from diet.checks import in_range, one_of
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


def channel_importance(weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       accs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, taylor: str) -> torch.Tensor:
    """One layer's MLP-channel importance (float64): gate and up rows (out channels) and down columns (in
    channels) of each channel, their saliences reduced per channel and summed (group_reduction "sum")."""
    salience = SALIENCE.get(taylor)
    total = None
    for index, (w, g) in enumerate(zip(weights, grads)):
        acc = None if accs is None else accs[index]
        dim = 0 if index == 2 else 1  # down_proj: channel j is column j
        part = reduce_salience(salience(w.double(), g.double(), acc), taylor, dim)
        total = part if total is None else total + part
    return total


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
    Options = LLMPrunerOptions
    Inputs = LLMPrunerInputs
    params_target_refusal = ("its ratio applies inside its layer range (method.skip_first / method.skip_last), "
                             "which the parameter solver does not model")

    def select(self, ctx: PruningContext, inputs: LLMPrunerInputs) -> MaskSelection:
        model, options = ctx.loaded.model, inputs.options
        adapter = adapter_for(model)
        layers = pruned_layers(adapter.num_layers(), options.skip_first, options.skip_last)
        projections = {layer: adapter.mlp(layer) for layer in layers}
        params = [linear.weight for mlp in projections.values() for linear in (mlp.gate, mlp.up, mlp.down)]
        pad_id = ctx.loaded.tokenizer.pad_token_id or 0
        with ctx.timer("profile"):
            sequences = calibration_sequences(ctx, inputs.calibration, self.reference_calib)
            accs = per_sample_squares(model, params, sequences, pad_id) if options.taylor in SECOND_ORDER else None
            grads, loss = loss_gradients(model, params, sequences, ctx.batch_size, pad_id)
        keep = []
        with ctx.timer("mask"):
            for layer, width in enumerate(adapter.mlp_widths()):
                mask = torch.ones(width, dtype=torch.bool)
                if layer in projections:
                    at = 3 * layers.index(layer)
                    importance = channel_importance(tuple(params[at:at + 3]), tuple(grads[at:at + 3]),
                                                    None if accs is None else tuple(accs[at:at + 3]), options.taylor)
                    removed = torch.argsort(importance)[:width - kept_channels(width, inputs.target.sparsity)]
                    mask[removed] = False
                keep.append(mask)
        stats = selection_stats({}, {"mlp": keep})
        stats.update(pruned_layers=[layers.start, layers.stop], calib_loss=loss,
                     calib_tokens=sum(len(s) for s in sequences))
        return MaskSelection(keep={"mlp": keep}, stats=stats)
