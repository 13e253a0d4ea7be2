"""SliceGPT's model structure and its rotate/slice surgery (microsoft/TransformerCompression @6b12cde).

A rotated model carries the residual stream of each block in its own orthogonal basis, keeps only the leading
coordinates of it, and converts between bases on the residual adds:

- **Norms folded** (`layernorm_fusion.py::fuse_modules`): each norm's scale (Llama `w`, Gemma `1 + w`) is
  multiplied into the input columns of the linear layers that read the norm (q/k/v, gate/up, the LM head) and
  the norm becomes `RMSN`: x / sqrt(sum(x^2) / D + eps), weightless, over the ORIGINAL width D also once x is
  sliced (`modules.py::RMSN`: `mean_dim` is the model's hidden size). A weightless RMS norm commutes with an
  orthogonal rotation, which is what makes the rotations exact.
- **Shortcut matrices** (`CompressedLlamaDecoderLayer`): `attn_shortcut_Q` maps the residual from the
  block input basis to the basis after attention, `mlp_shortcut_Q` from there to the block output basis; a
  block computes h = x @ Qa + attn(norm(x)); out = h @ Qm + mlp(norm(h)).
- **An untied LM head**: the embedding is read in the first basis, the head in the last.

Gemma (2 and 3) normalises each branch's output before the residual add (post_attention_layernorm,
post_feedforward_layernorm); a scaled RMS norm does not commute with a rotation, so the reference's
procedure has no exact form there. The adaptation here (`BranchNorm`) keeps such a norm whole: the branch
output (o_proj / down_proj, not rotated) is normalised at full width by a weightless RMS norm and a linear map
`out` = diag(1 + w) rotated into the residual basis (and sliced with it) takes it into the stream, which is an
exact invariance at any rotation, at the cost of a D x d matrix per branch (counted in the parameters).

The record of the structure is `rotation_spec` (saved in pruning_spec.json), from which `rebuild_rotated` turns
a stock model of the original config into the same shapes before the weights load.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from diet.models.adapters import ModelAdapter, adapter_for
from diet.prune.modules import module_names, replace_module

SPEC_KEY = "rotation"


class RMSN(nn.Module):
    """A weightless RMS norm over `mean_dim` coordinates (the original hidden width), whatever the input's width:
    the reference's `RMSN`, in float32 as the models' own norms compute (the reference upcasts float16 only)."""

    def __init__(self, mean_dim: int, eps: float) -> None:
        super().__init__()
        self.mean_dim = int(mean_dim)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        variance = x.pow(2).sum(-1, keepdim=True) / self.mean_dim
        return (x * torch.rsqrt(variance + self.eps)).to(dtype)


class BranchNorm(nn.Module):
    """Gemma's post-branch norm kept exact in a rotated model: RMSN at the branch's full width, then `out`
    (a bias-free linear, initially diag(scale)) into the residual basis, rotated and sliced like an output."""

    def __init__(self, width: int, out_width: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSN(width, eps)
        self.out = nn.Linear(width, out_width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x))


def shortcut(residual: torch.Tensor, matrix: torch.Tensor | None) -> torch.Tensor:
    return residual if matrix is None else torch.matmul(residual, matrix)


class ShortcutResidual:
    """Mixed into a family's decoder layer class (`rotated_class`): its forward with shortcut matrices on the two
    residual adds; `rotation_norms` names the layer's pre-attention, pre-MLP and (Gemma) post-branch norms."""

    rotation_norms: tuple[str, str, str | None, str | None]
    attn_shortcut_Q: nn.Parameter | None
    mlp_shortcut_Q: nn.Parameter | None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args:
            raise TypeError("a rotated decoder layer takes its arguments after hidden_states by name")
        pre_attn, pre_mlp, post_attn, post_mlp = (getattr(self, n) if n else None for n in self.rotation_norms)
        branch, _ = self.self_attn(hidden_states=pre_attn(hidden_states), **kwargs)
        if post_attn is not None:
            branch = post_attn(branch)
        hidden = shortcut(hidden_states, self.attn_shortcut_Q) + branch
        branch = self.mlp(pre_mlp(hidden))
        if post_mlp is not None:
            branch = post_mlp(branch)
        return shortcut(hidden, self.mlp_shortcut_Q) + branch


_CLASSES: dict[type, type] = {}


def rotated_class(layer_class: type) -> type:
    """The decoder layer class with SliceGPT's shortcut forward (one per family, made once)."""
    if layer_class not in _CLASSES:
        _CLASSES[layer_class] = type(f"Rotated{layer_class.__name__}", (ShortcutResidual, layer_class), {})
    return _CLASSES[layer_class]


def is_rotated(model: nn.Module) -> bool:
    return any(isinstance(layer, ShortcutResidual) for layer in adapter_for(model).layers())


