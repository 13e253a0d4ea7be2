"""`dims`: query heads (GQA) and hidden dimensions besides MLP channels, through mask -> prune -> save/load
-> run_cell, plus per-dimension accounting and sparsity_of=params. Tiny Gemma-2 with 4 query heads in 2
KV groups; one real Gemma-3 270M check at the end (real_model)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import MethodCall, EPS32, compose_config, left_padded_batch, logits, logits_bound
from diet.dims.accounting import removed_parameters, solve_dim_sparsity, unit_parameters
from diet.dims.choice import dim_parts, scored_dims
from diet.dims.heads import HeadLayout, select_heads
from diet.methods.activation_scoring import SCORING, equalize_groups
from diet.config.identity import config_hash, effective_config
from diet.config.validate import validate
from diet.dims.shapes import record_shapes
from diet.errors import DietConfigError
from diet.methods import MaskSelection
from diet.methods import calibrated
from diet.models.adapters import adapter_for, parameter_counts
from diet.models.loaders import LoadedModel
from diet.models.tiny import byte_level_tokenizer, tiny_gemma2
from diet.dims.apply import apply_selection
from diet.run.pipeline import run_cell
from diet.calib.profiler import profile_activations
from diet.export.checkpoint import load_pruned, save_pruned
from diet.prune.attention import (check_head_mask, prune_attention_heads, prune_kv_groups, zero_attention_heads,
                                  zero_kv_groups)
from diet.prune.hidden import prune_hidden

LAYERS, HEADS, KV, HEAD_DIM, HIDDEN = 3, 4, 2, 32, 64
# per layer, per query head (groups [0, 1] and [2, 3]): 1 + 1, 2 + 2 (nothing removed), 1 + 1
HEAD_KEEP = [[True, False, False, True], [True, True, True, True], [False, True, True, False]]


def bools(rows) -> list[torch.Tensor]:
    return [torch.tensor(row, dtype=torch.bool) for row in rows]


def swap_one_head(keep: list[torch.Tensor], layer: int, group_size: int) -> list[torch.Tensor]:
    """The head mask with one removed head of `layer` swapped for a kept head of its KV group (the mask
    stays valid): the smallest real head-masking bug, which the rounding bounds must still catch."""
    keep = [mask.clone() for mask in keep]
    row = keep[layer]
    removed = int((~row).nonzero()[0])
    start = removed - removed % group_size
    kept = next(head for head in range(start, start + group_size) if row[head])
    row[removed], row[kept] = True, False
    return keep


def hidden_keep(width: int = HIDDEN, drop_every: int = 4) -> torch.Tensor:
    keep = torch.ones(width, dtype=torch.bool)
    keep[1::drop_every] = False
    return keep


@pytest.fixture
def model():
    return tiny_gemma2(seed=0, num_hidden_layers=LAYERS)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return left_padded_batch()



# --------------------------------------------------------------------------- heads


def test_heads_sliced_equal_masked_with_gqa_and_left_padding(model, batch):
    keep = bools(HEAD_KEEP)
    dense = logits(model, batch)
    masked = logits(zero_attention_heads(copy.deepcopy(model), keep), batch)
    bound = logits_bound(model, masked)
    sliced_model = prune_attention_heads(model, keep)
    sliced = logits(sliced_model, batch)
    assert (masked - dense).abs().max() > 1e-2  # the mask really changes the model
    assert (sliced - masked).abs().max() <= bound  # float32 rounding only (measured: 0)
    adapter = adapter_for(sliced_model)
    record_shapes(sliced_model)
    assert adapter.head_counts() == [2, 4, 2] and model.config.diet_pruning["num_heads"] == [2, 4, 2]
    groups = [layer.self_attn.num_key_value_groups for layer in adapter.layers()]
    assert groups == [1, 2, 1]
    for layer, count in enumerate([2, 4, 2]):
        attn = adapter.attention(layer)
        assert tuple(attn.q.weight.shape) == (count * HEAD_DIM, HIDDEN)
        assert tuple(attn.o.weight.shape) == (HIDDEN, count * HEAD_DIM)
        assert tuple(attn.k.weight.shape) == tuple(attn.v.weight.shape) == (KV * HEAD_DIM, HIDDEN)  # KV heads stay
    assert model.config.num_attention_heads == HEADS


@pytest.mark.parametrize("layer", [0, 2])
def test_heads_bound_catches_one_wrong_head(model, batch, layer):
    keep = bools(HEAD_KEEP)
    masked = logits(zero_attention_heads(copy.deepcopy(model), keep), batch)
    sliced = logits(prune_attention_heads(model, swap_one_head(keep, layer, HEADS // KV)), batch)
    assert (sliced - masked).abs().max() > 1000 * logits_bound(model, masked)


def test_sliced_heads_are_the_kept_blocks(model):
    original = [copy.deepcopy(adapter_for(model).attention(i)) for i in range(LAYERS)]
    prune_attention_heads(model, bools(HEAD_KEEP))
    for layer, row in enumerate(HEAD_KEEP):
        channels = torch.tensor(row).repeat_interleave(HEAD_DIM)
        attn = adapter_for(model).attention(layer)
        assert torch.equal(attn.q.weight, original[layer].q.weight[channels])
        assert torch.equal(attn.o.weight, original[layer].o.weight[:, channels])


def test_generate_after_head_pruning(model):
    prune_attention_heads(model, bools(HEAD_KEEP))
    prompt = byte_level_tokenizer()(["hello", "a longer prompt"], return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, prompt["input_ids"].shape[1] + 4)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[True, True, True, False]] + HEAD_KEEP[1:], r"keeps \[2, 1\] query heads in its 2 KV groups"),
        ([[False, False, True, True]] + HEAD_KEEP[1:], r"keeps \[0, 2\] query heads"),
        ([[True, True, True]] + HEAD_KEEP[1:], r"length 4"),
    ],
)
def test_head_mask_must_respect_gqa(model, rows, message):
    with pytest.raises(DietConfigError, match=message):
        check_head_mask(model, bools(rows))


def test_select_heads_keeps_the_same_count_per_group():
    # Gemma-3 270M: 4 query heads, 1 KV head -> 25% keeps 3
    gemma = HeadLayout(groups=(1, 1), group_size=(4, 4))
    scores = [torch.tensor([0.4, 0.1, 0.9, 0.5]), torch.tensor([1.0, 2.0, 3.0, 4.0])]
    assert [m.tolist() for m in select_heads(scores, 0.25, gemma)] == [
        [True, False, True, True],
        [False, True, True, True],
    ]
    # 4 heads in 2 groups: 0.25 of 2 heads per group rounds half up -> 1 removed per group (50%)
    tiny = HeadLayout(groups=(2,), group_size=(2,))
    [mask] = select_heads([torch.tensor([0.9, 0.8, 0.1, 0.2])], 0.25, tiny)
    assert mask.tolist() == [True, False, False, True]  # the best of each group, not the best two overall


def test_every_dimension_a_dims_value_can_name_is_scored_by_some_method():
    """DIET, its oracle and activation_pooled offer every selectable dimension marked `scored`: each needs its
    scoring; one that is not (KV groups) must be offered by a method that scores it itself."""
    from diet.dims.base import DIMENSIONS
    from diet.dims.choice import single_dims
    from diet.methods import METHODS

    scored = [name for name in single_dims() if DIMENSIONS.get(name).scored]
    assert sorted(SCORING.names()) == sorted(scored)
    offered = {part for name in METHODS.names() for dims in METHODS.get(name).dims for part in dim_parts(dims)}
    assert set(single_dims()) <= offered


def test_equalize_groups_after_a_count_free_merge():
    layout = HeadLayout(groups=(2,), group_size=(3,))
    merged = bools([[True, True, False], [False, False, True]])
    votes = [torch.tensor([2.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 2.0])]
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.4, 0.1])]
    out = equalize_groups(merged, [[v, s] for v, s in zip(votes, scores)], layout)
    assert [m.tolist() for m in out] == [[True, True, False], [True, False, True]]  # kept heads stay kept


# --------------------------------------------------------------------------- hidden


def test_hidden_pruning_shapes_and_embedding_scale(model, batch):
    keep = hidden_keep()
    width = int(keep.sum())
    scale = float(model.model.embed_tokens.embed_scale)
    q_norm_shapes = [tuple(p.shape) for n, p in model.named_parameters() if "q_norm" in n or "k_norm" in n]
    norms = len(adapter_for(model).hidden_norms())
    before = parameter_counts(model)
    prune_hidden(model, keep)
    out = logits(model, batch)
    assert out.shape == (3, 16, 260) and torch.isfinite(out).all()
    assert model.config.hidden_size == width and model.config.head_dim == HEAD_DIM
    assert norms == 4 * LAYERS + 1 and len(adapter_for(model).hidden_norms()) == norms  # 4 per Gemma block + final norm
    assert all(tuple(n.weight.shape) == (width,) for n in adapter_for(model).hidden_norms())
    assert [tuple(p.shape) for n, p in model.named_parameters() if "q_norm" in n or "k_norm" in n] == q_norm_shapes
    assert float(model.model.embed_tokens.embed_scale) == scale == math.sqrt(HIDDEN)  # the original scale
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.shape == (260, width)
    for layer in range(LAYERS):
        attn, mlp = adapter_for(model).attention(layer), adapter_for(model).mlp(layer)
        assert all(linear.in_features == width for linear in (attn.q, attn.k, attn.v, mlp.gate, mlp.up))
        assert attn.o.out_features == mlp.down.out_features == width
    removed = before["non_embedding"] - parameter_counts(model)["non_embedding"]
    assert removed == (HIDDEN - width) * unit_parameters(tiny_gemma2(num_hidden_layers=LAYERS), "hidden")["hidden"][0]


# --------------------------------------------------------------------------- save / load


def prune_dims(model, dims):
    fields = {
        "heads": {"heads": bools(HEAD_KEEP)},
        "mlp+heads": {
            "mlp": [torch.arange(w) % 3 != 0 for w in adapter_for(model).mlp_widths()],
            "heads": bools(HEAD_KEEP),
        },
        "hidden": {"hidden": [hidden_keep()]},
        "mlp+kv_groups": {
            "mlp": [torch.arange(w) % 3 != 0 for w in adapter_for(model).mlp_widths()],
            "kv_groups": bools(KV_KEEP),
        },
    }[dims]
    apply_selection(model, MaskSelection(keep=fields))
    return model


@pytest.mark.parametrize("dims", ["heads", "mlp+heads", "hidden", "mlp+kv_groups"])
def test_save_load_round_trip_is_exact(model, batch, tmp_path, dims):
    pruned = prune_dims(model, dims)
    expected = logits(pruned, batch)
    save_pruned(pruned, byte_level_tokenizer(), tmp_path / dims)
    restored, _, spec = load_pruned(tmp_path / dims)
    assert torch.equal(logits(restored, batch), expected)
    assert spec["num_heads"] == adapter_for(pruned).head_counts() == adapter_for(restored).head_counts()
    assert spec["hidden_size"] == restored.config.hidden_size == adapter_for(pruned).hidden_width()
    assert spec["embed_scale"] == float(restored.model.embed_tokens.embed_scale) == math.sqrt(HIDDEN)
    assert spec["num_kv_heads"] == adapter_for(pruned).kv_head_counts() == adapter_for(restored).kv_head_counts()
    groups = [layer.self_attn.num_key_value_groups for layer in adapter_for(restored).layers()]
    assert groups == [count // kv for count, kv in zip(spec["num_heads"], spec["num_kv_heads"])]
    assert parameter_counts(restored) == parameter_counts(pruned)


# --------------------------------------------------------------------------- methods


def make_ctx(model, dims, tasks=("arc_easy", "rte"), **overrides) -> MethodCall:
    cfg = {
        "sparsity": 0.5, "seed": 0, "dims": dims, "model": {"add_bos_token": True},
        "calib": {"n": 4, "max_length": 32, "batch_size": 2, "with_answer": True, "source": "tasks"},
        "method": {"profile": {"stat": "mean_abs"}, "mask": {"scope": "layer", "min_keep_fraction": 0.05},
                   "merge": "vote", "vote": {"threshold": 0.5, "exact": True}},
        **overrides,
    }
    loaded = LoadedModel(model, byte_level_tokenizer(), "tiny", "cpu", "float32", "fingerprint")
    return MethodCall(loaded, cfg, list(tasks))


@pytest.fixture(scope="module")
def profiles():
    model = tiny_gemma2(seed=0, num_hidden_layers=LAYERS)
    generator = torch.Generator().manual_seed(5)
    sequences = {
        task: [[2] + torch.randint(4, 260, (n,), generator=generator).tolist() for n in (7, 19, 12)]
        for task in ("arc_easy", "rte")
    }
    return {task: profile_activations(model, seqs, batch_size=2) for task, seqs in sequences.items()}


@pytest.fixture
def fake_profiles(monkeypatch, profiles):
    fake = lambda ctx, samples: {task: profiles[task] for task in samples.tasks}  # noqa: E731
    monkeypatch.setattr(calibrated, "task_profiles", fake)
    monkeypatch.setattr("diet.methods.diet.task_profiles", fake)
    # sequential Wanda-sp runs its own passes over calibration sequences
    generator = torch.Generator().manual_seed(5)
    sequences = [[2] + torch.randint(4, 260, (n,), generator=generator).tolist() for n in (7, 19, 12)]
    monkeypatch.setattr("diet.methods.wanda_sp.calibration_sequences", lambda ctx, calibration, reference: sequences)


@pytest.mark.parametrize(
    ("method", "dims"),
    [(m, d) for m in ("diet", "diet_oracle", "activation_pooled", "random") for d in ("heads", "mlp+heads", "hidden")]
    + [("wanda_sp", "heads"), ("wanda_sp", "mlp+heads"), ("diet", "mlp")],
)
def test_methods_select_valid_masks_for_each_dims(model, fake_profiles, method, dims):
    selection = make_ctx(model, dims).select(method)
    jobs = list(selection.per_task.values()) if selection.per_task else [selection]
    parts = dim_parts(dims)
    for job in jobs:
        assert (job.kept("mlp") is not None) == ("mlp" in parts)
        assert (job.kept("heads") is not None) == ("heads" in parts)
        assert (job.kept("hidden") is not None) == ("hidden" in parts)
        pruned = copy.deepcopy(model)
        removed = apply_selection(pruned, job)
        assert set(removed) == set(parts)
        if "heads" in parts:  # 2 heads per group at 0.5: 1 kept per group
            assert adapter_for(pruned).head_counts() == [2] * LAYERS
        if "hidden" in parts:
            assert adapter_for(pruned).hidden_width() == HIDDEN // 2
    if dims != "mlp":
        assert selection.stats["dims"] == dims


def test_diet_heads_single_task_masks_follow_head_scores(model, profiles, fake_profiles):
    from diet.methods.diet import diet_task_masks

    call = make_ctx(model, "heads", sparsity=0.5)
    per_task = diet_task_masks(call.ctx, call.inputs("diet"))
    for task, profile in profiles.items():
        scores = profile.head_scores("mean_abs", HEAD_DIM)
        expected = [
            torch.stack([pair == pair.max() for pair in layer.view(KV, HEADS // KV)]).reshape(-1) for layer in scores
        ]
        got = per_task.parts["heads"].per_layer(task, model)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_wanda_sp_head_scores_equal_loop_over_heads(model, profiles):
    """FLAP's head score: W_metric = |W_o| * sqrt(scaler_row), mean over output rows, summed per head."""
    from diet.methods.wanda_sp import layer_head_scores

    profile = profiles["arc_easy"]
    for layer in range(LAYERS):
        got = layer_head_scores(model, profile, layer)
        weight = model.model.layers[layer].self_attn.o_proj.weight.detach().double()
        scaler = profile.sum_sq["attn"][layer] / profile.n_samples
        for head in range(HEADS):
            total = 0.0
            for column in range(head * HEAD_DIM, (head + 1) * HEAD_DIM):
                total += float(weight[:, column].abs().mean()) * math.sqrt(float(scaler[column]))
            assert got[head].item() == pytest.approx(total, rel=1e-9)


