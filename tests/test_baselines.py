"""Baselines against brute-force references on a tiny 3-layer Gemma-2, plus one real cell per method.

Every reference is written from the weights and a hand-run forward pass (hooks, one unpadded sequence
at a time), never from the code under test.
"""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from conftest import MethodCall, compose_config, fp32_bound
from diet.config.identity import effective_config
from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.calib import sources
from diet.methods import calibrated
from diet.methods.diet import diet_task_masks
from diet.methods.flap import standardise
from diet.methods.shortgpt import layers_to_drop
from diet.models.adapters import parameter_counts
from diet.models.loaders import LoadedModel
from diet.models.tiny import byte_level_tokenizer, tiny_gemma2
from diet.dims.layers import dropped
from diet.dims.apply import apply_selection
from diet.run.cell import resolve
from diet.run.pipeline import run_cell
from diet.calib.profiler import ActivationProfile, profile_activations
from diet.export.checkpoint import load_pruned, save_pruned

LAYERS, WIDTH, HIDDEN = 3, 128, 64
LENGTHS = [5, 17, 30, 9, 12]


# --------------------------------------------------------------------------- fixtures and references

@pytest.fixture(scope="module")
def model():
    return tiny_gemma2(seed=0, num_hidden_layers=LAYERS)


def make_sequences(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[2] + [rng.randrange(4, 260) for _ in range(n - 1)] for n in LENGTHS]


@pytest.fixture(scope="module")
def sequences():
    return make_sequences(1234)


@pytest.fixture(scope="module")
def profile(model, sequences):
    return profile_activations(model, sequences, batch_size=2)


@torch.no_grad()
def hand_run(model, sequences):
    """Per layer: down_proj inputs A [tokens, 128], MLP inputs X [tokens, 64] (float64) and the
    per-token cosine between the layer's input and output."""
    layers = model.model.layers
    acts = {(kind, i): [] for kind in ("A", "X", "cos") for i in range(len(layers))}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda mod, args, i=i: acts[("A", i)].append(args[0][0].double())))
        handles.append(layer.mlp.gate_proj.register_forward_pre_hook(
            lambda mod, args, i=i: acts[("X", i)].append(args[0][0].double())))

        def cosine(mod, args, kwargs, out, i=i):
            before = (args[0] if args else kwargs["hidden_states"])[0].double()
            after = (out[0] if isinstance(out, tuple) else out)[0].double()
            acts[("cos", i)].append((before * after).sum(-1) / (before.norm(dim=-1) * after.norm(dim=-1)))

        handles.append(layer.register_forward_hook(cosine, with_kwargs=True))
    try:
        for seq in sequences:
            model.model(input_ids=torch.tensor([seq]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.cat(values) for key, values in acts.items()}


@pytest.fixture(scope="module")
def acts(model, sequences):
    return hand_run(model, sequences)


def weights(model, layer):
    mlp = model.model.layers[layer].mlp
    return tuple(m.weight.detach().double() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))


def activation_bounds(acts, layer) -> tuple[float, float]:
    """fp32_bound of sum_t a_t and of sum_t a_t^2 over the down_proj inputs of `layer` (any one channel):
    the profile (batched, padded) and the hand run (one sequence at a time) differ by float32 rounding of
    the activations, which follows each token's largest activation M_t (tests/test_profile.py
    rounding_bounds): sum_t fp32_bound(M_t) and 2 sum_t fp32_bound(M_t^2), depth every layer."""
    token_max = acts[("A", layer)].abs().amax(-1)
    return fp32_bound(token_max.sum(), LAYERS, WIDTH), 2 * fp32_bound(token_max.square().sum(), LAYERS, WIDTH)


def fluctuation_bound(model, acts, layer) -> torch.Tensor:
    """Per channel: var = E[a^2] - E[a]^2 moves by <= (b2 + 2 |E[a]| b1) / n, times the exact ||W_down_j||^2."""
    b1, b2 = activation_bounds(acts, layer)
    a = acts[("A", layer)]
    _, _, down = weights(model, layer)
    return (b2 + 2 * a.mean(0).abs() * b1) / len(a) * down.square().sum(0)


def bias_bound(model, acts, layer, keep) -> torch.Tensor:
    """Per output: bias_i = sum_{removed j} W_ij mean_j moves by <= sum_j |W_ij| b1 / n."""
    b1, _ = activation_bounds(acts, layer)
    _, _, down = weights(model, layer)
    return down[:, ~keep].abs().sum(1) * b1 / len(acts[("A", layer)])


def kept_count(width: int, sparsity: float) -> int:
    return width - math.floor(sparsity * width + 0.5)


