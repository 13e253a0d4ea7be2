"""Hand-computed checks of task masks, merge rules, stats and hashing (pure tensors, no model)."""

from __future__ import annotations

import json

import pytest
import torch

from diet.errors import DietConfigError
from diet.select.masks import (
    MERGES,
    SCOPES,
    indices_to_mask,
    keep_count,
    mask_hash,
    mask_stats,
    mask_to_indices,
    merge_masks,
    normalize_layer_scores,
    task_mask,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def m(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


def bits(mask: list[torch.Tensor]) -> list[list[int]]:
    return [layer.int().tolist() for layer in mask]


# Three tasks over one layer of 6 channels, each layer's scores already with mean 1 (sum 6), so
# renormalising is the identity. Their keep-3 (sparsity 0.5) masks and the resulting votes are:
#   a keeps {0,1,2}, b keeps {0,1,3}, c keeps {0,3,2}  ->  votes [3, 2, 2, 2, 0, 0]
#   summed scores [6, 3.5, 3.0, 4.0, 0.75, 0.75]
SCORES = {
    "a": [t(2, 1.5, 1.5, 0.5, 0.25, 0.25)],
    "b": [t(2, 1.5, 0.5, 1.5, 0.25, 0.25)],
    "c": [t(2, 0.5, 1.0, 2.0, 0.25, 0.25)],
}
MASKS = {
    "a": [m(1, 1, 1, 0, 0, 0)],
    "b": [m(1, 1, 0, 1, 0, 0)],
    "c": [m(1, 0, 1, 1, 0, 0)],
}
# For threshold tests: votes [3, 2, 2, 1, 1, 0] (channel 3 only in b, channel 4 only in c).
VOTE_MASKS = {
    "a": [m(1, 1, 1, 0, 0, 0)],
    "b": [m(1, 1, 0, 1, 0, 0)],
    "c": [m(1, 0, 1, 0, 1, 0)],
}


# --------------------------------------------------------------------------- scores and counts


def test_normalize_divides_by_layer_mean_in_float64():
    out = normalize_layer_scores([torch.tensor([2.0, 4.0, 6.0]), torch.zeros(3), t(-1, 1, 2)])
    assert all(layer.dtype == torch.float64 for layer in out)
    assert out[0].tolist() == [0.5, 1.0, 1.5]
    assert out[1].tolist() == [0.0, 0.0, 0.0]  # zero mean: left as is, no NaN
    assert out[2].tolist() == pytest.approx([-0.75, 0.75, 1.5])  # mean |s| keeps the order


@pytest.mark.parametrize(
    "width, sparsity, expected",
    [
        (10, 0.0, 10),
        (10, 0.3, 7),
        (10, 0.35, 6),  # 3.5 removed rounds half up to 4
        (25, 0.58, 10),  # 0.58 * 25 = 14.499999999999998 counts as 14.5 -> 15 removed
        (50, 0.29, 35),  # 14.499999999999998 again
        (7, 0.25, 5),  # 1.75 -> 2 removed
        (3, 0.5, 1),  # 1.5 -> 2 removed
        (5, 0.5, 2),  # 2.5 -> 3 removed
        (4, 0.99, 1),  # would keep 0, min_keep = 1
        (0, 0.5, 0),  # never more than the width
    ],
)
def test_keep_count(width, sparsity, expected):
    assert keep_count(width, sparsity) == expected


def test_keep_count_min_keep():
    assert keep_count(4, 0.99, min_keep=0) == 0
    assert keep_count(10, 0.9, min_keep=3) == 3
    assert keep_count(2, 0.5, min_keep=5) == 2


# --------------------------------------------------------------------------- task masks


def test_layer_scope_picks_top_and_breaks_ties_by_index():
    scores = [t(0.1, 0.9, 0.5, 0.9, 0.9), t(3, 1, 2)]
    # width 5 keeps 2 -> the first two of the three tied 0.9s; width 3 keeps 1.
    assert bits(task_mask(scores, 0.5)) == [[0, 1, 0, 1, 0], [1, 0, 0]]
    assert bits(task_mask(scores, 0.0)) == [[1] * 5, [1] * 3]


def test_task_masks_of_fixture_scores():
    for name, scores in SCORES.items():
        assert bits(task_mask(scores, 0.5)) == bits(MASKS[name])


# Normalised: A [0,0,0,4], B [0,0,2,2], C [1,1,1,1].
THREE_LAYERS = [t(0, 0, 0, 8), t(0, 0, 4, 4), t(1, 1, 1, 1)]


def test_global_scope_ranks_across_layers():
    # Target 6 = 2 per layer. Global order: A3 (4), B2, B3 (2), C0, C1, C2, C3 (1), ...
    assert bits(task_mask(THREE_LAYERS, 0.5, scope="global")) == [[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 0]]
    assert bits(task_mask(THREE_LAYERS, 0.5, scope="layer")) == [[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0]]


def test_global_scope_floor_keeps_every_layer_alive():
    # Target 3: by rank alone A3, B2, B3 and C would be emptied; the floor of 1 per layer comes first.
    assert bits(task_mask(THREE_LAYERS, 0.75, scope="global")) == [[0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]]
    # min_keep_fraction 0 still keeps at least one channel per layer.
    assert bits(task_mask(THREE_LAYERS, 0.75, scope="global", min_keep_fraction=0.0)) == [
        [0, 0, 0, 1],
        [0, 0, 1, 0],
        [1, 0, 0, 0],
    ]
    # Floors of 2 per layer exceed the target of 3: the floors win (6 kept).
    assert bits(task_mask(THREE_LAYERS, 0.75, scope="global", min_keep_fraction=0.5)) == [
        [1, 0, 0, 1],
        [0, 0, 1, 1],
        [1, 1, 0, 0],
    ]


def test_global_floor_uses_ceil_without_float_error():
    # 0.07 * 100 = 7.000000000000001 must give a floor of 7, not 8. Target 10 + 10; floors A99, A0-5
    # (zeros tie by index) and B0-6, then B7-12 by rank (1.0 beats A's zeros).
    scores = [torch.cat([torch.zeros(99), torch.tensor([100.0])]), torch.ones(100)]
    mask = task_mask(scores, 0.9, scope="global", min_keep_fraction=0.07)
    assert mask_to_indices(mask) == [[0, 1, 2, 3, 4, 5, 99], list(range(13))]


def test_global_cross_layer_tie_goes_to_earlier_layer():
    mask = task_mask([t(1, 1), t(1, 1)], 0.5, scope="global", min_keep_fraction=0.0)
    assert bits(mask) == [[1, 0], [1, 0]]  # floors
    mask = task_mask([t(1, 1, 1, 1), t(1, 1, 1, 1)], 0.25, scope="global")
    assert bits(mask) == [[1, 1, 1, 1], [1, 1, 0, 0]]  # target 6: floors A0, B0, then A1-3, B1


# --------------------------------------------------------------------------- merging


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (1 / 3, [1, 1, 1, 1, 1, 0]),  # >= 1 vote
        (0.5, [1, 1, 1, 0, 0, 0]),  # >= ceil(1.5) = 2 votes
        (2 / 3, [1, 1, 1, 0, 0, 0]),  # 2/3 * 3 = 2.0 exactly -> >= 2 votes, not 3
        (1.0, [1, 0, 0, 0, 0, 0]),  # all 3
    ],
)
def test_vote_thresholds_non_exact(threshold, expected):
    assert bits(merge_masks(VOTE_MASKS, rule="vote", threshold=threshold, exact=False)) == [expected]