def test_diet_union_merge_of_heads_is_equalised(model, fake_profiles):
    selection = make_ctx(model, "heads", method={"merge": "union"}).select("diet")
    check_head_mask(model, selection.kept("heads"))  # raises if groups differ


# --------------------------------------------------------------------------- sparsity_of=params


@pytest.mark.parametrize("dims", scored_dims())
def test_params_sparsity_is_solved_and_exact(model, dims):
    solved = solve_dim_sparsity(model, dims, 0.2)
    before = parameter_counts(model)["non_embedding"]
    ctx = make_ctx(model, dims, sparsity=solved["sparsity"])
    pruned = copy.deepcopy(model)
    apply_selection(pruned, ctx.select("random"))
    removed = before - parameter_counts(pruned)["non_embedding"]
    assert removed / before == pytest.approx(solved["predicted_parameters"], abs=1e-12)
    # nearest achievable: the next step up or down in per-dimension sparsity is no closer to 20%
    step = {"mlp": 1 / 128, "heads": 1 / 2, "mlp+heads": 1 / 128, "hidden": 1 / HIDDEN}[dims]
    for other in (solved["sparsity"] - step, solved["sparsity"] + step):
        if 0 <= other < 1:
            predicted = removed_parameters(model, dims, other) / before
            assert abs(predicted - 0.2) >= abs(solved["predicted_parameters"] - 0.2) - 1e-12


