"""The activation profiler against a brute-force recomputation on a tiny random Gemma-2 model."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from conftest import fp32_bound
from diet.errors import DietConfigError
from diet.calib.profiler import SITES, STATS, ActivationProfile, pad_batch, profile_activations
from diet.models.tiny import tiny_gemma2

NUM_LAYERS = 3
# Different lengths (one longer than the 64-token sliding window) so that batches are padded.
LENGTHS = [5, 17, 80, 1, 33, 12, 9, 41, 3, 26]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny forwards are far faster on one thread when the CPU cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return tiny_gemma2(num_hidden_layers=NUM_LAYERS)


@pytest.fixture(scope="module")
def sequences():
    rng = random.Random(1234)
    # token ids 4..259 are bytes; every sequence starts with <bos>=2 like the calibration encoder
    return [[2] + [rng.randrange(4, 260) for _ in range(length - 1)] for length in LENGTHS]


def all_hooks(model: torch.nn.Module) -> set[tuple[str, str, int]]:
    """Every forward (pre-)hook on every module. transformers installs a few output-capturing hooks
    of its own when the model is built; the profiler must leave exactly those behind."""
    found = set()
    for name, module in model.named_modules():
        found |= {(name, "forward", key) for key in module._forward_hooks}
        found |= {(name, "pre", key) for key in module._forward_pre_hooks}
    return found


WIDTHS = {"mlp": 128, "mlp_in": 64, "attn": 4 * 32, "hidden": 64}  # intermediate, hidden, heads*head_dim, hidden
LONGEST = 128  # the tiny model's longest sum in a layer (intermediate = heads * head_dim): fp32_bound's length


@torch.no_grad()
def brute_force(model, sequences, skip_first: bool = False):
    """Per-site per-layer (sum a, sum|a|, sum a^2, sum_t max|a_t|, sum_t max a_t^2) and per-layer sum of
    cos(layer in, layer out), one unpadded sequence at a time, summed in float64. The two sums of per-token
    maxima are the scales of the float32 rounding of the first three (see rounding_bounds)."""
    layers = model.model.layers
    sums = {site: [[0.0] * 5 for _ in layers] for site in WIDTHS}
    cosines = [0.0 for _ in layers]
    captured: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.pre_feedforward_layernorm.register_forward_hook(
            lambda mod, args, out, i=i: captured.__setitem__(("mlp_in", i), out)))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda mod, args, i=i: captured.__setitem__(("attn", i), args[0])))
        handles.append(layer.register_forward_hook(
            lambda mod, args, out, i=i: captured.__setitem__(("hidden", i), out[0] if isinstance(out, tuple) else out)))
    try:
        for seq in sequences:
            captured.clear()
            out = model(input_ids=torch.tensor([seq]), use_cache=False, output_hidden_states=True)
            for i, layer in enumerate(layers):
                mlp = layer.mlp
                x = captured[("mlp_in", i)]
                values = {
                    "mlp": mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x),
                    "mlp_in": x,
                    "attn": captured[("attn", i)],
                    "hidden": captured[("hidden", i)],
                }
                if i < len(layers) - 1:  # hidden_states[-1] is after the final norm
                    assert torch.equal(values["hidden"], out.hidden_states[i + 1])
                layer_input = out.hidden_states[i].double()[0]  # [0] = embeddings * sqrt(hidden)
                layer_output = values["hidden"].double()[0]
                cos = (layer_input * layer_output).sum(-1) / (layer_input.norm(dim=-1) * layer_output.norm(dim=-1))
                cosines[i] += float(cos[int(skip_first):].sum())
                for site, value in values.items():
                    assert value.shape == (1, len(seq), WIDTHS[site])
                    value = value.double()[0][int(skip_first):]  # skip_first: position 0 left out
                    sums[site][i][0] = sums[site][i][0] + value.sum(dim=0)
                    sums[site][i][1] = sums[site][i][1] + value.abs().sum(dim=0)
                    sums[site][i][2] = sums[site][i][2] + value.square().sum(dim=0)
                    sums[site][i][3] += float(value.abs().amax(dim=-1).sum())
                    sums[site][i][4] += float(value.square().amax(dim=-1).sum())
    finally:
        for handle in handles:
            handle.remove()
    return sums, cosines


def rounding_bounds(expected: list[float]) -> tuple[float, float, float]:
    """fp32_bound of (sum a, sum |a|, sum a^2) of one site and layer, from brute_force's entry.

    Batched and padded or one sequence at a time, the float32 activations differ by rounding alone; a
    token's errors come from its shared hidden state, so they follow that token's largest activation
    M_t (not each channel's own value): |d sum a| and |d sum |a|| <= sum_t fp32_bound(M_t), and
    |d sum a^2| <= sum_t 2 |a| |da| <= 2 sum_t fp32_bound(M_t^2). Depth: every layer (an upper bound)."""
    token_max, token_max_sq = expected[3], expected[4]
    first = fp32_bound(token_max, NUM_LAYERS, LONGEST)
    return first, first, 2 * fp32_bound(token_max_sq, NUM_LAYERS, LONGEST)


def cosine_bound(n_tokens: int) -> float:
    """A per-token cosine (in [-1, 1]) of rounded float32 vectors moves by fp32_bound(1); a layer's sum
    of them over n tokens by n times that."""
    return fp32_bound(float(n_tokens), NUM_LAYERS, LONGEST)


def profile_gaps(profile: ActivationProfile, expected: dict, cosines: list[float]) -> dict[str, float]:
    """Largest |profile - expected| / rounding bound per statistic, over sites and layers."""
    gaps = {"sum": 0.0, "sum_abs": 0.0, "sum_sq": 0.0, "block_cos": 0.0}
    for site in SITES:
        for layer in range(NUM_LAYERS):
            bounds = rounding_bounds(expected[site][layer])
            for k, stat in enumerate(("sum", "sum_abs", "sum_sq")):
                got = getattr(profile, stat)[site][layer]
                assert got.dtype == torch.float64
                gaps[stat] = max(gaps[stat], float((got - expected[site][layer][k]).abs().max()) / bounds[k])
    for layer, cosine in enumerate(cosines):
        gap = abs(profile.block_cos[layer] - cosine) / cosine_bound(profile.n_tokens)
        gaps["block_cos"] = max(gaps["block_cos"], gap)
    return gaps


def assert_same_profile(a: ActivationProfile, expected: dict, cosines: list[float]) -> None:
    gaps = profile_gaps(a, expected, cosines)
    assert all(gap <= 1 for gap in gaps.values()), gaps


@pytest.fixture(scope="module")
def brute(model, sequences):
    return brute_force(model, sequences)


@pytest.fixture(scope="module")
def reference(model, sequences):
    return profile_activations(model, sequences, batch_size=4, pad_id=0, padding_side="right")


# --------------------------------------------------------------------------- correctness

def test_profile_equals_brute_force(model, sequences, reference, brute):
    expected, cosines = brute
    assert reference.n_samples == len(LENGTHS)
    assert reference.n_tokens == sum(LENGTHS) == 227
    assert sorted(SITES) == sorted(WIDTHS)
    for site in SITES:
        assert len(reference.sum[site]) == len(reference.sum_abs[site]) == len(reference.sum_sq[site]) == NUM_LAYERS
        for layer in range(NUM_LAYERS):
            assert reference.sum_abs[site][layer].shape == (WIDTHS[site],)
    assert_same_profile(reference, expected, cosines)
    influence = [1 - c / 227 for c in cosines]  # 1 - mean cosine: the mean's rounding bound, cosine_bound / n
    assert all(abs(a - b) <= cosine_bound(227) / 227 for a, b in zip(reference.block_influence(), influence))
    # the three sites really are different tensors (a hook on the wrong module would not be caught otherwise)
    assert not torch.allclose(reference.sum_abs["mlp"][0][:64], reference.sum_abs["hidden"][0])
    assert not torch.allclose(reference.sum_abs["attn"][0][:64], reference.sum_abs["hidden"][0])


@pytest.mark.parametrize(("batch_size", "side"), [(1, "right"), (8, "right"), (8, "left"), (3, "left")])
def test_batch_size_and_padding_side_do_not_matter(model, sequences, reference, brute, batch_size, side):
    profile = profile_activations(model, sequences, batch_size=batch_size, pad_id=0, padding_side=side)
    assert (profile.n_samples, profile.n_tokens) == (reference.n_samples, reference.n_tokens)
    assert_same_profile(profile, *brute)


@pytest.mark.parametrize("bug", ["last_token_dropped", "pad_token_counted"])
def test_rounding_bounds_catch_one_wrong_token(model, sequences, reference, bug):
    """An off-by-one in the padding mask (one sequence's last token skipped, or one pad token counted)
    moves every statistic far beyond its rounding bound (measured >= 1000x)."""
    wrong = [list(seq) for seq in sequences]
    longest = max(range(len(wrong)), key=lambda i: len(wrong[i]))
    if bug == "last_token_dropped":
        wrong[longest] = wrong[longest][:-1]
    else:
        wrong[longest] = wrong[longest] + [0]
    gaps = profile_gaps(reference, *brute_force(model, wrong))
    assert all(gap > 100 for gap in gaps.values()), gaps


@pytest.mark.parametrize("side", ["right", "left"])
def test_exclude_first_changes_exactly_the_statistics_of_position_0(model, sequences, brute, side):
    """profile.exclude_bos: every statistic equals the brute force over positions 1.. (position 0 still runs
    through the model), and is far from the full statistics; with left padding position 0 is the first real
    token, not column 0."""
    profile = profile_activations(model, sequences, batch_size=3, pad_id=0, padding_side=side, exclude_first=True)
    assert profile.n_tokens == sum(LENGTHS) - len(LENGTHS) and profile.n_samples == len(LENGTHS)
    assert_same_profile(profile, *brute_force(model, sequences, skip_first=True))
    gaps = profile_gaps(profile, *brute)  # against the statistics with position 0 counted
    assert all(gap > 100 for gap in gaps.values()), gaps


def test_pad_batch_layout():
    ids, mask, positions = pad_batch([[7, 8, 9], [5]], pad_id=0, side="left")
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    ids, mask, positions = pad_batch([[7, 8, 9], [5]], pad_id=0, side="right")
    assert ids.tolist() == [[7, 8, 9], [5, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_empty_sequences_rejected(model):
    with pytest.raises(DietConfigError, match="^no calibration sequences to profile$"):
        profile_activations(model, [])


# --------------------------------------------------------------------------- statistics

def hand_profile() -> ActivationProfile:
    return ActivationProfile(
        n_samples=2,
        n_tokens=4,
        sum_abs={"mlp": [torch.tensor([4.0, 8.0, 2.0], dtype=torch.float64)],
                 "attn": [torch.tensor([1.0, 3.0, 2.0, 6.0, 8.0, 0.0], dtype=torch.float64)]},
        sum_sq={"mlp": [torch.tensor([9.0, 16.0, 0.25], dtype=torch.float64)],
                "attn": [torch.tensor([4.0, 0.0, 16.0, 36.0, 1.0, 9.0], dtype=torch.float64)]},
        sum={"mlp": [torch.tensor([-2.0, 8.0, 1.0], dtype=torch.float64)],
             "attn": [torch.tensor([1.0, -3.0, 0.0, 6.0, -8.0, 0.0], dtype=torch.float64)]},
        block_cos=[3.0, 2.0],
    )


def test_stats_on_hand_made_profile():
    profile = hand_profile()
    assert STATS.names() == ["l2", "mean_abs", "mean_sq"]
    assert profile.scores("mlp", "mean_abs")[0].tolist() == [1.0, 2.0, 0.5]
    assert profile.scores("mlp", "mean_sq")[0].tolist() == [2.25, 4.0, 0.0625]
    assert profile.scores("mlp", "l2")[0].tolist() == [3.0, 4.0, 0.5]
    with pytest.raises(DietConfigError, match="unknown statistic 'mean': did you mean 'mean_sq'"):
        profile.scores("mlp", "mean")


def test_mean_variance_block_influence_on_hand_made_profile():
    profile = hand_profile()
    assert profile.mean("mlp")[0].tolist() == [-0.5, 2.0, 0.25]
    # E[a^2] - E[a]^2 = [2.25 - 0.25, 4 - 4, 0.0625 - 0.0625]
    assert profile.variance("mlp")[0].tolist() == [2.0, 0.0, 0.0]
    assert profile.block_influence() == [1 - 3.0 / 4, 1 - 2.0 / 4]


def test_pooled_adds_the_sums():
    a, b = hand_profile(), hand_profile()
    b.n_samples, b.n_tokens, b.block_cos = 1, 2, [1.0, 0.5]
    b.sum_abs["mlp"] = [torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)]
    pooled = ActivationProfile.pooled([a, b])
    assert (pooled.n_samples, pooled.n_tokens) == (3, 6)
    assert pooled.sum_abs["mlp"][0].tolist() == [5.0, 9.0, 3.0]
    assert pooled.sum_sq["attn"][0].tolist() == [8.0, 0.0, 32.0, 72.0, 2.0, 18.0]
    assert pooled.sum["mlp"][0].tolist() == [-4.0, 16.0, 2.0]
    assert pooled.block_cos == [4.0, 2.5]
    assert pooled.scores("mlp", "mean_abs")[0].tolist() == [5.0 / 6, 1.5, 0.5]
    assert a.sum_abs["mlp"][0].tolist() == [4.0, 8.0, 2.0]  # the inputs are not modified


def test_head_scores_group_by_head_dim():
    profile = hand_profile()
    # head_dim 2 -> 3 heads: mean_abs per dim [0.25, 0.75, 0.5, 1.5, 2.0, 0.0]
    assert profile.head_scores("mean_abs", head_dim=2)[0].tolist() == [0.5, 1.0, 1.0]
    # head_dim 3 -> 2 heads
    assert profile.head_scores("mean_abs", head_dim=3)[0].tolist() == [0.5, 7.0 / 6.0]
    # l2 per dim [2, 0, 4, 6, 1, 3]
    assert profile.head_scores("l2", head_dim=2)[0].tolist() == [1.0, 5.0, 2.0]


def test_state_round_trip_copies():
    profile = hand_profile()
    state = profile.to_state()
    restored = ActivationProfile.from_state(state)
    assert (restored.n_samples, restored.n_tokens) == (2, 4)
    assert restored.sum_sq["attn"][0].tolist() == [4.0, 0.0, 16.0, 36.0, 1.0, 9.0]
    assert restored.sum["mlp"][0].tolist() == [-2.0, 8.0, 1.0]
    assert restored.block_cos == [3.0, 2.0]
    state["sum_abs"]["mlp"][0][0] = 100.0  # the state is a copy, not a view of the live profile
    assert profile.sum_abs["mlp"][0][0].item() == 4.0


# --------------------------------------------------------------------------- hooks and failures

def test_hooks_removed_after_profiling(model, sequences):
    before = all_hooks(model)
    seen_during = []
    spy = model.model.layers[0].register_forward_hook(lambda *args: seen_during.append(all_hooks(model)))
    try:
        after_spy = all_hooks(model)
        profile_activations(model, sequences[:2], batch_size=2)
    finally:
        spy.remove()
    # while profiling, one hook per site per layer was attached (the layer-output hook also takes the cosine) ...
    assert len(seen_during[0] - after_spy) == len(SITES) * NUM_LAYERS == 4 * NUM_LAYERS
    # ... and afterwards exactly the hooks that were there before are left
    assert all_hooks(model) == before


def test_hooks_removed_when_forward_raises(model, sequences, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in layer 1")

    before = all_hooks(model)
    monkeypatch.setattr(model.model.layers[1].mlp, "forward", broken)
    with pytest.raises(RuntimeError, match="^boom in layer 1$"):
        profile_activations(model, sequences[:3], batch_size=2)
    assert all_hooks(model) == before


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_activation_names_the_layer(model, sequences, bad):
    broken = copy.deepcopy(model)
    before = all_hooks(broken)
    with torch.no_grad():
        broken.model.layers[1].mlp.up_proj.weight[0, 0] = bad
    with pytest.raises(FloatingPointError, match=r"^non-finite activation at layer 1 \(mlp\) during profiling"):
        profile_activations(broken, sequences[:3], batch_size=2)
    assert all_hooks(broken) == before
    # the original model is untouched and still profiles
    assert torch.isfinite(model.model.layers[1].mlp.up_proj.weight).all()


# --------------------------------------------------------------------------- memory

def test_accumulated_size_independent_of_token_count(model):
    rng = random.Random(7)
    few = [[2] + [rng.randrange(4, 260) for _ in range(4)] for _ in range(2)]
    many = [[2] + [rng.randrange(4, 260) for _ in range(rng.randrange(4, 16))] for _ in range(20)]
    small = profile_activations(model, few, batch_size=4)
    large = profile_activations(model, many, batch_size=4)
    assert small.n_samples == 2 and large.n_samples == 20
    assert large.n_tokens > 10 * small.n_tokens

    def layout(profile):
        return {
            (kind, site): [tuple(t.shape) for t in getattr(profile, kind)[site]]
            for kind in ("sum", "sum_abs", "sum_sq") for site in SITES
        }

    assert layout(small) == layout(large)
    for kind in ("sum", "sum_abs", "sum_sq"):
        assert sorted(getattr(large, kind)) == sorted(SITES)
        numel = sum(t.numel() for site in SITES for t in getattr(large, kind)[site])
        assert numel == NUM_LAYERS * (128 + 64 + 128 + 64)
    assert len(small.block_cos) == len(large.block_cos) == NUM_LAYERS
    assert set(vars(large)) == {"n_samples", "n_tokens", "sum", "sum_abs", "sum_sq", "block_cos"}
