"""Which dimensions are pruned (`dims`), and what a sparsity means for each.

  mlp        MLP channels (gate/up rows, down columns), per layer                 (diet.prune)
  heads      whole query heads, per layer and KV group (GQA rule)                (diet.prune_attention)
  mlp+heads  both, each at the same per-dimension sparsity
  hidden     residual-stream dimensions, one global mask for the whole model     (diet.prune_hidden)

Masks keep the layout of diet.masks (a list of 1-D tensors ranked within each entry). For heads every
entry is one (layer, KV group): ranking "per layer" on that layout keeps the same number of heads in
every group, which is the GQA rule of diet.prune_attention. For hidden there is one entry.

`sparsity_of`: `dim` (default) = `sparsity` is the fraction of each pruned dimension removed;
`params` = `sparsity` is the target fraction of NON-EMBEDDING parameters removed, and the one
per-dimension fraction is solved for (`solve_dim_sparsity`): among the fractions r / width that
change the kept count (every per-layer MLP width, heads per KV group, hidden width), the one whose
exact parameter removal (with the same rounding as the masks) is nearest the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from diet import masks
from diet.errors import DietConfigError
from diet.io import stable_hash
from diet.models.adapters import adapter_for, parameter_counts

DIMS = ("mlp", "heads", "mlp+heads", "hidden")
DEFAULT_DIMS = "mlp"
PARTS = ("mlp", "heads", "hidden")
SPARSITY_OF = ("dim", "params")


def dim_parts(dims: str) -> tuple[str, ...]:
    """'mlp+heads' -> ('mlp', 'heads')."""
    if dims not in DIMS:
        raise DietConfigError(_unknown_dims(dims))
    return tuple(dims.split("+"))


def _unknown_dims(dims: Any) -> str:
    from diet.registry import unknown_name_message

    return unknown_name_message("dims", dims, list(DIMS))


def cfg_dims(cfg: dict) -> str:
    return cfg.get("dims") or DEFAULT_DIMS


# ------------------------------------------------------------------------------------ heads layout


@dataclass(frozen=True)
class HeadLayout:
    """Per layer: number of KV groups and query heads per group."""

    groups: tuple[int, ...]
    group_size: tuple[int, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "HeadLayout":
        adapter = adapter_for(model)
        kv = adapter.num_kv_heads()
        counts = adapter.head_counts()
        return cls(tuple(kv for _ in counts), tuple(count // kv for count in counts))

    def split(self, per_layer: list[Tensor]) -> list[Tensor]:
        """Per-layer per-head tensors -> one tensor per (layer, KV group), layer-major."""
        if len(per_layer) != len(self.groups):
            raise DietConfigError(f"got head tensors for {len(per_layer)} layers, the model has {len(self.groups)}")
        return [segment for layer, g in zip(per_layer, self.groups) for segment in torch.as_tensor(layer).chunk(g)]

    def join(self, segments: list[Tensor]) -> list[Tensor]:
        out, start = [], 0
        for g in self.groups:
            out.append(torch.cat(list(segments[start : start + g])))
            start += g
        return out


def select_heads(scores: list[Tensor], sparsity: float, layout: HeadLayout) -> list[Tensor]:
    """Per layer, per KV group, keep the top keep_count(heads_per_group, sparsity) heads by score."""
    return layout.join(masks.select_top(layout.split(scores), sparsity, scope="layer"))


def equalize_groups(segment_masks: list[Tensor], keys: list[list[Tensor]], layout: HeadLayout) -> list[Tensor]:
    """Where the KV groups of a layer keep different numbers of heads (or none), make every group keep
    as many as its largest group (at least 1). Needed after merge rules whose kept count follows the
    votes (union, intersection, vote with exact=false). Within a group heads are ranked by `keys` (votes,
    then summed score), so every head the merge kept stays kept. Layers already equal are untouched."""
    out, start = [], 0
    for g in layout.groups:
        layer = list(segment_masks[start : start + g])
        counts = [int(m.sum()) for m in layer]
        if len(set(counts)) > 1 or counts[0] == 0:
            k = max(1, max(counts))
            layer = [masks._top(keys[start + j], k) for j in range(g)]
        out.extend(layer)
        start += g
    return out


# ------------------------------------------------------------------------------------ hidden scores


def hidden_scores(profile: Any, stat: str) -> Tensor:
    """One score per residual dimension: the sum over layers of each layer's output statistic, each
    layer normalised to mean 1 first (so no layer's scale dominates)."""
    per_layer = masks.normalize_layer_scores(profile.scores("hidden", stat))
    return torch.stack(per_layer).sum(dim=0)


# ------------------------------------------------------------------------------------ merging by part


def merge_part(
    part: str,
    task_masks: dict[str, list[Tensor]],
    task_scores: dict[str, list[Tensor]],
    cfg: dict,
    layout: HeadLayout | None = None,
) -> list[Tensor]:
    """DIET's merge for one part, on the part's ranking layout (heads: per KV group; hidden: one entry).

    MLP uses `mask.scope`; heads and hidden always rank within their entries ("layer"), since a global
    ranking would give KV groups different counts. After a non-exact merge, heads are equalised per layer.
    """
    scope = cfg["mask"]["scope"] if part == "mlp" else "layer"
    merged = masks.merge_masks(
        task_masks,
        task_scores,
        rule=cfg["merge"],
        threshold=cfg["vote"]["threshold"],
        exact=cfg["vote"]["exact"],
        sparsity=cfg["sparsity"],
        scope=scope,
        min_keep_fraction=cfg["mask"]["min_keep_fraction"],
    )
    if part == "heads":
        votes = masks._votes(masks._as_masks(task_masks))
        summed = masks._summed_scores(task_scores)
        merged = equalize_groups(merged, [[v.double(), s] for v, s in zip(votes, summed)], layout)
    return merged


def per_layer(part: str, layout_masks: list[Tensor], layout: HeadLayout | None) -> list[Tensor]:
    """A part's mask from its ranking layout to per-layer form (hidden: a one-entry list)."""
    return layout.join(layout_masks) if part == "heads" else list(layout_masks)


def selection_fields(finals: dict[str, list[Tensor]]) -> dict[str, Any]:
    """MaskSelection keyword arguments for per-layer part masks."""
    fields: dict[str, Any] = {}
    if "mlp" in finals:
        fields["mlp_keep"] = finals["mlp"]
    if "heads" in finals:
        fields["head_keep"] = finals["heads"]
    if "hidden" in finals:
        fields["hidden_keep"] = finals["hidden"][0]
    return fields


# ------------------------------------------------------------------------------------ stats


def selection_stats(task_masks: dict[str, dict[str, list[Tensor]]], finals: dict[str, list[Tensor]]) -> dict:
    """mask_stats of the first part at the top level (dims=mlp records look as before); every further
    part's stats under its name; with several parts, mask_hash covers all of them."""
    parts = list(finals)
    stats = masks.mask_stats(task_masks.get(parts[0], {}), finals[parts[0]])
    for part in parts[1:]:
        stats[part] = masks.mask_stats(task_masks.get(part, {}), finals[part])
    if len(parts) > 1:
        stats["mask_hash"] = stable_hash({part: masks.mask_hash(finals[part]) for part in parts}, length=64)
    if parts != ["mlp"]:
        stats["dims"] = "+".join(parts)
    return stats


# ------------------------------------------------------------------------------------ accounting


def dim_units(model: nn.Module) -> dict[str, int]:
    """How many units of each dimension type the model has now."""
    adapter = adapter_for(model)
    return {
        "mlp": sum(adapter.mlp_widths()),
        "heads": sum(adapter.head_counts()),
        "hidden": adapter.hidden_width(),
        "layers": adapter.num_layers(),
    }


def unit_parameters(model: nn.Module) -> dict[str, Any]:
    """Non-embedding parameters removed with one unit: per layer per MLP channel, per layer per query
    head, and per hidden dimension (summed over the whole model)."""
    from diet.prune_hidden import hidden_norms

    adapter = adapter_for(model)
    head_dim = adapter.head_dim()

    def has_bias(linear: nn.Linear) -> int:
        return int(linear.bias is not None)

    mlp, heads, hidden = [], [], 0
    for layer in range(adapter.num_layers()):
        m, a = adapter.mlp(layer), adapter.attention(layer)
        mlp.append(m.gate.in_features + has_bias(m.gate) + m.up.in_features + has_bias(m.up) + m.down.out_features)
        heads.append(head_dim * (a.q.in_features + has_bias(a.q) + a.o.out_features))
        hidden += a.q.out_features + a.k.out_features + a.v.out_features + a.o.in_features + has_bias(a.o)
        hidden += m.gate.out_features + m.up.out_features + m.down.in_features + has_bias(m.down)
    hidden += sum(1 + int(getattr(norm, "bias", None) is not None) for norm in hidden_norms(model))
    return {"mlp": mlp, "heads": heads, "hidden": hidden}


def _shapes(model: nn.Module) -> dict[str, Any]:
    adapter = adapter_for(model)
    return {
        "mlp": adapter.mlp_widths(),
        "layout": HeadLayout.of(model),
        "hidden": adapter.hidden_width(),
        "costs": unit_parameters(model),
    }


def removed_parameters(model: nn.Module, dims: str, sparsity: float, shapes: dict | None = None) -> int:
    """Exact non-embedding parameters removed by pruning `dims` at per-dimension `sparsity` (the same
    keep_count rounding as the masks: per layer for MLP, per KV group for heads, once for hidden)."""
    shapes = shapes or _shapes(model)
    costs, layout, parts = shapes["costs"], shapes["layout"], dim_parts(dims)
    total = 0
    if "mlp" in parts:
        total += sum((w - masks.keep_count(w, sparsity)) * c for w, c in zip(shapes["mlp"], costs["mlp"]))
    if "heads" in parts:
        total += sum(
            g * (n - masks.keep_count(n, sparsity)) * c for g, n, c in zip(layout.groups, layout.group_size, costs["heads"])
        )
    if "hidden" in parts:
        total += (shapes["hidden"] - masks.keep_count(shapes["hidden"], sparsity)) * costs["hidden"]
    return int(total)


def solve_dim_sparsity(model: nn.Module, dims: str, target: float) -> dict[str, Any]:
    """The per-dimension sparsity whose exact non-embedding parameter removal is nearest `target` (a
    fraction of the non-embedding parameters). Candidates: 0 and every r / width (r < width) for the
    widths whose kept counts it sets; ties go to the smaller sparsity. Returns the sparsity, the
    predicted removed fraction and the target."""
    parts, shapes = dim_parts(dims), _shapes(model)
    widths: set[int] = set()
    if "mlp" in parts:
        widths.update(shapes["mlp"])
    if "heads" in parts:
        widths.update(shapes["layout"].group_size)
    if "hidden" in parts:
        widths.add(shapes["hidden"])
    candidates = sorted({0.0} | {r / w for w in widths for r in range(1, w)})
    non_embedding = parameter_counts(model)["non_embedding"]
    goal = target * non_embedding
    best = min(candidates, key=lambda s: (abs(removed_parameters(model, dims, s, shapes) - goal), s))
    return {
        "sparsity": float(best),
        "target_parameters": float(target),
        "predicted_parameters": removed_parameters(model, dims, best, shapes) / non_embedding,
    }


def resolve_sparsity(model: nn.Module, cfg: dict) -> tuple[dict, dict]:
    """(the config the method sees, facts for the record). With sparsity_of=params the method's
    `sparsity` is the solved per-dimension fraction; otherwise the config is returned unchanged."""
    of = cfg.get("sparsity_of") or "dim"
    if of == "dim":
        return cfg, {"of": "dim", "dim_sparsity": float(cfg["sparsity"])}
    solved = solve_dim_sparsity(model, cfg_dims(cfg), float(cfg["sparsity"]))
    return {**cfg, "sparsity": solved["sparsity"]}, {"of": of, "dim_sparsity": solved["sparsity"], **solved}