def top_per_layer(scores, sparsity):
    result = []
    for layer in scores:
        mask = torch.zeros(len(layer), dtype=torch.bool)
        mask[torch.argsort(torch.as_tensor(layer), descending=True)[: kept_count(len(layer), sparsity)]] = True
        result.append(mask)
    return result


def loaded(model) -> LoadedModel:
    return LoadedModel(model, byte_level_tokenizer(), "tiny", "cpu", "float32", "fingerprint")


def make_ctx(model, tasks=("arc_easy",), **cfg_overrides) -> MethodCall:
    cfg = {
        "sparsity": 0.25, "seed": 0, "model": {"add_bos_token": True},
        "calib": {"n": 4, "max_length": 32, "batch_size": 2, "with_answer": True, "source": "tasks"},
        # every method's protocol at its default (each method takes its own keys: MethodCall.inputs)
        "method": {"profile": {"stat": "mean_abs"}, "mask": {"scope": "layer", "min_keep_fraction": 0.05},
                   "merge": "vote", "vote": {"threshold": 0.5, "exact": True}, "min_keep_fraction": 0.05},
    }
    for key, value in cfg_overrides.items():  # a__b__c=value sets cfg[a][b][c]
        *parents, leaf = key.split("__")
        node = cfg
        for parent in parents:
            node[parent] = dict(node[parent])
            node = node[parent]
        node[leaf] = value
    return MethodCall(loaded(model), cfg, list(tasks))


@pytest.fixture
def use_profiles(monkeypatch):
    """Calibration-based methods read these profiles instead of profiling task data."""
    def install(profiles: dict[str, ActivationProfile]) -> None:
        fake = lambda ctx, samples: {task: profiles[task] for task in samples.tasks}  # noqa: E731
        monkeypatch.setattr(calibrated, "task_profiles", fake)
        monkeypatch.setattr("diet.methods.diet.task_profiles", fake)
    return install


def select(name, call: MethodCall):
    return call.select(name)


# --------------------------------------------------------------------------- random, magnitude

def test_random_is_seeded_and_exact_per_layer(model):
    first = select("random", make_ctx(model, seed=3)).kept("mlp")
    again = select("random", make_ctx(model, seed=3)).kept("mlp")
    other = select("random", make_ctx(model, seed=4)).kept("mlp")
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(not torch.equal(a, b) for a, b in zip(first, other))
    assert [int(m.sum()) for m in first] == [96] * LAYERS
    assert any(not torch.equal(first[0], layer) for layer in first[1:])  # layers get their own draws


def test_magnitude_scores_equal_flap_mag_sp(model):
    """FLAP's prune_magnitude_sp: torch.norm(W_down, dim=0), the down column's L2 norm, nothing else."""
    from diet.methods.magnitude import magnitude_scores

    expected, with_rows = [], []
    for layer in range(LAYERS):
        gate, up, down = weights(model, layer)
        column = [sum(float(down[i, j]) ** 2 for i in range(HIDDEN)) for j in range(WIDTH)]
        expected.append(torch.tensor([math.sqrt(c) for c in column], dtype=torch.float64))
        rows = [sum(float(w) ** 2 for w in gate[j]) + sum(float(w) ** 2 for w in up[j]) for j in range(WIDTH)]
        with_rows.append(torch.tensor([math.sqrt(c + r) for c, r in zip(column, rows)], dtype=torch.float64))
    for got, want in zip(magnitude_scores(model), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    selection = select("magnitude", make_ctx(model, sparsity=0.3))
    assert all(torch.equal(a, b) for a, b in zip(selection.kept("mlp"), top_per_layer(expected, 0.3)))
    assert selection.stats["kept_per_layer"] == [kept_count(WIDTH, 0.3)] * LAYERS
    # the former score (gate and up rows too) selects other channels: this test tells them apart
    assert any(not torch.equal(a, b) for a, b in zip(selection.kept("mlp"), top_per_layer(with_rows, 0.3)))


# --------------------------------------------------------------------------- wanda_sp

@torch.no_grad()
def wanda_sp_reference(model, sequences, sparsity, heads=False):
    """FLAP's prune_wanda_sp by hand: layer l is calibrated on sequences run one at a time through the
    model with the removed channels of layers < l zeroed (their down_proj input columns; heads: o_proj
    input columns); score_j = mean_i |W[i, j]| * sqrt(sum_t x_tj^2 / n_samples); top keep_count."""
    layers, head_dim = model.model.layers, model.config.head_dim
    keep_mlp, keep_heads, handles = [], [], []
    for layer in range(len(layers)):
        sums = {"A": torch.zeros(WIDTH, dtype=torch.float64), "Z": None}

        def grab(kind):
            def hook(mod, args):
                x = args[0][0].double()
                sums[kind] = x.square().sum(0) if sums[kind] is None else sums[kind] + x.square().sum(0)
            return hook

        grabbers = [layers[layer].mlp.down_proj.register_forward_pre_hook(grab("A"))]
        if heads:
            grabbers.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(grab("Z")))
        for seq in sequences:
            model.model(input_ids=torch.tensor([seq]), use_cache=False)
        for handle in grabbers:
            handle.remove()
        down = layers[layer].mlp.down_proj.weight.double().abs()
        score = torch.tensor([sum(float(down[i, j]) for i in range(HIDDEN)) / HIDDEN
                              * math.sqrt(float(sums["A"][j]) / len(sequences)) for j in range(WIDTH)],
                             dtype=torch.float64)
        keep_mlp.append(top_per_layer([score], sparsity)[0])
        zero = {"mlp": keep_mlp[-1].float()}
        if heads:
            o = layers[layer].self_attn.o_proj.weight.double().abs()
            column = (o.mean(0) * (sums["Z"] / len(sequences)).sqrt())
            head_score = column.view(-1, head_dim).sum(1)
            per_group = head_score.numel() // model.config.num_key_value_heads
            keep = torch.cat([top_per_layer([g], sparsity)[0] for g in head_score.split(per_group)])
            keep_heads.append(keep)
            zero["heads"] = keep.float().repeat_interleave(head_dim)
        handles.append(layers[layer].mlp.down_proj.register_forward_pre_hook(
            lambda mod, args, m=zero["mlp"]: (args[0] * m,)))
        if heads:
            handles.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(
                lambda mod, args, m=zero["heads"]: (args[0] * m,)))
    for handle in handles:
        handle.remove()
    return keep_mlp, keep_heads