# --------------------------------------------------------------------------- validation and identity


TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "wandb.mode=disabled"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=wanda_sp", "dims=hidden"], r"^method 'wanda_sp' does not support dims='hidden': it supports mlp, heads, mlp\+heads$"),
        (["method=flap", "dims=heads"], r"^method 'flap' does not support dims='heads': it supports mlp$"),
        (["method=shortgpt", "dims=mlp+heads"], r"^method 'shortgpt' does not support dims='mlp\+heads': it supports mlp$"),
        (["method=diet", "dims=head"], r"^unknown dims 'head': did you mean 'heads'\? available: heads, hidden, kv_groups, mlp, "
                                      r"mlp\+heads$"),
        (["method=diet", "sparsity_of=param"], r"^unknown sparsity_of 'param': did you mean 'params'\? available: dim, params$"),
    ],
)
def test_bad_dims_are_named(overrides, message):
    with pytest.raises(DietConfigError, match=message):
        validate(compose_config([*TINY, *overrides]))


def test_sparsity_of_is_part_of_the_target():
    base = compose_config([*TINY, "method=diet"])
    tasks = ["arc_easy", "rte"]
    legacy = {k: v for k, v in base.items() if k != "sparsity_of"}  # a config from before the option: dim
    assert config_hash(effective_config(base, tasks)) == config_hash(effective_config(legacy, tasks))
    params = compose_config([*TINY, "method=diet", "sparsity_of=params"])
    assert config_hash(effective_config(params, tasks)) != config_hash(effective_config(base, tasks))
    dense = [compose_config([*TINY, "method=dense", f"sparsity_of={of}"]) for of in ("dim", "params")]
    assert len({config_hash(effective_config(cfg, tasks)) for cfg in dense}) == 1


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One profile cache for the run_cell tests below (they share the tiny model and calibration)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def run(tmp_path, *overrides):
    return run_cell(compose_config([*TINY, f"results_dir={tmp_path / 'records'}", *overrides]))


