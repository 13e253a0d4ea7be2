"""method=llm_pruner against LLM-Pruner's own code (tests/fixtures/llm_pruner_reference.json, written by
experiments.llm_pruner_reference from horseee/LLM-Pruner at the commit it names), and its pieces on their own."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from diet.calib.gradients import loss_gradients, per_sample_squares
from diet.dims.apply import apply_selection
from diet.errors import DietConfigError
from diet.methods import METHODS, PruningContext
from diet.methods import llm_pruner
from diet.methods.inputs import Target
from diet.models.loaders import LoadedModel
from diet.models.tiny import byte_level_tokenizer, tiny_llama
from diet.rounding import depth_and_length, fp32_bound, logits_bound
from diet.run.cell import resolve
from diet.run.pipeline import run_cell

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "llm_pruner_reference.json").read_text())


def gradient_bound(model, reference: torch.Tensor) -> float:
    """float32 rounding of a gradient (or a score summed from it) computed in another batching: fp32_bound over the
    forward and the backward pass (2 x the layers)."""
    depth, length = depth_and_length(model)
    return fp32_bound(reference, depth=2 * depth, length=length)


def reference_windows() -> list[list[int]]:
    spec = FIXTURE["windows"]
    generator = torch.Generator().manual_seed(spec["seed"])
    return [row.tolist() for row in torch.randint(4, 260, (spec["n"], spec["length"]), generator=generator)]


def select(model, ratio: float, options: llm_pruner.LLMPrunerOptions, monkeypatch, batch_size: int = 8,
           dims: str = "mlp"):
    windows = reference_windows()
    monkeypatch.setattr(llm_pruner, "calibration_sequences", lambda ctx, calibration, reference: windows)
    loaded = LoadedModel(model, byte_level_tokenizer(), "tiny", "cpu", "float32", "fingerprint")
    ctx = PruningContext(loaded, None, lambda stage: contextlib.nullcontext(), batch_size=batch_size)
    inputs = llm_pruner.LLMPrunerInputs(Target(ratio, dims), None, options)
    return METHODS.get("llm_pruner")().select(ctx, inputs)


def skips_for(layers: list[int], depth: int) -> dict[str, float]:
    """skip_first / skip_last that prune exactly layers[0]..layers[1]-1 of `depth` layers."""
    return {"skip_first": layers[0] / depth, "skip_last": (depth - layers[1]) / depth}


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"{c['taylor']}-{c['ratio']}-{c['mlp_layers']}")
def test_removes_the_channels_llm_pruners_own_code_removes(case, monkeypatch):
    model = tiny_llama(seed=0).float()
    depth = model.config.num_hidden_layers
    options = llm_pruner.LLMPrunerOptions(taylor=case["taylor"], **skips_for(case["mlp_layers"], depth))
    selection = select(model, case["ratio"], options, monkeypatch)
    removed = [sorted((~mask).nonzero().flatten().tolist()) for mask in selection.keep["mlp"]]
    assert removed == case["removed"]
    assert selection.stats["pruned_layers"] == case["mlp_layers"]
    # the mean LM loss the gradients come from: the reference's one batch vs our micro-batches, float32 rounding
    ids = torch.tensor(reference_windows())
    with torch.no_grad():
        logits = model(ids).logits
    assert abs(selection.stats["calib_loss"] - case["loss"]) <= 2 * logits_bound(model, logits)


@pytest.mark.parametrize("taylor", ["param_first", "vectorize"])
def test_channel_scores_equal_a_brute_force_sum_over_the_group(taylor):
    """Per MLP channel j: sum over gate row j, up row j and down column j of |W * dL/dW| (param_first), or of
    |sum W * dL/dW| per row or column (vectorize), with dL/dW from autograd on transformers' own loss of the batch."""
    model = tiny_llama(seed=0).float()
    ids = torch.tensor(reference_windows())
    mlp = model.model.layers[1].mlp
    weights = (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    grads = torch.autograd.grad(model(ids, labels=ids).loss, weights)
    expected = torch.zeros(mlp.down_proj.in_features, dtype=torch.float64)
    for j in range(len(expected)):
        pieces = [weights[0][j] * grads[0][j], weights[1][j] * grads[1][j], weights[2][:, j] * grads[2][:, j]]
        expected[j] = sum(float((p.abs().sum() if taylor == "param_first" else p.sum().abs())) for p in pieces)
    ours, _ = loss_gradients(model, list(weights), reference_windows(), batch_size=4)
    got = llm_pruner.channel_importance(weights, tuple(ours), None, taylor)
    # the two gradients differ by float32 rounding of the loss's batching
    assert float((got - expected).abs().max()) <= gradient_bound(model, expected)
    assert not torch.equal(torch.argsort(got), torch.argsort(got.flip(0)))  # scores are not degenerate


def test_the_gradient_does_not_depend_on_the_micro_batches():
    """Micro-batches of any size sum to the one-batch mean-loss gradient (float rounding only), including
    sequences of different lengths, whose padding is ignored."""
    model = tiny_llama(seed=0).float()
    windows = reference_windows()
    ragged = [w[: 20 + 4 * i] for i, w in enumerate(windows)]
    params = [model.model.layers[1].mlp.down_proj.weight]
    whole, loss = loss_gradients(model, params, ragged, batch_size=len(ragged))
    split, loss_split = loss_gradients(model, params, ragged, batch_size=3)
    assert params[0].grad is None and params[0].requires_grad  # flags and grads restored
    bound = gradient_bound(model, whole[0])
    assert float((whole[0] - split[0]).abs().max()) <= bound
    assert loss == pytest.approx(loss_split, rel=1e-6)
    # one padded batch equals the sum over each sequence alone, weighted by its predicted tokens
    tokens = [len(s) - 1 for s in ragged]
    singles = [loss_gradients(model, params, [s], batch_size=1)[0][0] * t for s, t in zip(ragged, tokens)]
    assert float((whole[0] - sum(singles) / sum(tokens)).abs().max()) <= bound


def test_second_order_term_is_the_mean_of_squared_per_sequence_gradients():
    model = tiny_llama(seed=0).float()
    windows = reference_windows()[:3]
    params = [model.model.layers[0].mlp.up_proj.weight]
    acc = per_sample_squares(model, params, windows)[0]
    expected = sum(loss_gradients(model, params, [w], batch_size=1)[0][0].double().square() for w in windows) / 3
    torch.testing.assert_close(acc, expected, rtol=1e-12, atol=0)  # the same float32 gradients, summed in float64


@pytest.mark.parametrize(("depth", "expected"), [(32, range(4, 30)), (18, range(2, 17)), (26, range(3, 24)),
                                                  (2, range(0, 2))])
def test_the_reference_layer_range_for_any_depth(depth, expected):
    """LLaMA-7B's 4..29 of 32 (first 4 and last 2 kept) as fractions 1/8 and 1/16, rounded half up."""
    assert llm_pruner.pruned_layers(depth, 0.125, 0.0625) == expected


def test_removes_the_kv_groups_and_query_heads_llm_pruners_own_code_removes(monkeypatch):
    """dims=kv_groups over every layer at the fixture's ratio: the KV heads the reference kept, and with each the
    query heads of its group (q rows, o columns) and nothing else."""
    case = FIXTURE["kv_groups"]
    model = tiny_llama(seed=0).float()
    original = [copy.deepcopy(layer.self_attn) for layer in model.model.layers]
    options = llm_pruner.LLMPrunerOptions(taylor=case["taylor"], skip_first=0.0, skip_last=0.0)
    selection = select(model, case["ratio"], options, monkeypatch, dims="kv_groups")
    assert list(selection.keep) == ["kv_groups"]
    assert [mask.nonzero().flatten().tolist() for mask in selection.keep["kv_groups"]] == case["kept_kv_heads"]
    apply_selection(model, selection)
    head_dim = model.config.head_dim
    for layer, attn in enumerate(model.model.layers):
        def rows(heads: list[int]) -> torch.Tensor:
            return torch.tensor([h * head_dim + i for h in heads for i in range(head_dim)])

        pruned, dense = attn.self_attn, original[layer]
        assert torch.equal(pruned.k_proj.weight, dense.k_proj.weight[rows(case["kept_kv_heads"][layer])])
        assert torch.equal(pruned.v_proj.weight, dense.v_proj.weight[rows(case["kept_kv_heads"][layer])])
        assert torch.equal(pruned.q_proj.weight, dense.q_proj.weight[rows(case["kept_query_heads"][layer])])
        assert torch.equal(pruned.o_proj.weight, dense.o_proj.weight[:, rows(case["kept_o_heads"][layer])])


def test_kv_groups_and_channels_together_and_layers_outside_the_range_untouched(monkeypatch):
    model = tiny_llama(seed=0).float()
    options = llm_pruner.LLMPrunerOptions(skip_first=0.5, skip_last=0.0)  # layer 1 of 2 pruned
    selection = select(model, 0.5, options, monkeypatch, dims="mlp+kv_groups")
    assert selection.keep["kv_groups"][0].all() and selection.keep["mlp"][0].all()
    assert int(selection.keep["kv_groups"][1].sum()) == 1 and int(selection.keep["mlp"][1].sum()) == 64
    assert selection.stats["dims"] == "mlp+kv_groups" and selection.stats["kv_groups"]["kept_per_layer"] == [2, 1]


@pytest.mark.parametrize(("kv", "head_dim", "ratio", "kept"), [
    (4, 256, 0.2, 4), (4, 256, 0.25, 3),  # Gemma-2 2B: 1024 k_proj channels, 204 or 256 pruned
    (3, 64, 0.2, 3), (3, 64, 0.33, 2),    # SmolLM2-135M: int(192 * 0.67) = 128 leaves 64 pruned, one group
    (1, 256, 0.5, 1), (2, 32, 0.5, 1)])   # Gemma-3 270M keeps its one KV head; the tiny Llama
def test_the_reference_removes_whole_kv_groups_of_the_pruned_channel_count(kv, head_dim, ratio, kept):
    assert llm_pruner.kept_kv_groups(kv, head_dim, ratio) == kept


def test_the_reference_ratio_keeps_the_floor():
    """MetaPruner keeps int(width * (1 - ratio)): it removes ceil(width * ratio), where the other methods' keep_count
    removes round-half-up(width * ratio); the two differ when the fraction is below one half."""
    from diet.select.masks import keep_count

    assert llm_pruner.kept_channels(2048, 0.2) == 1638 == keep_count(2048, 0.2)  # 409.6 removed either way: 410
    assert llm_pruner.kept_channels(10, 0.23) == 7 and keep_count(10, 0.23) == 8  # 2.3: ceil 3, round 2


TINY = ["model=tiny_llama", "tasks=[arc_easy,rte]", "eval.limit=4", "wandb.mode=disabled", "method=llm_pruner",
        "calib.source=c4"]


@pytest.mark.parametrize(("override", "message"), [
    ("method.taylor=first", r"^unknown method\.taylor 'first': did you mean 'param_first'\? available: param_first, param_mix, "),
    ("method.skip_first=0.6 method.skip_last=0.5", r"^method\.skip_first=0\.6 \+ method\.skip_last=0\.5 leave no layer"),
    ("method.skip_last=1.0", r"^method\.skip_last=1\.0 is outside the allowed range \[0\.0, 1\.0\)$"),
    ("sparsity_of=params", r"^method=llm_pruner with sparsity_of=params: its ratio applies inside its layer range"),
])
def test_bad_options_fail_before_any_model_loads(override, message):
    with pytest.raises(DietConfigError, match=message):
        resolve(compose_config([*TINY, *override.split()]))


def test_a_cell_end_to_end_records_the_layer_range_and_what_it_removed(tmp_path, isolated_cache):
    record, _ = run_cell(compose_config([*TINY, "sparsity=0.5", "method.skip_first=0.5", "method.skip_last=0",
                                         "calib.windows=4", "calib.window_length=32", f"results_dir={tmp_path}"]))
    mask = record["mask"]
    assert mask["pruned_layers"] == [1, 2] and mask["kept_per_layer"] == [128, 64]
    assert record["sparsity"]["actual"] == pytest.approx(0.25)  # half of one layer of two
    assert record["notes"]["calib_source"]["tokens"] == 4 * 32
    removed = record["parameters"]["before"]["total"] - record["parameters"]["after"]["total"]
    assert removed == 64 * 3 * 64  # 64 channels x (gate row + up row + down column) x hidden 64
    assert record["effective_config"]["method"]["inputs"]["options"] == {
        "taylor": "param_first", "skip_first": 0.5, "skip_last": 0.0}


def test_the_references_kv_group_score_counts_the_query_heads_h_mod_n_kv():
    """What the reference's KV-group pruning scores and what it removes (recorded from its own TaylorImportance,
    fixture `kv_groups`): the score of KV group g sums its k/v rows and the query heads h = g (mod n_kv) (its
    alignment of q_proj's out channels), while it removes the query heads h // group_size = g with the group (the
    GQA grouping). A faithful KV-group pruner must score as the first and remove as the second; here the two
    readings rank the groups of layer 0 in opposite orders, so the difference decides what is removed."""
    case = FIXTURE["kv_groups"]
    model = tiny_llama(seed=0).float()
    ids = torch.tensor(reference_windows())
    config = model.config
    kv, head_dim = config.num_key_value_heads, config.head_dim
    size = config.num_attention_heads // kv
    attention = [layer.self_attn for layer in model.model.layers]
    weights = [p for a in attention for p in (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight)]
    grads = torch.autograd.grad(model(ids, labels=ids).loss, weights)
    for layer, reference in enumerate(case["group_scores"]):
        q, k, v, o = [(w.double() * g.double()).abs() for w, g in zip(weights[4 * layer:4 * layer + 4],
                                                                      grads[4 * layer:4 * layer + 4])]

        def score(group: int, heads: list[int]) -> float:
            rows = slice(group * head_dim, (group + 1) * head_dim)
            return float(k[rows].sum() + v[rows].sum() + sum(q[h * head_dim:(h + 1) * head_dim].sum()
                                                              + o[:, h * head_dim:(h + 1) * head_dim].sum() for h in heads))

        by_residue = [score(g, [h for h in range(kv * size) if h % kv == g]) for g in range(kv)]
        by_group = [score(g, list(range(g * size, (g + 1) * size))) for g in range(kv)]
        bound = gradient_bound(model, torch.tensor(by_residue))
        assert max(abs(a - b) for a, b in zip(reference, by_residue)) <= bound, (reference, by_residue)
        ours = llm_pruner.kv_group_importance(weights[4 * layer:4 * layer + 4], grads[4 * layer:4 * layer + 4], None,
                                              "param_first", kv, head_dim)
        assert torch.allclose(ours, torch.tensor(by_residue, dtype=torch.float64), rtol=0, atol=bound)
        if layer == 0:  # the GQA reading would keep the other group
            assert (reference[0] > reference[1]) != (by_group[0] > by_group[1])
        kept = case["kept_kv_heads"][layer]
        assert case["kept_query_heads"][layer] == case["kept_o_heads"][layer] == \
            [h for g in kept for h in range(g * size, (g + 1) * size)]