def norm_eps(norm: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        if isinstance(getattr(norm, name, None), float):
            return float(getattr(norm, name))
    raise TypeError(f"{type(norm).__name__} has no eps / variance_epsilon attribute")


def norm_scale(norm: nn.Module, adapter: ModelAdapter) -> torch.Tensor:
    """The per-coordinate factor a norm applies after normalising (float64): Llama w, Gemma 1 + w."""
    return norm.weight.detach().double() + adapter.norm_offset


def _set_weight(linear: nn.Linear, weight: torch.Tensor) -> None:
    linear.weight = nn.Parameter(weight.to(linear.weight.dtype).contiguous(), requires_grad=False)
    linear.out_features, linear.in_features = linear.weight.shape


def scale_inputs(linears: Iterable[nn.Linear], scale: torch.Tensor) -> None:
    """Fold a norm's scale into the input columns of the linears that read it (`fuse_ln_linear`, no bias)."""
    for linear in linears:
        _set_weight(linear, linear.weight.detach().double() * scale.to(linear.weight.device))


def rotate_inputs(linears: Iterable[nn.Linear], q: torch.Tensor | None, width: int) -> None:
    """W <- (W Q)[:width] columns (`rotate_attention_inputs` / `rotate_mlp_input` / `rotate_head` then slice);
    q None: slice only (a recorded rotation's shapes, rebuild_rotated)."""
    for linear in linears:
        weight = linear.weight.detach()
        _set_weight(linear, (weight if q is None else weight.double() @ q.to(weight.device))[:, :width])


def rotate_outputs(linear: nn.Linear, q: torch.Tensor | None, width: int) -> None:
    """W <- (Q^T W)[:width], bias likewise (`rotate_attention_output` / `rotate_mlp_output` then slice); q None:
    slice only."""
    def rotated(tensor: torch.Tensor) -> torch.Tensor:
        return (tensor if q is None else q.T.to(tensor.device) @ tensor.double())[:width]

    _set_weight(linear, rotated(linear.weight.detach()))
    if linear.bias is not None:
        linear.bias = nn.Parameter(rotated(linear.bias.detach()).to(linear.weight.dtype), requires_grad=False)


def rotate_embedding(embedding: nn.Embedding, q: torch.Tensor, width: int) -> None:
    weight = embedding.weight.detach().double() @ q.to(embedding.weight.device)
    embedding.weight = nn.Parameter(weight[:, :width].to(embedding.weight.dtype).contiguous(), requires_grad=False)
    embedding.embedding_dim = width


def attention_inputs(adapter: ModelAdapter, layer: int) -> list[nn.Linear]:
    a = adapter.attention(layer)
    return [a.q, a.k, a.v]


def mlp_inputs(adapter: ModelAdapter, layer: int) -> list[nn.Linear]:
    m = adapter.mlp(layer)
    return [m.gate, m.up]


ATTENTION, MLP = 0, 1  # the two branches of a decoder layer, in adapter.branch_norms' order


def branch_output(adapter: ModelAdapter, layer: int, branch: int) -> nn.Linear:
    """The linear whose rows write a branch (ATTENTION or MLP) into the residual: o_proj / down_proj, or the map of
    the BranchNorm that follows it."""
    norm = adapter.branch_norms[branch]
    module = getattr(adapter.layers()[layer], norm) if norm else None
    if isinstance(module, BranchNorm):
        return module.out
    return adapter.attention(layer).o if branch == ATTENTION else adapter.mlp(layer).down


def untie_head(model: nn.Module) -> None:
    """Give the LM head its own copy of the weights (`fuse_modules`: the head gets its own rotation)."""
    head = model.get_output_embeddings()
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    text_config = getattr(model.config, "get_text_config", None)
    if callable(text_config):
        text_config().tie_word_embeddings = False


def fold_norms(model: nn.Module, subtract_embedding_mean: bool) -> None:
    """`fuse_modules` + `replace_layers`: untie the head, (reference) subtract each embedding row's mean, fold
    every reading norm's scale into its readers, make every norm weightless (Gemma's post-branch norms:
    `BranchNorm`), and give each decoder layer the shortcut forward with no shortcut yet (identity)."""
    adapter = adapter_for(model)
    width = int(model.config.hidden_size)
    untie_head(model)
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        if subtract_embedding_mean:  # a LayerNorm model's step, applied to every family by the reference
            weight = embedding.weight.detach().double()
            embedding.weight.copy_((weight - weight.mean(dim=-1, keepdim=True)).to(embedding.weight.dtype))
        names = module_names(model)
        pre_attn, pre_mlp = adapter.reading_norms
        for index, layer in enumerate(adapter.layers()):
            for norm_name, readers in ((pre_attn, attention_inputs(adapter, index)),
                                       (pre_mlp, mlp_inputs(adapter, index))):
                norm = getattr(layer, norm_name)
                scale_inputs(readers, norm_scale(norm, adapter))
                replace_module(model, names, norm, RMSN(width, norm_eps(norm)))
            for norm_name in adapter.branch_norms:
                if norm_name:
                    norm = getattr(layer, norm_name)
                    branch = BranchNorm(width, width, norm_eps(norm)).to(norm.weight.dtype)
                    branch.out.weight.copy_(torch.diag(norm_scale(norm, adapter)).to(norm.weight.dtype))
                    branch.out.weight.requires_grad_(False)
                    replace_module(model, names, norm, branch)
            layer.__class__ = rotated_class(type(layer))
            layer.rotation_norms = (pre_attn, pre_mlp, *adapter.branch_norms)
            layer.attn_shortcut_Q = None
            layer.mlp_shortcut_Q = None
        final = adapter.backbone().norm
        scale_inputs([model.get_output_embeddings()], norm_scale(final, adapter))
        replace_module(model, names, final, RMSN(width, norm_eps(final)))


def set_shortcut(layer: nn.Module, name: str, matrix: torch.Tensor, dtype: torch.dtype) -> None:
    """A shortcut matrix in the model's dtype, on the device of the layer's weights (PCA runs on the host)."""
    device = next(layer.parameters()).device
    setattr(layer, name, nn.Parameter(matrix.to(device=device, dtype=dtype).contiguous(), requires_grad=False))


def rotation_spec(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint records of a rotated model's structure ({} for any other model): the original width,
    the embedding width, per layer the widths of its block input, after attention and output, each norm's eps."""
    if not is_rotated(model):
        return {}
    adapter = adapter_for(model)
    layers = []
    for index, layer in enumerate(adapter.layers()):
        attn_in = attention_inputs(adapter, index)[0].in_features
        layers.append({"input": attn_in, "attention": branch_output(adapter, index, ATTENTION).out_features,
                       "output": branch_output(adapter, index, MLP).out_features,
                       "eps": [norm_eps(_rmsn(getattr(layer, name))) if name else None
                               for name in layer.rotation_norms]})
    return {SPEC_KEY: {"hidden_size": int(model.config.hidden_size),
                       "embedding": adapter.hidden_width(), "layers": layers,
                       "final_eps": norm_eps(adapter.backbone().norm)}}


def _rmsn(module: nn.Module) -> RMSN:
    return module.norm if isinstance(module, BranchNorm) else module


def rebuild_rotated(model: nn.Module, spec: Mapping[str, Any]) -> None:
    """Turn a freshly built stock model into the recorded rotated shapes (weights are loaded next)."""
    recorded = spec.get(SPEC_KEY)
    if not recorded:
        return
    adapter = adapter_for(model)
    fold_norms(model, subtract_embedding_mean=False)
    embedding = model.get_input_embeddings()
    embedding.weight = nn.Parameter(embedding.weight.detach()[:, :int(recorded["embedding"])].clone(),
                                    requires_grad=False)
    embedding.embedding_dim = int(recorded["embedding"])
    dtype = embedding.weight.dtype
    for index, (layer, shapes) in enumerate(zip(adapter.layers(), recorded["layers"])):
        d_in, d_mid, d_out = int(shapes["input"]), int(shapes["attention"]), int(shapes["output"])
        rotate_inputs(attention_inputs(adapter, index), None, d_in)  # shapes only: the weights are loaded next
        rotate_outputs(branch_output(adapter, index, ATTENTION), None, d_mid)
        rotate_inputs(mlp_inputs(adapter, index), None, d_mid)
        rotate_outputs(branch_output(adapter, index, MLP), None, d_out)
        set_shortcut(layer, "attn_shortcut_Q", torch.zeros(d_in, d_mid), dtype)
        set_shortcut(layer, "mlp_shortcut_Q", torch.zeros(d_mid, d_out), dtype)
        for name, eps in zip(layer.rotation_norms, shapes["eps"]):
            if name:
                _rmsn(getattr(layer, name)).eps = float(eps)
    adapter.backbone().norm.eps = float(recorded["final_eps"])
    last = int(recorded["layers"][-1]["output"])
    rotate_inputs([model.get_output_embeddings()], None, last)


def pca_basis(signals: Iterable[torch.Tensor], masks: Iterable[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """`rotate.py::pca_calc`: H = sum over the batches of X^T X in float64 (padding rows zeroed), damped by 1% of
    its mean diagonal; its eigenvalues in decreasing order and the eigenvectors as columns in that order."""
    total = None
    for x, mask in zip(signals, masks):
        x = x.detach().double()
        if mask is not None:
            x = x * mask.to(x.device, torch.float64).unsqueeze(-1)
        x = x.reshape(-1, x.shape[-1])
        part = x.T @ x
        total = part if total is None else total + part
    damp = 0.01 * torch.mean(torch.diag(total))
    total = total + damp * torch.eye(total.shape[0], dtype=total.dtype, device=total.device)
    values, vectors = torch.linalg.eigh(total)
    order = torch.argsort(values, descending=True)
    return values[order], vectors[:, order]


def random_orthogonal_upper_left(total: int, block: int, generator: torch.Generator) -> torch.Tensor:
    """`random_orthogonal_upper_left`: a random orthogonal block (QR of a uniform matrix) in the upper left of
    the identity (the reference draws from numpy's global state; here a seeded torch generator)."""
    draw = torch.rand(block, block, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(draw)
    rotation = torch.eye(total, dtype=torch.float64)
    rotation[:block, :block] = q
    return rotation