def test_vote_threshold_without_float_error():
    # 0.28 * 25 = 7.000000000000001 must need 7 votes, not 8.
    masks = {f"t{i}": [m(i < 7, i < 8)] for i in range(25)}
    assert bits(merge_masks(masks, rule="vote", threshold=0.28, exact=False)) == [[1, 1]]
    assert bits(merge_masks(masks, rule="vote", threshold=0.3, exact=False)) == [[0, 1]]  # 7.5 -> 8 votes


def test_threshold_one_is_intersection_and_lowest_is_union():
    assert bits(merge_masks(VOTE_MASKS, rule="vote", threshold=1.0, exact=False)) == bits(
        merge_masks(VOTE_MASKS, rule="intersection")
    )
    assert bits(merge_masks(VOTE_MASKS, rule="union")) == [[1, 1, 1, 1, 1, 0]]
    assert bits(merge_masks(VOTE_MASKS, rule="intersection")) == [[1, 0, 0, 0, 0, 0]]


def test_exact_vote_breaks_vote_ties_by_summed_score():
    # Keep 3: channel 0 (3 votes), then of the 2-vote channels 3 (sum 4.0) and 1 (3.5), not 2 (3.0).
    final = merge_masks(MASKS, SCORES, sparsity=0.5)
    assert bits(final) == [[1, 1, 0, 1, 0, 0]]
    # Non-exact keeps all four channels with >= 2 votes: sparsity no longer matches.
    assert bits(merge_masks(MASKS, SCORES, sparsity=0.5, exact=False)) == [[1, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize(
    "sparsity, expected",
    [
        (0.0, [1, 1, 1, 1, 1, 1]),
        (0.2, [1, 1, 1, 1, 1, 0]),  # keep 5: the two 0-vote channels tie on score -> index 4
        (0.5, [1, 1, 0, 1, 0, 0]),
        (0.7, [1, 0, 0, 1, 0, 0]),  # keep 2
        (0.9, [1, 0, 0, 0, 0, 0]),  # keep 1
    ],
)
def test_exact_vote_fills_exactly_the_target(sparsity, expected):
    final = merge_masks(MASKS, SCORES, sparsity=sparsity)
    assert bits(final) == [expected]
    assert int(final[0].sum()) == keep_count(6, sparsity)


@pytest.mark.parametrize("threshold", [1 / 3, 0.5, 2 / 3, 1.0])
def test_exact_vote_same_result_when_elections_agree(threshold):
    # Votes [3, 2, 2, 2, 0, 0]; at every threshold the best summed scores among the elected (0, 3, 1)
    # are also the best of the most-voted, so the mask does not change.
    assert bits(merge_masks(MASKS, SCORES, threshold=threshold, sparsity=0.5)) == [[1, 1, 0, 1, 0, 0]]


@pytest.mark.parametrize(
    "threshold, expected",
    [
        # one vote elects channels 0..4; scores decide among them: channel 3 (summed 9) wins, then 0, 1.
        (1 / 3, [[1, 1, 0, 1, 0, 0]]),
        # two votes elect exactly channels 0, 1, 2: the budget.
        (0.5, [[1, 1, 1, 0, 0, 0]]),
        (2 / 3, [[1, 1, 1, 0, 0, 0]]),
        # only unanimous channel 0 is elected; the rest is filled by votes (1, 2 have two each).
        (1.0, [[1, 1, 1, 0, 0, 0]]),
    ],
)
def test_exact_vote_threshold_decides_who_competes_on_score(threshold, expected):
    # Votes [3, 2, 2, 1, 1, 0]; channel 3 has by far the best summed score but only one vote.
    scores = {name: [t(1, 1, 1, 3, 0, 0)] for name in VOTE_MASKS}
    assert bits(merge_masks(VOTE_MASKS, scores, threshold=threshold, sparsity=0.5)) == expected


def test_exact_vote_global_scope_hits_global_target():
    scores = {"x": THREE_LAYERS, "y": THREE_LAYERS}
    masks = {name: task_mask(s, 0.5, scope="global") for name, s in scores.items()}
    final = merge_masks(masks, scores, sparsity=0.5, scope="global")
    assert bits(final) == bits(masks["x"])
    assert sum(int(layer.sum()) for layer in final) == 6


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_one_task_merge_returns_that_task_mask(scope):
    scores = {"only": THREE_LAYERS}
    mask = task_mask(THREE_LAYERS, 0.5, scope=scope)
    for rule in ("vote", "mean", "union", "intersection"):
        final = merge_masks({"only": mask}, scores, rule=rule, sparsity=0.5, scope=scope)
        assert bits(final) == bits(mask), rule


def test_agreeing_tasks_merge_to_the_common_mask():
    common = [m(0, 1, 1, 0), m(1, 0, 0, 1)]
    scores = {name: [t(4, 3, 2, 1), t(1, 2, 3, 4)] for name in "pqr"}  # scores disagree with the masks
    masks = {name: common for name in "pqr"}
    assert bits(merge_masks(masks, scores, sparsity=0.5)) == bits(common)
    assert bits(merge_masks(masks, rule="vote", threshold=1.0, exact=False)) == bits(common)


def test_mean_rule_averages_normalised_scores():
    scores = {
        "p": [t(3.4, 0.3, 0.2, 0.1)],
        "q": [t(0.1, 1.4, 1.3, 1.2)],
        "r": [t(0.1, 1.4, 1.3, 1.2)],
    }
    masks = {name: task_mask(s, 0.5) for name, s in scores.items()}  # p {0,1}, q, r {1,2}
    assert bits(merge_masks(masks, scores, rule="vote", sparsity=0.5)) == [[0, 1, 1, 0]]
    # means [1.2, 1.033, 0.933, 0.833]: the single strong vote for channel 0 wins on average.
    assert bits(merge_masks(masks, scores, rule="mean", sparsity=0.5)) == [[1, 1, 0, 0]]


def test_merge_renormalises_raw_scores():
    scaled = {name: [layer * 1000 if name == "a" else layer for layer in s] for name, s in SCORES.items()}
    assert bits(merge_masks(MASKS, scaled, sparsity=0.5)) == [[1, 1, 0, 1, 0, 0]]


def test_registries_list_their_names():
    assert SCOPES.names() == ["global", "layer"]
    assert MERGES.names() == ["intersection", "mean", "union", "vote"]


# --------------------------------------------------------------------------- stats, hash, indices

X = [m(1, 1, 0, 0), m(1, 0)]
Y = [m(1, 1, 0, 0), m(0, 1)]
Z = [m(0, 0, 1, 1), m(1, 0)]


def test_mask_stats_numbers():
    stats = mask_stats({"x": X, "y": Y, "z": Z}, X, param_counts_before=1000, param_counts_after=750)
    assert stats["num_tasks"] == 3
    assert stats["widths"] == [4, 2]
    assert stats["total_channels"] == 6
    assert stats["kept_channels"] == 3
    assert stats["kept_per_layer"] == [2, 1]
    assert stats["actual_sparsity"] == 0.5
    assert stats["task_sparsity"] == {"x": 0.5, "y": 0.5, "z": 0.5}
    # votes: layer 0 [2, 2, 1, 1], layer 1 [2, 1]
    assert stats["vote_histogram"] == {"0": 0, "1": 3, "2": 3, "3": 0}
    assert sum(stats["vote_histogram"].values()) == stats["total_channels"]
    # kept sets over flattened channels: x {0,1,4}, y {0,1,5}, z {2,3,4}
    assert stats["jaccard"] == {"x|y": 0.5, "x|z": 0.2, "y|z": 0.0}
    assert stats["mask_hash"] == mask_hash(X)
    assert stats["param_counts_before"] == 1000
    assert stats["param_counts_after"] == 750
    assert stats["param_reduction"] == 0.25
    assert json.loads(json.dumps(stats)) == stats


def test_mask_stats_identical_masks_and_no_param_counts():
    stats = mask_stats({"p": X, "q": X}, X)
    assert stats["jaccard"] == {"p|q": 1.0}
    assert mask_stats({"p": [m(0, 0)], "q": [m(0, 0)]}, [m(1, 0)])["jaccard"] == {"p|q": 1.0}  # both empty
    assert stats["vote_histogram"] == {"0": 3, "1": 0, "2": 3}
    assert "param_counts_before" not in stats and "param_reduction" not in stats


def test_mask_stats_rejects_final_of_other_shape():
    with pytest.raises(DietConfigError, match="'x' masks layer 0 has width 4 but 'final mask' has 3"):
        mask_stats({"x": X}, [m(1, 1, 0), m(1, 0)])


def test_mask_hash_stable_and_sensitive():
    h = mask_hash(X)
    # Golden value: changes only if the hash format changes (which invalidates cached masks).
    assert h == "653a6d1f7be6bc99246875c28149a1e87c0171b884912eed87775fffc2cab0c6"
    assert mask_hash([layer.clone() for layer in X]) == h
    assert mask_hash(indices_to_mask(mask_to_indices(X), [4, 2])) == h
    flipped = [X[0].clone(), X[1].clone()]
    flipped[1][1] = True
    assert mask_hash(flipped) != h
    # Same packed bytes, different widths or layer split: still different hashes.
    assert mask_hash([m(1, 0)]) != mask_hash([m(1, 0, 0)])
    assert mask_hash([m(1, 0, 0, 0), m(0, 0, 0, 0)]) != mask_hash([m(1, 0, 0, 0, 0, 0, 0, 0)])


def test_indices_round_trip_and_range_check():
    assert mask_to_indices(X) == [[0, 1], [0]]
    assert mask_to_indices([m(0, 0, 0)]) == [[]]
    assert bits(indices_to_mask([[0, 1], [0]], [4, 2])) == bits(X)
    assert bits(indices_to_mask([[]], [3])) == [[0, 0, 0]]
    with pytest.raises(DietConfigError, match=r"\[4\] are out of range: allowed 0..3"):
        indices_to_mask([[0, 4]], [4])
    with pytest.raises(DietConfigError, match="2 widths"):
        indices_to_mask([[0]], [4, 2])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("threshold", [0, 1.5])
def test_bad_threshold(threshold):
    with pytest.raises(DietConfigError, match=rf"threshold must be a number in \(0, 1\], got {threshold}"):
        merge_masks(MASKS, SCORES, threshold=threshold, sparsity=0.5)


@pytest.mark.parametrize("sparsity", [1.0, -0.1])
def test_bad_sparsity(sparsity):
    message = rf"sparsity must be a number in \[0, 1\), got {sparsity}"
    with pytest.raises(DietConfigError, match=message):
        merge_masks(MASKS, SCORES, sparsity=sparsity)
    with pytest.raises(DietConfigError, match=message):
        task_mask(SCORES["a"], sparsity)
    with pytest.raises(DietConfigError, match=message):
        keep_count(10, sparsity)


def test_unknown_rule_and_scope():
    with pytest.raises(DietConfigError, match=r"unknown merge rule 'majority'.*available: intersection, mean"):
        merge_masks(MASKS, SCORES, rule="majority", sparsity=0.5)
    with pytest.raises(DietConfigError, match=r"unknown mask scope 'globl': did you mean 'global'.*available"):
        task_mask(SCORES["a"], 0.5, scope="globl")
    with pytest.raises(DietConfigError, match="unknown mask scope"):
        merge_masks(MASKS, rule="union", scope="model")


def test_mismatched_layers():
    with pytest.raises(DietConfigError, match="'b' masks layer 1 has width 3 but 'a' has 2"):
        merge_masks({"a": [m(1, 0), m(1, 0)], "b": [m(1, 0), m(1, 0, 0)]}, rule="union")
    with pytest.raises(DietConfigError, match="'b' masks have 1 layers but 'a' has 2"):
        merge_masks({"a": [m(1, 0), m(1, 0)], "b": [m(1, 0)]}, rule="union")
    with pytest.raises(DietConfigError, match="'a' scores layer 0 has width 5 but 'task masks' has 6"):
        merge_masks(MASKS, {**SCORES, "a": [t(1, 2, 3, 4, 5)]}, sparsity=0.5)


def test_other_bad_inputs():
    with pytest.raises(DietConfigError, match="at least one task"):
        merge_masks({}, rule="union")
    with pytest.raises(DietConfigError, match="needs task_scores"):
        merge_masks(MASKS, sparsity=0.5)
    with pytest.raises(DietConfigError, match="needs sparsity"):
        merge_masks(MASKS, SCORES, rule="mean")
    with pytest.raises(DietConfigError, match="must match task_masks tasks"):
        merge_masks(MASKS, {"a": SCORES["a"]}, sparsity=0.5)
    with pytest.raises(DietConfigError, match="must be a 1-D bool tensor"):
        merge_masks({"a": [torch.tensor([1, 0])]}, rule="union")
    with pytest.raises(DietConfigError, match="NaN or inf"):
        task_mask([t(1, float("nan"))], 0.5)
    with pytest.raises(DietConfigError, match=r"min_keep_fraction must be a number in \[0, 1\], got 1.5"):
        task_mask(SCORES["a"], 0.5, scope="global", min_keep_fraction=1.5)