def test_run_cell_heads(tmp_path, shared_cache):
    record, _ = run(tmp_path, "method=diet", "dims=heads", "sparsity=0.5")
    sparsity = record["sparsity"]
    assert sparsity["dims"] == "heads" and sparsity["actual"] == 0.5  # 1 of 2 heads per KV group
    heads = sparsity["by_dim"]["heads"]
    assert heads["before"] == 2 * HEADS and heads["after"] == 2 * HEADS / 2 and heads["removed_fraction"] == 0.5
    removed = 2 * 2 * HEAD_DIM * (HIDDEN + HIDDEN)  # layers x heads removed x head_dim x (q rows + o columns)
    assert heads["parameters_removed"] == {"total": removed, "non_embedding": removed}
    assert record["parameters"]["removed"] == {"total": removed, "non_embedding": removed}
    assert record["mask"]["dims"] == "heads" and record["mask"]["kept_per_layer"] == [2, 2]
    assert sparsity["mlp_channels_after"] == sparsity["mlp_channels_before"]


def test_run_cell_hidden(tmp_path, shared_cache):
    record, _ = run(tmp_path, "method=diet", "dims=hidden", "sparsity=0.25")
    hidden = record["sparsity"]["by_dim"]["hidden"]
    assert record["sparsity"]["actual"] == hidden["removed_fraction"] == 0.25 and hidden["after"] == 48
    params = record["parameters"]
    assert hidden["parameters_removed"]["total"] - hidden["parameters_removed"]["non_embedding"] == 16 * 260
    assert params["removed"]["total"] == hidden["parameters_removed"]["total"]
    assert params["after"]["embedding"] == 260 * 48
    assert all(not math.isnan(m["score"]) for m in record["tasks"].values())


