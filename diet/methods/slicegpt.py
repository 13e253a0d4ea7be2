"""SliceGPT (Ashkboos et al., ICLR 2024), as `experiments/run_slicegpt.py` runs it.

Reference: microsoft/TransformerCompression @6b12cde, `rotate.py::rotate_and_slice_sequential`,
`layernorm_fusion.py::{replace_layers, fuse_modules}`, `rotate.py::pca_calc`, `ConstSlicingScheduler`:

- norms folded into the following linears, the head untied, each embedding row's mean subtracted
  (`method.embedding_mean=subtract`, the reference's step for every family; it is an exact invariance only
  for LayerNorm models: on RMSNorm models it changes the model, measured in tests/test_slicegpt.py);
- the new width d = int((1 - sparsity) * D) rounded down to a multiple of `method.round_interval` (8);
- per block, in order, on the calibration signals of the model as sliced so far: PCA of the block input
  (embeddings for block 0), of the input of the MLP's norm, of the block output (float64, padding masked,
  damping 1% of the mean diagonal, eigenvectors by decreasing eigenvalue); each rotation folded into the
  weights that write and read that residual point, the shortcut matrices between consecutive bases, every
  residual point sliced to d except the last block's output (the head keeps the full width: `do_slice_head`
  False), the head rotated;
- `method.final_orientation`: `random` (the reference's default: a random orthogonal rotation of the kept d
  coordinates after each PCA) or `pca`;
- calibration: 128 windows of 2048 tokens of WikiText-2 train in the reference (`calib.source`: what is used
  is recorded; `wikitext2_test` and `c4` are in the data folder).

Named deviations: the random rotations come from a torch generator seeded by the calibration seed (the
reference draws from numpy's global state); RMSN computes in float32 for every dtype (the reference upcasts
float16 only; its eps is 1e-5 for every model, here each norm keeps its own eps: equal on SmolLM2);
each layer is called with its own attention mask and rotary tables (diet.calib.layer_calls; the reference
reuses layer 0's, which differ on Gemma's sliding-window layers); `calib.exclude_bos` leaves position 0 out of
every PCA. Gemma's post-branch norms have no exact rotation in the reference's procedure: they are kept whole
(diet.prune.rotation.BranchNorm: a D x d matrix per branch, counted in the parameters; exact at zero slicing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from diet.calib.layer_calls import Batch, batches_of, call_layer, capture_input, layer_input
from diet.checks import one_of, positive
from diet.errors import DietConfigError
from diet.methods.base import METHODS, MaskSelection, Method, PruningContext
from diet.methods.calibrated import calibration_sequences
from diet.methods.inputs import Calibration, Target
from diet.models.adapters import adapter_for, parameter_counts
from diet.prune import rotation

ORIENTATIONS = ("random", "pca")
EMBEDDING_MEAN = ("subtract", "keep")


def sliced_width(hidden: int, sparsity: float, round_interval: int) -> int:
    """run_slicegpt.py: int((1 - sparsity) * hidden), rounded down to a multiple of round_interval."""
    width = int((1 - sparsity) * hidden)
    return width - width % round_interval


@dataclass(frozen=True)
class SliceGPTOptions:
    final_orientation: str = field(default="random", metadata=one_of(lambda: ORIENTATIONS))
    round_interval: int = field(default=8, metadata=positive())
    embedding_mean: str = field(default="subtract", metadata=one_of(lambda: EMBEDDING_MEAN))


@dataclass(frozen=True)
class SliceGPTInputs:
    target: Target
    calibration: Calibration
    options: SliceGPTOptions


def _pca_masks(batches: list[Batch], exclude_first: bool) -> list[torch.Tensor | None]:
    masks = []
    for batch in batches:
        mask = batch.attention_mask.clone()
        if exclude_first:
            mask[:, 0] = 0
        masks.append(mask if batch.padded or exclude_first else None)
    return masks


def _orient(q: torch.Tensor, width: int, orientation: str, generator: torch.Generator) -> torch.Tensor:
    if orientation == "random":
        return q @ rotation.random_orthogonal_upper_left(q.shape[0], width, generator).to(q.device)
    return q


@torch.no_grad()
def rotate_and_slice(model: torch.nn.Module, batches: list[Batch], width: int, options: SliceGPTOptions,
                     seed: int, exclude_first: bool = False,
                     branch_basis: Callable[[torch.nn.Linear, torch.Tensor], None] | None = None) -> dict[str, object]:
    """`fold_norms` then `rotate_and_slice_sequential` on `model`, in place, at constant width `width`; returns
    the PCA eigenvalue spectra kept for the record (the fraction of each residual point's energy kept).
    `branch_basis(linear, q)`: told each branch output and the basis it is rotated into (an analysis hook:
    experiments.slicegpt_invariance builds its naive port from it)."""
    adapter = adapter_for(model)
    rotation.fold_norms(model, subtract_embedding_mean=options.embedding_mean == "subtract")
    hidden = int(model.config.hidden_size)
    dtype = model.get_input_embeddings().weight.dtype
    generator = torch.Generator().manual_seed(int(seed))
    masks = _pca_masks(batches, exclude_first)
    kept_energy: list[float] = []

    def rotate_branch(linear: torch.nn.Linear, q: torch.Tensor, kept: int) -> None:
        if branch_basis is not None:
            branch_basis(linear, q)
        rotation.rotate_outputs(linear, q, kept)

    def basis(signals: list[torch.Tensor], kept: int) -> torch.Tensor:
        values, q = rotation.pca_basis(signals, masks)
        kept_energy.append(float(values[:kept].sum() / values.sum()))
        return _orient(q, kept, options.final_orientation, generator)

    inputs = [layer_input(model, batch).cpu() for batch in batches]
    q = basis(inputs, width)
    rotation.rotate_embedding(model.get_input_embeddings(), q, width)
    layers = adapter.layers()
    for index, layer in enumerate(tqdm(layers, desc="slicegpt: rotate and slice", unit="layer")):
        d_out = hidden if index == len(layers) - 1 else width
        rotation.set_shortcut(layer, "attn_shortcut_Q", q.T[:width], dtype)
        rotation.rotate_inputs(rotation.attention_inputs(adapter, index), q, width)
        inputs = [(x.double() @ q.cpu())[..., :width].to(dtype) for x in inputs]

        seen, handle = capture_input(getattr(layer, adapter.reading_norms[1]))
        try:
            for batch, x in zip(batches, inputs):
                call_layer(model, index, batch, x)
        finally:
            handle.remove()
        q = basis([s.cpu() for s in seen], width)
        del seen
        rotation.set_shortcut(layer, "attn_shortcut_Q", layer.attn_shortcut_Q.double() @ q[:, :width].to(
            layer.attn_shortcut_Q.device), dtype)
        rotate_branch(rotation.branch_output(adapter, index, rotation.ATTENTION), q, width)
        rotation.set_shortcut(layer, "mlp_shortcut_Q", q.T[:width], dtype)
        rotation.rotate_inputs(rotation.mlp_inputs(adapter, index), q, width)

        # the block output in the original basis (the MLP output not rotated yet): the next block's input and PCA
        inputs = [call_layer(model, index, batch, x).cpu() for batch, x in zip(batches, inputs)]
        q = basis(inputs, d_out)
        rotation.set_shortcut(layer, "mlp_shortcut_Q", (layer.mlp_shortcut_Q.double() @ q.to(
            layer.mlp_shortcut_Q.device))[:, :d_out], dtype)
        rotate_branch(rotation.branch_output(adapter, index, rotation.MLP), q, d_out)
    rotation.rotate_inputs([model.get_output_embeddings()], q, hidden)
    return {"width": width, "hidden_size": hidden, "kept_energy": kept_energy}


@METHODS.register("slicegpt")
class SliceGPT(Method):
    name = "slicegpt"
    table_rank = 6
    calib_source = True
    reference_calib = (128, 2048)  # --cal-nsamples 128 --cal-max-seqlen 2048 (WikiText-2 train)
    dims = ("hidden",)
    compared_at = "non_embedding"  # 0.425 slices Gemma-3 270M to 368 of 640 dims: 13.95% against DIET's 14.12%
    Options = SliceGPTOptions
    Inputs = SliceGPTInputs
    params_target_refusal = ("its shortcut matrices and untied head are not in the parameter solver (its sparsity "
                             "is the fraction of the hidden width sliced, as the reference's --sparsity)")

    def select(self, ctx: PruningContext, inputs: SliceGPTInputs) -> MaskSelection:
        model = ctx.loaded.model
        hidden = int(model.config.hidden_size)
        width = sliced_width(hidden, inputs.target.sparsity, inputs.options.round_interval)
        if width < 1:
            raise DietConfigError(f"sparsity={inputs.target.sparsity} leaves no hidden coordinate of {hidden} "
                                  f"(round_interval {inputs.options.round_interval})")
        pad_id = ctx.loaded.tokenizer.pad_token_id or 0
        before = parameter_counts(model)
        with ctx.timer("profile"):
            sequences = calibration_sequences(ctx, inputs.calibration, self.reference_calib)
        with ctx.timer("rotate"):
            facts = rotate_and_slice(model, batches_of(sequences, ctx.batch_size, pad_id), width, inputs.options,
                                     inputs.calibration.seed, inputs.calibration.exclude_bos)
        after = parameter_counts(model)
        removed = {key: before[key] - after[key] for key in ("total", "non_embedding")}
        facts.update(calib_tokens=sum(len(s) for s in sequences))
        return MaskSelection(rewritten={"hidden": removed}, stats=facts)