@pytest.fixture
def use_sequences(monkeypatch, sequences):
    monkeypatch.setattr("diet.methods.wanda_sp.calibration_sequences", lambda ctx, calibration, reference: sequences)


def test_wanda_sp_equals_flap_prune_wanda_sp(model, sequences, acts, use_sequences):
    expected, _ = wanda_sp_reference(model, sequences, 0.4)
    selection = select("wanda_sp", make_ctx(model, sparsity=0.4))
    assert all(torch.equal(a, b) for a, b in zip(selection.kept("mlp"), expected))
    assert selection.stats["calib_tokens"] == sum(LENGTHS) and selection.stats["sequential"] is True
    assert [int(m.sum()) for m in selection.kept("mlp")] == [kept_count(WIDTH, 0.4)] * LAYERS
    # what the reference is not: the former score with a gate/up term, or scoring all layers on the dense
    # model (no sequential calibration) select other channels on this model
    old = []
    for layer in range(LAYERS):
        gate, up, down = weights(model, layer)
        a_norm, x_norm = acts[("A", layer)].square().sum(0).sqrt(), acts[("X", layer)].square().sum(0).sqrt()
        old.append(down.abs().sum(0) * a_norm + (gate.abs() + up.abs()) @ x_norm)
    assert any(not torch.equal(a, b) for a, b in zip(selection.kept("mlp"), top_per_layer(old, 0.4)))
    dense_scored = [down.abs().mean(0) * acts[("A", l)].square().sum(0).sqrt()
                    for l, (_, _, down) in ((l, weights(model, l)) for l in range(LAYERS))]
    assert any(not torch.equal(a, b) for a, b in zip(selection.kept("mlp")[1:], top_per_layer(dense_scored, 0.4)[1:]))
    assert torch.equal(selection.kept("mlp")[0], top_per_layer(dense_scored, 0.4)[0])  # layer 0 sees no pruning


def test_wanda_sp_replayed_passes_equal_full_passes(sequences):
    """Five layers: passes 3 and 4 skip layers through stubs and replay buffered inputs
    (diet/calib/sequential.py); the masks are those of full forward passes (the hand-made reference)."""
    from diet.methods.wanda_sp import sequential_wanda_sp

    deep = tiny_gemma2(seed=3, num_hidden_layers=5)
    expected, _ = wanda_sp_reference(deep, sequences, 0.3)
    got, tokens = sequential_wanda_sp(deep, sequences, 0.3, ("mlp",), batch_size=2)
    assert all(torch.equal(a, b) for a, b in zip(got["mlp"], expected)) and tokens == sum(LENGTHS)
    assert all("forward" not in vars(layer) for layer in deep.model.layers)  # stubs removed