def test_ablation_dims_cell_runs_on_tiny(tmp_path, shared_cache):
    """One cell of conf/experiment/ablation_dims_local.yaml (mlp+heads at 20% of non-embedding params)."""
    record, _ = run(tmp_path, "experiment=ablation_dims_local", "model=tiny_gemma2", "eval.limit=4",
                    "method=diet", "dims=mlp+heads")
    sparsity, params = record["sparsity"], record["parameters"]
    assert sparsity["of"] == "params" and sparsity["target"] == 0.2
    assert params["removed_fraction_non_embedding"] == pytest.approx(sparsity["predicted_parameters"], abs=1e-12)
    # tiny: 2 heads per KV group, so heads go 0 -> 50% at dim sparsity 0.25 (MLP-only 12.0% vs 29.0%): 12.0% is nearest
    assert params["removed_fraction_non_embedding"] == pytest.approx(2 * 31 * 3 * 64 / 98880, abs=1e-12)
    assert sparsity["dim_sparsity"] == 31 / 128 and sparsity["by_dim"]["heads"]["removed_fraction"] == 0.0
    assert set(sparsity["by_dim"]) == {"mlp", "heads"} and sparsity["actual"] == sparsity["by_dim"]["mlp"]["removed_fraction"]
    by_dim = sparsity["by_dim"]
    assert by_dim["mlp"]["parameters_removed"]["total"] + by_dim["heads"]["parameters_removed"]["total"] == params["removed"]["total"]
    assert record["effective_config"]["method"]["inputs"]["target"]["of"] == "params"


