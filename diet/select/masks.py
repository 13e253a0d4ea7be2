"""Per-task keep-masks over MLP channels, and their merge into one global mask (pure tensor logic).

Vocabulary:
  scores  list[Tensor]      one 1-D float tensor per decoder layer, higher = more important
  mask    list[BoolTensor]  one 1-D bool tensor per decoder layer, True = keep the channel
Layers may differ in width. All ranking is deterministic: ties go to the lower index (within a layer),
or, for cross-layer ranking, to the earlier position in the layer-by-layer concatenation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from diet.errors import DietConfigError
from diet.io import sha256_bytes
from diet.registry import Registry

# Slack for float products such as 0.35 * 20 = 6.999999999999999 or 0.05 * 20 = 1.0000000000000002,
# so that decimal settings behave as written.
_EPS = 1e-9

# A per-layer list of ranking keys, most significant first, all "higher is better".
LayerKeys = list[Tensor]
ScopeFn = Callable[[list[LayerKeys], float, float], list[Tensor]]
SCOPES: Registry[ScopeFn] = Registry("mask scope")


# --------------------------------------------------------------------------- validation


def _check_sparsity(sparsity: float) -> float:
    if not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise DietConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _check_fraction(min_keep_fraction: float) -> float:
    if not isinstance(min_keep_fraction, (int, float)) or not 0.0 <= min_keep_fraction <= 1.0:
        raise DietConfigError(f"min_keep_fraction must be a number in [0, 1], got {min_keep_fraction!r}")
    return float(min_keep_fraction)


def _check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise DietConfigError(f"merge threshold must be a number in (0, 1], got {threshold!r}")
    return float(threshold)


def _as_scores(scores: list[Tensor]) -> list[Tensor]:
    """Copy to CPU float64 (exact sums, device-independent results) and reject non-1-D or non-finite."""
    if len(scores) == 0:
        raise DietConfigError("scores must have at least one layer, got an empty list")
    out = []
    for i, layer in enumerate(scores):
        layer = torch.as_tensor(layer).detach().to("cpu", torch.float64)
        if layer.dim() != 1:
            raise DietConfigError(f"scores for layer {i} must be 1-D, got shape {tuple(layer.shape)}")
        if not torch.isfinite(layer).all():
            raise DietConfigError(f"scores for layer {i} contain NaN or inf; only finite values are allowed")
        out.append(layer)
    return out


def _widths(layers: list[Tensor]) -> list[int]:
    return [int(layer.numel()) for layer in layers]


def _check_same_shape(named: dict[str, list[Tensor]], what: str) -> list[int]:
    """All entries must have the same number of layers and the same width per layer; returns the widths."""
    if not named:
        raise DietConfigError(f"need at least one task's {what}, got none")
    (ref_name, ref), *rest = named.items()
    ref_widths = _widths(ref)
    for name, layers in rest:
        widths = _widths(layers)
        if len(widths) != len(ref_widths):
            raise DietConfigError(
                f"{name!r} {what} have {len(widths)} layers but {ref_name!r} has {len(ref_widths)}: "
                "all tasks must cover the same layers"
            )
        for i, (w, w_ref) in enumerate(zip(widths, ref_widths)):
            if w != w_ref:
                raise DietConfigError(
                    f"{name!r} {what} layer {i} has width {w} but {ref_name!r} has {w_ref}: "
                    "all tasks must have the same layer widths"
                )
    return ref_widths


def checked_masks(masks: dict[str, list[Tensor]]) -> dict[str, list[Tensor]]:
    out = {}
    for name, mask in masks.items():
        layers = [torch.as_tensor(m).detach().to("cpu") for m in mask]
        if not layers:
            raise DietConfigError(f"task {name!r} mask has no layers; need at least one")
        for i, m in enumerate(layers):
            if m.dtype != torch.bool or m.dim() != 1:
                raise DietConfigError(
                    f"task {name!r} mask layer {i} must be a 1-D bool tensor, got {m.dtype} shape {tuple(m.shape)}"
                )
        out[name] = layers
    return out


# --------------------------------------------------------------------------- scores and counts


def normalize_layer_scores(scores: list[Tensor]) -> list[Tensor]:
    """Divide each layer's scores by that layer's mean (float64), so layers and tasks share one scale.

    The divisor is the mean absolute value: identical to the mean for the non-negative activation scores
    DIET uses, but it can never flip the ranking if a scorer emits negative values. An all-zero layer
    (mean 0) is left as zeros instead of dividing by zero.
    """
    out = []
    for layer in _as_scores(scores):
        mean = layer.abs().mean() if layer.numel() else torch.zeros((), dtype=torch.float64)
        out.append(layer / mean if mean > 0 else layer.clone())
    return out


def keep_count(width: int, sparsity: float, min_keep: int = 1) -> int:
    """Channels kept in a layer of `width`: width - round(sparsity * width), clamped to [min_keep, width].

    Rounding is half-up on the number removed (0.5 * 3 -> remove 2, keep 1), with a 1e-9 slack so that
    float products like 0.35 * 20 = 6.999999999999999 count as 7.
    """
    sparsity = _check_sparsity(sparsity)
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise DietConfigError(f"width must be a non-negative int, got {width!r}")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 0:
        raise DietConfigError(f"min_keep must be a non-negative int, got {min_keep!r}")
    removed = math.floor(sparsity * width + 0.5 + _EPS)
    return min(width, max(min_keep, width - removed))


# --------------------------------------------------------------------------- ranking and scopes


def _rank(keys: LayerKeys) -> Tensor:
    """Indices ordered by keys descending (first key most significant), remaining ties by lower index.

    Least-significant-key-first passes of a stable ascending sort on -key (an LSD radix-style sort):
    stability keeps both the previous keys' order and the index order among equal values.
    """
    order = torch.arange(keys[0].numel())
    for key in reversed(keys):
        order = order[torch.sort(-key.to(torch.float64)[order], stable=True).indices]
    return order


def top_by_keys(keys: LayerKeys, k: int) -> Tensor:
    mask = torch.zeros(keys[0].numel(), dtype=torch.bool)
    mask[_rank(keys)[:k]] = True
    return mask


@SCOPES.register("layer")
def _layer_scope(keys: list[LayerKeys], sparsity: float, min_keep_fraction: float) -> list[Tensor]:
    """Each layer keeps its own top keep_count(width, sparsity) channels; min_keep_fraction is unused."""
    return [top_by_keys(layer_keys, keep_count(layer_keys[0].numel(), sparsity)) for layer_keys in keys]


@SCOPES.register("global")
def _global_scope(keys: list[LayerKeys], sparsity: float, min_keep_fraction: float) -> list[Tensor]:
    """One cross-layer ranking, total = sum of per-layer keep_count, with a per-layer floor.

    Floor = max(1, ceil(min_keep_fraction * width)) (capped at width), taken first from each layer's own
    ranking so no layer is emptied; the remaining budget goes to the best other channels by global rank.
    If the floors alone exceed the target, the floors win (kept = sum of floors).
    """
    widths = [layer_keys[0].numel() for layer_keys in keys]
    floors = [min(w, max(1, math.ceil(min_keep_fraction * w - _EPS))) for w in widths]
    masks = [top_by_keys(layer_keys, f) for layer_keys, f in zip(keys, floors)]
    remaining = sum(keep_count(w, sparsity) for w in widths) - sum(floors)
    if remaining > 0:
        flat_mask = torch.cat(masks)
        flat_keys = [torch.cat([layer_keys[j] for layer_keys in keys]) for j in range(len(keys[0]))]
        order = _rank(flat_keys)
        flat_mask[order[~flat_mask[order]][:remaining]] = True
        masks = list(torch.split(flat_mask, widths))
    return masks


def _select(keys: list[LayerKeys], sparsity: float, scope: str, min_keep_fraction: float) -> list[Tensor]:
    scope_fn = SCOPES.get(scope)
    return scope_fn(keys, _check_sparsity(sparsity), _check_fraction(min_keep_fraction))


def task_mask(
    scores: list[Tensor], sparsity: float, scope: str = "layer", min_keep_fraction: float = 0.05
) -> list[Tensor]:
    """Keep-mask for one task: the top channels by normalised score under `scope` (see SCOPES)."""
    return select_top(normalize_layer_scores(scores), sparsity, scope, min_keep_fraction)


def select_top(
    scores: list[Tensor], sparsity: float, scope: str = "layer", min_keep_fraction: float = 0.05
) -> list[Tensor]:
    """Keep-mask of the top channels by the scores *as given* (no normalisation) under `scope`.

    For scores that are already on one cross-layer scale (FLAP's per-layer standardised scores, which
    may be negative and have mean 0, so dividing by the layer mean would be wrong).
    """
    return _select([[s] for s in _as_scores(scores)], sparsity, scope, min_keep_fraction)


# --------------------------------------------------------------------------- merging


@dataclass(frozen=True)
class MergeOptions:
    threshold: float
    exact: bool
    sparsity: Optional[float]
    scope: str
    min_keep_fraction: float


TaskMasks = dict[str, list[Tensor]]
TaskScores = Optional[dict[str, list[Tensor]]]
MergeFn = Callable[[TaskMasks, TaskScores, MergeOptions], list[Tensor]]
MERGES: Registry[MergeFn] = Registry("merge rule")


def vote_counts(masks: dict[str, list[Tensor]]) -> list[Tensor]:
    """Per layer, the number of tasks that keep each channel (int64)."""
    per_task = list(masks.values())
    return [torch.stack([task[i] for task in per_task]).sum(dim=0) for i in range(len(per_task[0]))]


def summed_scores(scores: dict[str, list[Tensor]]) -> list[Tensor]:
    # Re-normalising is idempotent on already normalised scores and protects against raw ones,
    # which would otherwise let one task's scale dominate the sum.
    normalised = [normalize_layer_scores(s) for s in scores.values()]
    return [torch.stack(layers).sum(dim=0) for layers in zip(*normalised)]


def _need(name: str, value: object, rule: str) -> None:
    if value is None:
        raise DietConfigError(f"merge rule {rule!r} needs {name}, got None")


@MERGES.register("vote")
def _vote(masks: TaskMasks, scores: TaskScores, opt: MergeOptions) -> list[Tensor]:
    needed = max(1, math.ceil(opt.threshold * len(masks) - _EPS))
    votes = vote_counts(masks)
    if not opt.exact:
        return [v >= needed for v in votes]
    _need("task_scores", scores, "vote (exact=True)")
    _need("sparsity", opt.sparsity, "vote (exact=True)")
    # Elected channels (votes >= threshold) outrank the rest and, among themselves, compete on summed
    # score alone: the threshold decides who is elected, the scores decide within the election. Below
    # the threshold, more votes first. So a lower threshold lets scores decide more of the mask.
    keys = []
    for v, s in zip(votes, summed_scores(scores)):
        elected = v >= needed
        keys.append([elected.double(), torch.where(elected, torch.zeros_like(v), v).double(), s])
    return _select(keys, opt.sparsity, opt.scope, opt.min_keep_fraction)


@MERGES.register("mean")
def _mean(masks: TaskMasks, scores: TaskScores, opt: MergeOptions) -> list[Tensor]:
    _need("task_scores", scores, "mean")
    _need("sparsity", opt.sparsity, "mean")
    mean = [s / len(scores) for s in summed_scores(scores)]
    return task_mask(mean, opt.sparsity, opt.scope, opt.min_keep_fraction)


@MERGES.register("union")
def _union(masks: TaskMasks, scores: TaskScores, opt: MergeOptions) -> list[Tensor]:
    return [v >= 1 for v in vote_counts(masks)]


@MERGES.register("intersection")
def _intersection(masks: TaskMasks, scores: TaskScores, opt: MergeOptions) -> list[Tensor]:
    return [v == len(masks) for v in vote_counts(masks)]


def merge_masks(
    task_masks: dict[str, list[Tensor]],
    task_scores: Optional[dict[str, list[Tensor]]] = None,
    rule: str = "vote",
    threshold: float = 0.5,
    exact: bool = True,
    sparsity: Optional[float] = None,
    scope: str = "layer",
    min_keep_fraction: float = 0.05,
) -> list[Tensor]:
    """Merge per-task keep-masks into one global mask.

    Rules (MERGES):
      vote, exact=False  keep a channel iff votes >= ceil(threshold * T) (T = number of tasks). Sparsity
                         follows from the votes, not from `sparsity`.
      vote, exact=True   (default) a channel is *elected* when votes >= ceil(threshold * T).
                         Rank every channel by
                           1. elected before not elected,
                           2. not elected: votes, descending (elected channels tie here),
                           3. summed normalised score over tasks, descending,
                           4. index, ascending,
                         and keep exactly the target count of `scope` at `sparsity` (per layer for
                         "layer"; the global total with per-layer floors for "global"), i.e. the same
                         count a single-task mask or a baseline gets. If more channels are elected than
                         the budget, the best-scoring elected ones are kept; if fewer, the budget is
                         filled with the most-voted, then best-scoring, of the rest. So the threshold
                         matters even at exact sparsity: threshold 1/T makes any vote enough (scores
                         decide), threshold 1.0 privileges only unanimous channels.
      mean               average the normalised task scores and apply `task_mask` to it (no voting).
      union / intersection  keep if any / every task keeps it; sparsity is whatever results (not exact).
    `task_scores` (normalised, same layout as the masks) is needed by exact vote and mean, as is
    `sparsity`. Raises DietConfigError on a bad value, naming it and what is allowed.
    """
    merge_fn = MERGES.get(rule)
    opt = MergeOptions(
        threshold=_check_threshold(threshold),
        exact=bool(exact),
        sparsity=None if sparsity is None else _check_sparsity(sparsity),
        scope=scope,
        min_keep_fraction=_check_fraction(min_keep_fraction),
    )
    SCOPES.get(scope)  # fail on a bad scope even for rules that do not rank
    masks = checked_masks(task_masks)
    _check_same_shape(masks, "masks")
    if task_scores is not None:
        if set(task_scores) != set(masks):
            raise DietConfigError(
                f"task_scores tasks {sorted(task_scores)} must match task_masks tasks {sorted(masks)}"
            )
        task_scores = {name: _as_scores(task_scores[name]) for name in masks}
        # Compare every task's scores against the masks' layout (first entry is the reference).
        _check_same_shape({"task masks": masks[next(iter(masks))], **task_scores}, "scores")
    return merge_fn(masks, task_scores, opt)


# --------------------------------------------------------------------------- hashing, indices, stats


def selection_fingerprint(stats: dict[str, Any] | None) -> Any:
    """What identifies a selection (its stats, or a record's `mask`): the mask hash, or ShortGPT's dropped
    layers; None for a selection that removes nothing."""
    stats = stats or {}
    return stats.get("mask_hash") or stats.get("dropped_layers")


def mask_hash(mask: list[Tensor]) -> str:
    """sha256 of the layer count, then per layer its width (8 bytes LE) and its packed bits; run-stable."""
    parts = [len(mask).to_bytes(8, "little")]
    for layer in mask:
        bits = torch.as_tensor(layer).detach().to("cpu", torch.bool).numpy()
        parts.append(int(bits.size).to_bytes(8, "little"))
        parts.append(np.packbits(bits).tobytes())
    return sha256_bytes(b"".join(parts))


def mask_to_indices(mask: list[Tensor]) -> list[list[int]]:
    """Kept channel indices per layer, ascending."""
    return [torch.nonzero(torch.as_tensor(layer)).flatten().tolist() for layer in mask]


def indices_to_mask(indices: list[list[int]], widths: list[int]) -> list[Tensor]:
    """Inverse of mask_to_indices for layers of the given widths."""
    if len(indices) != len(widths):
        raise DietConfigError(f"got indices for {len(indices)} layers but {len(widths)} widths")
    masks = []
    for i, (kept, width) in enumerate(zip(indices, widths)):
        bad = [k for k in kept if not 0 <= k < width]
        if bad:
            raise DietConfigError(f"layer {i} indices {bad} are out of range: allowed 0..{width - 1}")
        mask = torch.zeros(width, dtype=torch.bool)
        mask[torch.as_tensor(list(kept), dtype=torch.long)] = True
        masks.append(mask)
    return masks


def jaccard(a: list[Tensor], b: list[Tensor]) -> float:
    a_flat, b_flat = torch.cat(a), torch.cat(b)
    union = int((a_flat | b_flat).sum())
    # Two empty kept sets are identical, so 1.0 rather than 0/0.
    return 1.0 if union == 0 else int((a_flat & b_flat).sum()) / union


def _sparsity_of(mask: list[Tensor]) -> float:
    total = sum(_widths(mask))
    return 0.0 if total == 0 else 1.0 - int(sum(int(m.sum()) for m in mask)) / total


def mask_stats(
    task_masks: dict[str, list[Tensor]],
    final_mask: list[Tensor],
    param_counts_before: Optional[int] = None,
    param_counts_after: Optional[int] = None,
) -> dict:
    """Plain-python (JSON-ready) summary of a merge.

    vote_histogram maps str(votes) for votes 0..T to the number of channels (over all layers) kept by that
    many tasks; string keys so the dict survives a JSON round trip unchanged. Jaccard is over the kept
    sets of all layers together, for each task pair in the given order as "taskA|taskB".
    """
    final = [torch.as_tensor(m).detach().to("cpu") for m in final_mask]
    masks = checked_masks({"final mask": final, **task_masks})
    _check_same_shape(masks, "masks")
    del masks["final mask"]
    total = sum(_widths(final))
    kept_per_layer = [int(m.sum()) for m in final]
    votes = torch.cat(vote_counts(masks)) if masks else torch.zeros(total, dtype=torch.long)
    histogram = torch.bincount(votes, minlength=len(masks) + 1)
    stats: dict = {
        "num_tasks": len(masks),
        "widths": _widths(final),
        "total_channels": total,
        "kept_channels": sum(kept_per_layer),
        "kept_per_layer": kept_per_layer,
        "actual_sparsity": _sparsity_of(final),
        "task_sparsity": {name: _sparsity_of(m) for name, m in masks.items()},
        "vote_histogram": {str(v): int(c) for v, c in enumerate(histogram.tolist())},
        "jaccard": {f"{a}|{b}": jaccard(masks[a], masks[b]) for a, b in itertools.combinations(masks, 2)},
        "mask_hash": mask_hash(final),
    }
    if param_counts_before is not None:
        stats["param_counts_before"] = int(param_counts_before)
    if param_counts_after is not None:
        stats["param_counts_after"] = int(param_counts_after)
    if param_counts_before and param_counts_after is not None:
        stats["param_reduction"] = 1.0 - int(param_counts_after) / int(param_counts_before)
    return stats