def test_wanda_sp_heads_and_channels_from_one_pass_per_layer(use_sequences, sequences):
    gqa = tiny_gemma2(seed=0, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2)
    mlp, heads = wanda_sp_reference(gqa, sequences, 0.5, heads=True)
    selection = select("wanda_sp", make_ctx(gqa, sparsity=0.5, dims="mlp+heads"))
    assert all(torch.equal(a, b) for a, b in zip(selection.kept("mlp"), mlp))
    assert all(torch.equal(a, b) for a, b in zip(selection.kept("heads"), heads))
    assert [int(m.sum()) for m in selection.kept("heads")] == [2] * LAYERS  # 1 of 2 per KV group


# --------------------------------------------------------------------------- flap

def flap_reference(model, acts, sparsity, floor_fraction):
    """Fluctuation scores, standardised scores, the global allocation and the bias, by hand."""
    raw, z, means = [], [], []
    for layer in range(LAYERS):
        a = acts[("A", layer)]
        mean = a.mean(0)
        var = ((a - mean) ** 2).mean(0)
        _, _, down = weights(model, layer)
        s = torch.tensor([float(var[j]) * sum(float(down[i, j]) ** 2 for i in range(HIDDEN)) for j in range(WIDTH)],
                         dtype=torch.float64)
        mu = s.sum() / WIDTH
        sd = math.sqrt(float(((s - mu) ** 2).sum()) / (WIDTH - 1))
        raw.append(s), z.append((s - mu) / sd), means.append(mean)
    # allocation: every layer's floor first, then the best remaining channels of all layers together
    total = LAYERS * kept_count(WIDTH, sparsity)
    floor = max(1, math.ceil(floor_fraction * WIDTH))
    keep = [torch.zeros(WIDTH, dtype=torch.bool) for _ in range(LAYERS)]
    for layer in range(LAYERS):
        keep[layer][torch.argsort(z[layer], descending=True)[:floor]] = True
    candidates = sorted(((float(z[l][j]), l, j) for l in range(LAYERS) for j in range(WIDTH) if not keep[l][j]),
                        reverse=True)
    for _, l, j in candidates[: total - LAYERS * floor]:
        keep[l][j] = True
    bias = []
    for layer in range(LAYERS):
        _, _, down = weights(model, layer)
        bias.append(sum(down[:, j] * means[layer][j] for j in range(WIDTH) if not keep[layer][j]))
    return raw, z, keep, bias, means


def test_flap_scores_allocation_and_bias(model, profile, acts, use_profiles):
    from diet.methods.flap import fluctuation_scores

    use_profiles({"arc_easy": profile})
    raw, z, keep, bias, _ = flap_reference(model, acts, 0.5, 0.3)
    for layer, (got, want) in enumerate(zip(fluctuation_scores(model, profile), raw)):
        assert bool(((got - want).abs() <= fluctuation_bound(model, acts, layer)).all())
    for got, want in zip(standardise(raw), z):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert abs(float(got.mean())) < 1e-12 and float(got.std()) == pytest.approx(1.0)
    selection = select("flap", make_ctx(model, sparsity=0.5, method__min_keep_fraction=0.3))
    assert all(torch.equal(a, b) for a, b in zip(selection.kept("mlp"), keep))
    kept = [int(m.sum()) for m in selection.kept("mlp")]
    assert sum(kept) == LAYERS * 64 and min(kept) >= math.ceil(0.3 * WIDTH)
    assert len(set(kept)) > 1  # adaptive: the layers really get different widths
    for layer, (got, want) in enumerate(zip(selection.bias["mlp"], bias)):
        assert got.dtype == want.dtype
        assert bool(((got - want).abs() <= bias_bound(model, acts, layer, keep[layer])).all())
    assert selection.stats["kept_per_layer"] == kept and selection.stats["bias"] is True
    # allocation=layer is FLAP's uniform variant; bias=false drops the compensation
    uniform = select("flap", make_ctx(model, sparsity=0.5, method={"allocation": "layer", "bias": False}))
    assert [int(m.sum()) for m in uniform.kept("mlp")] == [64] * LAYERS and uniform.bias.get("mlp") is None