# --------------------------------------------------------------------------- the real Gemma-3 270M


@pytest.fixture(scope="module")
def gemma3():
    from diet.models import load_model

    return load_model(compose_config(["model=gemma3_270m", "model.device=cpu"])["model"]).model


@pytest.fixture(scope="module")
def gemma3_heads(gemma3) -> dict:
    """Masked vs sliced heads (and one wrong head) on a left-padded batch of random tokens."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 20000, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    ids[:, 0] = 2
    ids[1, :4], ids[1, 4] = 0, 2
    batch = {"input_ids": ids, "attention_mask": mask}
    layout = HeadLayout.of(gemma3)
    scores = [torch.rand(4, generator=generator) for _ in range(adapter_for(gemma3).num_layers())]
    keep = select_heads(scores, 0.25, layout)
    masked = logits(zero_attention_heads(copy.deepcopy(gemma3), keep), batch)
    sliced = logits(prune_attention_heads(copy.deepcopy(gemma3), keep), batch)
    # the last layer: the smaller effect of the two layers tried (5.1 vs 30 in the first)
    wrong = logits(prune_attention_heads(copy.deepcopy(gemma3), swap_one_head(keep, len(keep) - 1, 4)), batch)
    return {"batch": batch, "keep": keep, "masked": masked, "sliced": sliced, "wrong": wrong,
            "bound": logits_bound(gemma3, masked)}


@pytest.mark.real_model
def test_real_gemma3_heads_bound_catches_one_wrong_head(gemma3_heads):
    diff = (gemma3_heads["wrong"] - gemma3_heads["masked"]).abs().max().item()
    assert diff > 10 * gemma3_heads["bound"], (diff, gemma3_heads["bound"])


@pytest.mark.real_model
def test_real_gemma3_heads_and_hidden(gemma3, gemma3_heads):
    batch, keep, masked, sliced = (gemma3_heads[key] for key in ("batch", "keep", "masked", "sliced"))
    assert [int(m.sum()) for m in keep] == [3] * 18  # 4 query heads, 1 KV head: 25% keeps 3
    # fp32: Gemma-3's logits reach ~180 on random tokens, and o_proj sums over 768 instead of 1024 columns:
    # sliced and masked differ by rounding alone (measured 1.1e-4..2.7e-4 over 4 random masks, 5-20 eps of
    # the largest logit), within fp32_bound (180 * eps * sqrt(2048) * 18 = 1.7e-2)
    assert (sliced - masked).abs().max() <= gemma3_heads["bound"]
    assert torch.equal(sliced.argmax(-1), masked.argmax(-1))  # the same greedy tokens
    assert (masked - logits(gemma3, batch)).abs().max() > 1.0  # the mask really changes the model
    # fp64 (unpadded row: transformers' padded-row mask gives NaN in float64 even for the dense model):
    # the only difference left is rounding, measured exactly 0
    base = copy.deepcopy(gemma3).double()
    row = {key: value[:1] for key, value in batch.items()}
    sliced64 = logits(prune_attention_heads(copy.deepcopy(base), keep), row)
    assert (sliced64 - logits(zero_attention_heads(base, keep), row)).abs().max() <= 1e-9
    del base

    hidden = copy.deepcopy(gemma3)
    scale = float(hidden.model.embed_tokens.embed_scale)
    prune_hidden(hidden, hidden_keep(640, drop_every=5))
    out = logits(hidden, batch)
    assert torch.isfinite(out).all() and hidden.config.hidden_size == 512
    # float32 holds sqrt(640) within one rounding, eps / 2 relative
    assert float(hidden.model.embed_tokens.embed_scale) == scale == pytest.approx(math.sqrt(640), rel=EPS32)


# --------------------------------------------------------------------------- KV groups (LLM-Pruner's attention unit)
# per layer, per KV head: group 1 removed, nothing removed, group 0 removed
KV_KEEP = [[True, False], [True, True], [False, True]]


def test_kv_groups_sliced_equal_masked_and_keep_the_heads_per_group(model, batch):
    keep = bools(KV_KEEP)
    dense = logits(model, batch)
    masked = logits(zero_kv_groups(copy.deepcopy(model), keep), batch)
    bound = logits_bound(model, masked)
    sliced_model = prune_kv_groups(model, keep)
    sliced = logits(sliced_model, batch)
    assert (masked - dense).abs().max() > 1e-2  # the mask really changes the model
    assert (sliced - masked).abs().max() <= bound  # float32 rounding only
    adapter = adapter_for(sliced_model)
    record_shapes(sliced_model)
    assert adapter.kv_head_counts() == [1, 2, 1] and model.config.diet_pruning["num_kv_heads"] == [1, 2, 1]
    assert adapter.head_counts() == [2, 4, 2] and model.config.diet_pruning["num_heads"] == [2, 4, 2]
    assert [layer.self_attn.num_key_value_groups for layer in adapter.layers()] == [2, 2, 2]


@pytest.mark.parametrize("layer", [0, 2])
def test_kv_groups_bound_catches_the_wrong_group(model, batch, layer):
    keep = bools(KV_KEEP)
    masked = logits(zero_kv_groups(copy.deepcopy(model), keep), batch)
    swapped = [mask.clone() for mask in keep]
    swapped[layer] = ~swapped[layer]
    sliced = logits(prune_kv_groups(model, swapped), batch)
    assert (sliced - masked).abs().max() > 1000 * logits_bound(model, masked)


def test_a_kv_group_goes_with_the_query_heads_of_its_group(model):
    original = [copy.deepcopy(adapter_for(model).attention(i)) for i in range(LAYERS)]
    prune_kv_groups(model, bools(KV_KEEP))
    size = HEADS // KV
    for layer, row in enumerate(KV_KEEP):
        groups = torch.tensor(row).repeat_interleave(HEAD_DIM)
        heads = torch.tensor(row).repeat_interleave(size * HEAD_DIM)  # heads g*size .. g*size+size-1
        attn = adapter_for(model).attention(layer)
        assert torch.equal(attn.k.weight, original[layer].k.weight[groups])
        assert torch.equal(attn.v.weight, original[layer].v.weight[groups])
        assert torch.equal(attn.q.weight, original[layer].q.weight[heads])
        assert torch.equal(attn.o.weight, original[layer].o.weight[:, heads])


def test_kv_group_accounting_and_bad_masks(model):
    before = parameter_counts(model)["non_embedding"]
    costs = unit_parameters(model, "kv_groups")["kv_groups"]
    prune_kv_groups(model, bools(KV_KEEP))
    assert before - parameter_counts(model)["non_embedding"] == costs[0] + costs[2]
    with pytest.raises(DietConfigError, match="mask of layer 1 removes all 2 KV groups"):
        prune_kv_groups(tiny_gemma2(seed=0, num_hidden_layers=LAYERS),
                        bools([[True, True], [False, False], [True, True]]))
    with pytest.raises(DietConfigError, match="KV-group mask of layer 0 must be a 1-D bool tensor of length 2"):
        prune_kv_groups(tiny_gemma2(seed=0, num_hidden_layers=LAYERS), bools([[True]] + KV_KEEP[1:]))


def test_kv_groups_are_offered_only_by_a_method_that_scores_them():
    assert "kv_groups" not in scored_dims() and dim_parts("mlp+kv_groups") == ("mlp", "kv_groups")
    with pytest.raises(DietConfigError, match="method 'diet' does not support dims='kv_groups'"):
        validate(compose_config(["model=tiny_gemma2", "method=diet", "dims=kv_groups", "tasks=[arc_easy]"]))


def test_kv_groups_and_heads_together_keep_the_gqa_rule(model, batch):
    """Heads pruned after KV groups (pruning order): the heads of the remaining groups, the same count in each."""
    prune_kv_groups(model, bools(KV_KEEP))
    prune_attention_heads(model, bools([[True, False], [True, False, False, True], [False, True]]))
    adapter = adapter_for(model)
    assert adapter.head_counts() == [1, 2, 1] and adapter.kv_head_counts() == [1, 2, 1]
    assert [layer.self_attn.num_key_value_groups for layer in adapter.layers()] == [1, 1, 1]
    assert torch.isfinite(logits(model, batch)).all()