def test_flap_bounds_catch_a_profile_one_token_off(model, acts, use_profiles):
    """A profile that misses one token (a padding off-by-one) moves the fluctuation scores and the bias far
    beyond their rounding bounds."""
    from diet.methods.flap import fluctuation_scores

    sequences = make_sequences(1234)
    sequences[2] = sequences[2][:-1]
    wrong = profile_activations(model, sequences, batch_size=2)
    use_profiles({"arc_easy": wrong})
    raw, _, keep, bias, _ = flap_reference(model, acts, 0.5, 0.3)
    score_gaps = [float(((got - want).abs() / fluctuation_bound(model, acts, layer)).max())
                  for layer, (got, want) in enumerate(zip(fluctuation_scores(model, wrong), raw))]
    selection = select("flap", make_ctx(model, sparsity=0.5, method__min_keep_fraction=0.3))
    bias_gaps = [float(((got - want).abs() / bias_bound(model, acts, layer, keep[layer])).max())
                 for layer, (got, want) in enumerate(zip(selection.bias["mlp"], bias))]
    assert min(score_gaps) > 100 and min(bias_gaps) > 100, (score_gaps, bias_gaps)


def test_flap_bias_equals_mean_replacement(model, profile, acts, use_profiles):
    """Pruned MLP + bias == dense MLP with the removed channels' activations set to their calibration mean."""
    use_profiles({"arc_easy": profile})
    *_, means = flap_reference(model, acts, 0.5, 0.05)
    selection = select("flap", make_ctx(model, sparsity=0.5))
    pruned = copy.deepcopy(model)
    apply_selection(pruned, selection)
    x = torch.randn(1, 7, HIDDEN, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for layer in range(LAYERS):
            mlp = model.model.layers[layer].mlp
            a = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
            removed = ~selection.kept("mlp")[layer]
            a[..., removed] = means[layer][removed].float()
            expected = mlp.down_proj(a)
            got = pruned.model.layers[layer].mlp(x)
            assert pruned.model.layers[layer].mlp.down_proj.bias is not None
            # two float32 sums of up to 128 terms (gate/up, then down), scaled by the down terms' |W_ij a_j|
            bound = fp32_bound(mlp.down_proj.weight.abs() @ a[0].abs().T, depth=2, length=WIDTH)
            assert (got - expected).abs().max() <= bound
            without_bias = got - pruned.model.layers[layer].mlp.down_proj.bias
            assert (without_bias - expected).abs().max() > 100 * bound  # a dropped bias (a real bug) is caught


def test_flap_bias_survives_save_and_load(model, profile, use_profiles, tmp_path):
    use_profiles({"arc_easy": profile})
    pruned = copy.deepcopy(model)
    apply_selection(pruned, select("flap", make_ctx(model, sparsity=0.5)))
    ids = torch.tensor([make_sequences(9)[2]])
    with torch.no_grad():
        before = pruned(input_ids=ids).logits
    save_pruned(pruned, byte_level_tokenizer(), tmp_path / "flap")
    restored, _, _ = load_pruned(tmp_path / "flap")
    with torch.no_grad():
        after = restored(input_ids=ids).logits
    assert all(layer.mlp.down_proj.bias is not None for layer in restored.model.layers)
    assert parameter_counts(restored) == parameter_counts(pruned)
    assert torch.equal(before, after)


# --------------------------------------------------------------------------- activation_pooled, diet_oracle

@pytest.mark.parametrize("scope", ["layer", "global"])
def test_activation_pooled_equals_diet_with_one_task(model, profile, use_profiles, scope):
    use_profiles({"arc_easy": profile})
    ctx = make_ctx(model, sparsity=0.4, method__mask__scope=scope)
    pooled, diet = select("activation_pooled", ctx), select("diet", ctx)
    assert all(torch.equal(a, b) for a, b in zip(pooled.kept("mlp"), diet.kept("mlp")))
    assert pooled.stats["mask_hash"] == diet.stats["mask_hash"]


def test_activation_pooled_pools_the_tasks(model, profile, acts, use_profiles):
    other = profile_activations(model, make_sequences(77), batch_size=2)
    use_profiles({"arc_easy": profile, "rte": other})
    ctx = make_ctx(model, tasks=("arc_easy", "rte"), sparsity=0.4)
    all_acts = hand_run(model, make_sequences(1234) + make_sequences(77))
    expected = top_per_layer([all_acts[("A", l)].abs().mean(0) for l in range(LAYERS)], 0.4)
    assert all(torch.equal(a, b) for a, b in zip(select("activation_pooled", ctx).kept("mlp"), expected))


def test_diet_oracle_gives_each_task_its_own_mask(model, profile, acts, use_profiles):
    other = profile_activations(model, make_sequences(77), batch_size=2)
    use_profiles({"arc_easy": profile, "rte": other})
    ctx = make_ctx(model, tasks=("arc_easy", "rte"), sparsity=0.4)
    selection = select("diet_oracle", ctx)
    singles = diet_task_masks(ctx.ctx, ctx.inputs("diet_oracle")).parts["mlp"].masks
    assert selection.kept("mlp") is None and list(selection.per_task) == ["arc_easy", "rte"]
    task_acts = {"arc_easy": acts, "rte": hand_run(model, make_sequences(77))}
    for task, own in selection.per_task.items():
        expected = top_per_layer([task_acts[task][("A", l)].abs().mean(0) for l in range(LAYERS)], 0.4)
        assert all(torch.equal(a, b) for a, b in zip(own.kept("mlp"), expected))
        assert all(torch.equal(a, b) for a, b in zip(own.kept("mlp"), singles[task]))
    assert selection.stats["per_task"]["arc_easy"]["mask_hash"] != selection.stats["per_task"]["rte"]["mask_hash"]
    assert 0 < selection.stats["jaccard"]["arc_easy|rte"] < 1


# --------------------------------------------------------------------------- shortgpt

def test_layers_to_drop_is_nearest_achievable():
    influence, params = [0.3, 0.1, 0.4, 0.2], [10, 20, 30, 40]  # removal order: 1, 3, 0 (never all)
    assert layers_to_drop(influence, params, 55) == ([1, 3], 60)
    assert layers_to_drop(influence, params, 40) == ([1], 20)      # tie 20 vs 60: the smaller k
    assert layers_to_drop(influence, params, 9) == ([], 0)
    assert layers_to_drop(influence, params, 1000) == ([0, 1, 3], 70)  # at least one layer stays


@pytest.mark.parametrize("sparsity", [0.25, 0.6])
def test_shortgpt_drops_lowest_influence_layers(model, profile, acts, use_profiles, sparsity):
    use_profiles({"arc_easy": profile})
    influence = [1 - float(acts[("cos", l)].mean()) for l in range(LAYERS)]
    # 1 - mean cosine of float32 vectors: fp32_bound(1) (tests/test_profile.py checks it catches a wrong token)
    assert all(abs(a - b) <= fp32_bound(1.0, LAYERS, WIDTH) for a, b in zip(profile.block_influence(), influence))
    layer_params = [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]
    target = LAYERS * (WIDTH - kept_count(WIDTH, sparsity)) * 3 * HIDDEN
    order = sorted(range(LAYERS), key=lambda l: influence[l])
    candidates = [sum(layer_params[l] for l in order[:k]) for k in range(LAYERS)]
    best_k = min(range(LAYERS), key=lambda k: (abs(candidates[k] - target), k))
    selection = select("shortgpt", make_ctx(model, sparsity=sparsity))
    assert dropped(selection.kept("layers")) == sorted(order[:best_k])
    stats = selection.stats
    assert stats["target_removed_parameters"] == target and stats["actual_removed_parameters"] == candidates[best_k]
    assert all(abs(a - b) <= fp32_bound(1.0, LAYERS, WIDTH) for a, b in zip(stats["block_influence"], influence))
    assert stats["dropped_layers"] == dropped(selection.kept("layers")) and selection.kept("mlp") is None
    pruned = copy.deepcopy(model)
    apply_selection(pruned, selection)
    assert parameter_counts(model)["total"] - parameter_counts(pruned)["total"] == candidates[best_k]


# --------------------------------------------------------------------------- calibration from a text file

TEXT = "The quick brown fox jumps over the lazy dog. " * 40  # 1800 bytes = 1800 byte-level tokens


def reference_stream_windows(tokens, n, body, seed):
    """FLAP's lib/data.py:get_wikitext2 sampling: random.seed(seed); i = randint(0, len - seqlen - 1)."""
    rng = random.Random(seed)
    return [tokens[(i := rng.randint(0, len(tokens) - body - 1)) : i + body] for _ in range(n)]


def reference_document_windows(documents, n, body, seed):
    """Wanda's / FLAP's get_c4 sampling: draw documents until one is longer than seqlen, then a start."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        while True:
            tokens = documents[rng.randint(0, len(documents) - 1)]
            if len(tokens) > body:
                break
        i = rng.randint(0, len(tokens) - body - 1)
        out.append(tokens[i : i + body])
    return out


def test_stream_source_profiles_seeded_windows(model, tmp_path, isolated_cache):
    path = tmp_path / "calib.txt"
    path.write_text(TEXT, encoding="utf-8")
    ctx = make_ctx(model, calib__source=str(path), calib__windows=3, calib__window_length=20)
    profile = calibrated.calibration_profile(ctx.ctx, ctx.inputs("wanda_sp").calibration, (128, 128))
    notes = ctx.notes["calib_source"]
    assert ctx.notes["profiles_computed"] == 1 and notes["sha256"] and notes["layout"] == "stream"
    assert (notes["windows"], notes["window_length"], notes["tokens"]) == (3, 20, 60)
    tokens = byte_level_tokenizer()(TEXT, add_special_tokens=False).input_ids
    sequences = [[2] + w for w in reference_stream_windows(tokens, 3, 19, seed=0)]  # BOS + 19 text tokens
    expected = profile_activations(model, sequences, batch_size=2)
    assert profile.n_tokens == 60
    for layer in range(LAYERS):
        torch.testing.assert_close(profile.sum_sq["mlp"][layer], expected.sum_sq["mlp"][layer])
    again = make_ctx(model, calib__source=str(path), calib__windows=3, calib__window_length=20)
    calibrated.calibration_profile(again.ctx, again.inputs("wanda_sp").calibration, (128, 128))
    assert again.notes["profiles_cached"] == 1 and again.notes["calib_source"]["tokens"] == 60
    path.write_text(TEXT.upper(), encoding="utf-8")  # new content: new cache entry
    changed = make_ctx(model, calib__source=str(path), calib__windows=3, calib__window_length=20)
    calibrated.calibration_profile(changed.ctx, changed.inputs("wanda_sp").calibration, (128, 128))
    assert changed.notes["profiles_computed"] == 1
    with pytest.raises(DietConfigError, match="fewer than one window"):
        short = make_ctx(model, calib__source=str(path), calib__windows=3, calib__window_length=5000)
        calibrated.calibration_profile(short.ctx, short.inputs("wanda_sp").calibration, (128, 128))


def test_document_source_samples_like_get_c4(model, tmp_path):
    import json

    from diet.calib.generic_text import sample_windows

    rng = random.Random(7)
    texts = ["".join(rng.choice("abcdefgh ") for _ in range(rng.randrange(5, 60))) for _ in range(30)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t, "url": "x"}) + "\n" for t in texts), encoding="utf-8")
    tokenizer = byte_level_tokenizer()
    encoded = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    drawn = sample_windows(path, tokenizer, n=6, length=25, seed=3, add_bos=True)
    assert drawn.layout == "documents" and all(len(s) == 25 and s[0] == 2 for s in drawn.sequences)
    assert [s[1:] for s in drawn.sequences] == reference_document_windows(encoded, 6, 24, seed=3)
    assert drawn.sequences == sample_windows(path, tokenizer, 6, 25, 3, True).sequences  # seeded
    assert drawn.sequences != sample_windows(path, tokenizer, 6, 25, 4, True).sequences
    no_bos = sample_windows(path, tokenizer, 6, 25, 3, False)
    assert [s for s in no_bos.sequences] == reference_document_windows(encoded, 6, 25, seed=3)
    with pytest.raises(DietConfigError, match="no document is longer than 99 tokens"):
        sample_windows(path, tokenizer, 2, 100, 0, True)


def test_named_c4_source_is_the_data_folders_file(model, offline_data):
    from diet.calib.generic_text import sample_windows

    cfg = {"calib": {"source": "c4"}, "data": {"dir": str(offline_data)}}
    path = sources.source_file(cfg)
    # the data folder as diet.paths.data_dir resolves it (CI links ../shared: compare real paths)
    assert path == offline_data.resolve() / "text" / "c4_en_train_head1000.jsonl" and path.is_file()
    assert sources.window_plan({"calib": {"windows": None, "window_length": None}}, (128, 128)) == (128, 128)
    assert sources.window_plan({"calib": {"windows": 7, "window_length": None}}, (1024, 128)) == (7, 128)
    windows = sample_windows(path, byte_level_tokenizer(), 4, 64, 0, True).sequences
    assert len(windows) == 4 and all(len(w) == 64 for w in windows)


def test_named_source_needs_the_data_folder(monkeypatch):
    monkeypatch.delenv("DIET_DATA_DIR")
    with pytest.raises(DietConfigError, match="calib.source='c4' is read from the offline data folder"):
        sources.source_file({"calib": {"source": "c4"}, "data": {"dir": None}})


def cell_hash(*overrides):
    cfg = compose_config(["model=tiny_gemma2", "tasks=[arc_easy,rte]", *overrides])
    return resolve(cfg).config_hash


def test_config_checks_calib_source_and_method_options(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DietConfigError, match=f"calib.source='{missing}': no such file"):
        validate(compose_config(["model=tiny_gemma2", "method=flap", f"calib.source={missing}"]))
    with pytest.raises(DietConfigError, match="method.allocation='per_head'"):
        validate(compose_config(["model=tiny_gemma2", "method=flap", "method.allocation=per_head"]))
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same text"), b.write_text("same text")
    # a file source counts by its content, not its path; DIET ignores the source altogether
    assert cell_hash("method=flap", f"calib.source={a}") == cell_hash("method=flap", f"calib.source={b}")
    assert cell_hash("method=flap", f"calib.source={a}") != cell_hash("method=flap")
    assert cell_hash("method=diet", f"calib.source={a}") == cell_hash("method=diet")
    # generic text: the windows are part of the cell, the task-sample options are not
    assert cell_hash("method=flap", f"calib.source={a}", "calib.windows=7") != cell_hash("method=flap", f"calib.source={a}")
    assert cell_hash("method=flap", f"calib.source={a}", "calib.n=7") == cell_hash("method=flap", f"calib.source={a}")
    assert cell_hash("method=flap", "calib.n=7") != cell_hash("method=flap")  # task samples: n counts
    # calib.windows=null resolves to the method's reference count, so writing it out is the same cell
    assert cell_hash("method=flap", f"calib.source={a}", "calib.windows=1024") == cell_hash("method=flap", f"calib.source={a}")
    cfg = compose_config(["model=tiny_gemma2", "method=wanda_sp", "calib.source=c4"])
    method = effective_config(cfg, ["arc_easy"])["method"]
    source = method["inputs"]["calibration"]
    assert source["layout"] == "documents" and (source["windows"], source["window_length"]) == (128, 128)
    assert "file" not in source and len(source["file_sha256"]) == 64 and method["version"] == 2


def test_unknown_method_lists_the_available_ones(tmp_path):
    cfg = compose_config(["model=tiny_gemma2", "method=diet", f"results_dir={tmp_path}"])
    cfg["method"]["name"] = "flapp"
    with pytest.raises(DietConfigError) as error:
        run_cell(cfg)
    message = str(error.value)
    assert "unknown method 'flapp': did you mean 'flap'?" in message
    for name in ("activation_pooled", "dense", "diet", "diet_oracle", "flap", "magnitude", "random",
                 "shortgpt", "wanda_sp"):
        assert name in message
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="wanda_sp"):  # the command line lists them too
        compose_config(["method=flapp"])


# --------------------------------------------------------------------------- one real cell per method

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One profile cache for all the cells below: the task profiles are computed once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


CELL = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "calib.max_length=64",
        "wandb.mode=disabled"]
CHANNELS = 2 * 128  # 2 layers of 128 MLP channels


@pytest.mark.parametrize("method", ["random", "magnitude", "wanda_sp", "flap", "activation_pooled",
                                    "diet_oracle", "shortgpt"])
def test_cell_per_method(method, shared_cache, tmp_path, monkeypatch):
    import diet.eval.evaluate

    calls = []
    real = diet.eval.evaluate.evaluate
    monkeypatch.setattr(diet.eval.evaluate, "evaluate", lambda m, tok, tasks, *a, **k: calls.append(list(tasks)) or
                        real(m, tok, tasks, *a, **k))
    sparsity = 0.6 if method == "shortgpt" else 0.25
    record, _ = run_cell(compose_config([*CELL, f"method={method}", f"sparsity={sparsity}",
                                         f"results_dir={tmp_path}"]))
    assert record["method"] == method and set(record["tasks"]) == {"arc_easy", "rte"}
    params = record["parameters"]
    removed = params["before"]["total"] - params["after"]["total"]
    if method == "shortgpt":
        assert record["mask"]["dropped_layers"] and len(record["mask"]["dropped_layers"]) == 1
        assert record["sparsity"]["actual"] == pytest.approx(0.5)  # one of two layers
        assert removed == record["mask"]["actual_removed_parameters"] == 49408
        assert record["mask"]["target_removed_parameters"] == 2 * 77 * 3 * 64
    else:
        assert record["sparsity"]["actual"] == pytest.approx(0.25)
        assert record["sparsity"]["mlp_channels_after"] == 0.75 * CHANNELS
        bias = 2 * 64 if method == "flap" else 0  # FLAP adds one down_proj bias per layer
        assert removed == 2 * 32 * 3 * 64 - bias
        assert record["mask"]["actual_sparsity"] == pytest.approx(0.25) and record["mask"]["mask_hash"]
    assert params["removed_fraction_total"] > 0 and params["removed_fraction_non_embedding"] > 0
    if method == "diet_oracle":
        assert calls == [["arc_easy"], ["rte"]]  # one pruned copy and one evaluation per task
        assert set(record["mask"]["per_task"]) == {"arc_easy", "rte"}
    else:
        assert calls == [["arc_easy", "rte"]]
