"""Pruned models as plain transformers checkpoints: stock from_pretrained, no diet code, identical logits."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import left_padded_batch, logits
from diet.dims.shapes import record_shapes
from diet.export.save import SPEC, STANDARD, export_model
from diet.models.adapters import adapter_for
from diet.models.tiny import byte_level_tokenizer, tiny_gemma2, tiny_llama
from diet.prune.layers import drop_decoder_layers
from diet.export.checkpoint import load_pruned
from diet.prune.mlp import prune_mlp_channels, set_down_bias
from diet.prune.attention import prune_attention_heads, prune_kv_groups
from diet.export.stock_layout import stock_layout


def random_keep(widths, keep_fraction, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for width in widths:
        mask = torch.zeros(width, dtype=torch.bool)
        mask[torch.randperm(width, generator=generator)[: round(keep_fraction * width)]] = True
        out.append(mask)
    return out


@pytest.mark.parametrize("build", [tiny_gemma2, tiny_llama], ids=["gemma2", "llama"])
def test_uniform_pruning_saves_a_stock_checkpoint(build, tmp_path):
    model = build()
    prune_mlp_channels(model, random_keep(adapter_for(model).mlp_widths(), 0.7))  # 30% of the channels
    heads = [torch.tensor([True, False, False, True]) for _ in adapter_for(model).layers()]  # 1 per KV group
    prune_attention_heads(model, heads)
    record_shapes(model)  # as diet.dims.apply does: the config carries diet's own shape notes
    batch = left_padded_batch()
    expected = logits(model, batch)
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "out", "# card\n")
    assert saved["format"] == STANDARD and saved["load_with"].startswith("transformers")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["intermediate_size"] == round(0.7 * 128) and config["num_attention_heads"] == 2
    assert "diet_pruning" not in config and not (tmp_path / "out" / "pruning_spec.json").exists()
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), attn_implementation="eager").eval()
    assert torch.equal(logits(stock, batch), expected)  # no diet code involved in loading
    assert (tmp_path / "out" / "README.md").read_text() == "# card\n"
    assert hasattr(model.config, "diet_pruning")  # the in-memory model is left as it was
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export_model(model, byte_level_tokenizer(), tmp_path / "out", "# card\n")


@pytest.mark.parametrize("build", [tiny_gemma2, tiny_llama], ids=["gemma2", "llama"])
def test_the_same_kv_groups_removed_in_every_layer_save_a_stock_checkpoint(build, tmp_path):
    """Every layer keeps one of its two KV groups: a stock config with num_key_value_heads=1 holds it; layers
    that differ do not, and keep the spec format."""
    model = build()
    layers = range(adapter_for(model).num_layers())
    prune_kv_groups(model, [torch.tensor([layer % 2 == 0, layer % 2 == 1]) for layer in layers])
    record_shapes(model)
    batch = left_padded_batch()
    expected = logits(model, batch)
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "out", "# card\n")
    assert saved["format"] == STANDARD, saved["why"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_key_value_heads"] == 1 and config["num_attention_heads"] == 2
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), attn_implementation="eager").eval()
    assert torch.equal(logits(stock, batch), expected)
    uneven_kv = build()
    prune_kv_groups(uneven_kv, [torch.tensor([True, layer > 0]) for layer in layers])
    assert stock_layout(uneven_kv)[0] is None and "KV heads differ between layers (1..2)" in stock_layout(uneven_kv)[1]


def uneven(model):
    """FLAP's shape: layers of different MLP widths, a down_proj bias in one layer, and (heads) layers of
    different query-head counts."""
    widths = adapter_for(model).mlp_widths()
    keep = random_keep(widths, 0.75)
    keep[1] = random_keep([widths[1]], 0.5, seed=1)[0]
    prune_mlp_channels(model, keep)
    prune_attention_heads(model, [torch.tensor([True, False, True, False]), torch.tensor([True, True, True, True])])
    generator = torch.Generator().manual_seed(3)
    set_down_bias(model, [torch.randn(64, generator=generator) * 0.1, None])
    return model


def test_non_uniform_or_biased_models_keep_the_self_describing_format(tmp_path):
    model = uneven(tiny_llama())
    assert stock_layout(model)[0] is None and "differ" in stock_layout(model)[1] and "export.pad" in stock_layout(model)[1]
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "flap", "# card\n")
    assert saved["format"] == SPEC and (tmp_path / "flap" / "pruning_spec.json").exists() and saved["padded"] is None
    restored, _, _ = load_pruned(tmp_path / "flap")
    batch = left_padded_batch()
    assert torch.equal(logits(restored, batch), logits(model, batch))
    gemma = uneven(tiny_gemma2())  # Gemma's stock MLP has no bias: padding cannot make it stock
    layout, why = stock_layout(gemma, pad=True)
    assert layout is None and "biases" in why and "gemma2" in why
    assert export_model(gemma, None, tmp_path / "gemma", "# c\n", pad=True)["format"] == SPEC


# Gemma with FLAP's bias cannot be stock (no MLP bias in the family): the test above covers it
@pytest.mark.parametrize("build,bias", [(tiny_gemma2, False), (tiny_llama, False), (tiny_llama, True)],
                         ids=["gemma2", "llama", "llama-flap-bias"])
def test_padded_export_is_a_stock_checkpoint_with_identical_logits(build, bias, tmp_path):
    model = uneven(build())
    if not bias:
        set_down_bias(model, [None, None])
        for layer in adapter_for(model).layers():
            layer.mlp.down_proj.bias = None
    batch = left_padded_batch()
    expected = logits(model, batch)
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "out", "# card\n", pad=True)
    assert saved["format"] == STANDARD and saved["padded"]["intermediate_size"] == 96
    assert saved["padded"]["num_attention_heads"] == 4 and saved["padded"]["kept_heads"] == [2, 4]
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), attn_implementation="eager").eval()
    assert torch.equal(logits(stock, batch), expected)  # plain transformers, the padded zeros change nothing
    added = sum(p.numel() for p in stock.parameters()) - sum(p.numel() for p in model.parameters())
    assert added == saved["padded"]["zero_parameters"] > 0  # the record counts exactly the zeros it added
    assert adapter_for(model).mlp_widths() == [96, 64]  # the in-memory model is not padded
    assert getattr(stock.config, "mlp_bias", False) is bias


def test_dropped_layers_are_a_stock_checkpoint(tmp_path):
    model = drop_decoder_layers(tiny_gemma2(num_hidden_layers=4), [1, 2])
    batch = left_padded_batch()
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "short", "# card\n")
    assert saved["format"] == STANDARD
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "short"), attn_implementation="eager").eval()
    assert stock.config.num_hidden_layers == 2 and torch.equal(logits(stock, batch), logits(model, batch))


@pytest.mark.parametrize("prepend", [True, False])
def test_the_saved_tokenizer_prepends_bos_as_the_run_evaluated(prepend, tmp_path):
    model = tiny_llama()
    prune_mlp_channels(model, random_keep(adapter_for(model).mlp_widths(), 0.5))
    export_model(model, byte_level_tokenizer(), tmp_path / "m", "# c\n", bos_prepended=prepend)
    ids = AutoTokenizer.from_pretrained(str(tmp_path / "m"))("ab").input_ids
    text = byte_level_tokenizer()("ab", add_special_tokens=False).input_ids
    assert ids == [2, *text] if prepend else ids == text


def test_saved_model_is_logged_as_a_wandb_artifact_offline(tmp_path):
    from diet.run.tracking import log_saved_model

    model = tiny_llama()
    prune_mlp_channels(model, random_keep(adapter_for(model).mlp_widths(), 0.5))
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "m", "# c\n")
    wandb_cfg = {"mode": "offline", "project": "diet-test", "dir": str(tmp_path / "wandb")}
    assert log_saved_model(saved, wandb_cfg, "m", False) is None
    run_dir = log_saved_model(saved, wandb_cfg, "tiny-llama-pruned", True)
    logged = b"".join(p.read_bytes() for p in (tmp_path / "wandb").rglob("*.wandb"))
    assert run_dir is not None and b"tiny-llama-pruned" in logged and saved["weights_sha256"].encode() in logged


def test_a_run_saves_its_pruned_model_with_a_card(tmp_path, isolated_cache):
    from conftest import compose_config
    from diet.errors import DietConfigError
    from diet.run.pipeline import run_cell

    cell = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "wandb.mode=disabled",
            "method=diet", "sparsity=0.25", f"results_dir={tmp_path / 'records'}", f"save_model={tmp_path / 'model'}"]
    record, _ = run_cell(compose_config(cell))
    saved = record["saved_model"]
    assert saved["format"] == STANDARD and saved["path"] == str(tmp_path / "model") and len(saved["weights_sha256"]) == 64
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"), attn_implementation="eager")
    assert stock.config.intermediate_size == 96 and sum(p.numel() for p in stock.parameters()) == \
        record["parameters"]["after"]["total"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "pruned with diet" in card and "arc_easy | acc_norm" in card and record["config_hash"] in card
    with pytest.raises(DietConfigError, match="exists and is not empty"):  # never overwritten, before any load
        run_cell(compose_config([*cell, "force=true"]))
    with pytest.raises(DietConfigError, match="one pruned model per task"):
        run_cell(compose_config([*cell[:-1], "method=diet_oracle", "save_model=true"]))


def test_prune_command_saves_without_evaluating(tmp_path, isolated_cache, monkeypatch):
    from conftest import compose_config
    from diet.errors import DietConfigError
    from diet.run.pipeline import prune_cell

    import diet.eval.evaluate

    monkeypatch.setattr(diet.eval.evaluate, "evaluate", lambda *a, **k: pytest.fail("prune_cell must not evaluate"))
    cell = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=4", "wandb.mode=disabled", "method=diet",
            "sparsity=0.25", f"results_dir={tmp_path / 'records'}"]
    saved = prune_cell(compose_config([*cell, f"save_model={tmp_path / 'm'}"]))
    assert saved["format"] == STANDARD and saved["parameters_after"] < saved["parameters_before"]
    assert AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).config.intermediate_size == 96
    assert not (tmp_path / "records").exists() or not any((tmp_path / "records").iterdir())  # no record
    assert "Not evaluated yet" in (tmp_path / "m" / "README.md").read_text()
    with pytest.raises(DietConfigError, match="needs save_model"):
        prune_cell(compose_config(cell))


def test_flap_global_allocation_padded_from_the_prune_command(tmp_path, isolated_cache):
    """The issue's padded case end to end: FLAP (global allocation + bias) on the tiny Llama through
    `experiments.prune`'s function with export.pad=true, then plain from_pretrained."""
    from conftest import compose_config
    from diet.run.pipeline import prune_cell

    cell = ["model=tiny_llama", "tasks=[arc_easy,rte]", "calib.n=4", "wandb.mode=disabled", "method=flap",
            "sparsity=0.3", f"results_dir={tmp_path / 'records'}", "export.pad=true", f"save_model={tmp_path / 'm'}"]
    saved = prune_cell(compose_config(cell))
    assert saved["format"] == STANDARD and saved["padded"] is not None, saved["why"]
    assert len(set(saved["padded"]["kept_mlp_widths"])) > 1  # FLAP really allocated non-uniformly
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert stock.config.mlp_bias and stock.config.intermediate_size == max(saved["padded"]["kept_mlp_widths"])
    with pytest.raises(Exception, match="export.pad=.no. is not allowed"):
        prune_cell(compose_config([*cell[:-2], "export.pad=no", f"save_model={tmp_path / 'm2'}"]))


def test_the_padded_reload_bound_catches_one_live_padded_channel(tmp_path):
    """The padded check allows rounding only: one padded channel that is not zero lands far above it."""
    from diet.export.save import reload_agreement, stock_config

    model = uneven(tiny_llama())
    set_down_bias(model, [None, None])
    for layer in adapter_for(model).layers():
        layer.mlp.down_proj.bias = None
    layout, _ = stock_layout(model, pad=True)
    ok_dir, bad_dir = tmp_path / "ok", tmp_path / "bad"
    with stock_config(model, layout.overrides):
        model.save_pretrained(ok_dir, state_dict=layout.state)
        layout, _ = stock_layout(model, pad=True)  # save_pretrained consumes the state dict it is given
        for name in ("gate_proj", "up_proj"):  # layer 1 was padded from 64 to 96 channels: wake channel 95
            layout.state[f"model.layers.1.mlp.{name}.weight"][-1] = 0.05
        layout.state["model.layers.1.mlp.down_proj.weight"][:, -1] = 0.05
        model.save_pretrained(bad_dir, state_dict=layout.state)
    good, bad = reload_agreement(model, ok_dir, 96), reload_agreement(model, bad_dir, 96)
    assert good["identical"] and good["max_logit_difference"] <= good["rounding_bound"]
    assert not bad["identical"] and bad["max_logit_difference"] > 100 * bad["rounding_bound"]


@pytest.mark.parametrize("cell", [["method=diet", "dims=mlp"], ["method=diet", "dims=heads"],
                                  ["method=diet", "dims=mlp+heads"], ["method=diet", "dims=hidden"],
                                  ["method=shortgpt", "sparsity=0.9"], ["method=flap"]],  # 1 of 2 layers
                         ids=["mlp", "heads", "mlp+heads", "hidden", "shortgpt", "flap"])
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma2"])
def test_the_card_states_the_records_sparsity_three_ways(model, cell, tmp_path, isolated_cache):
    """One definition of actual sparsity and of the parameter fractions, in the record and on the card."""
    from conftest import card_fractions, compose_config
    from diet.run.pipeline import run_cell

    cell = cell if any(o.startswith("sparsity=") for o in cell) else [*cell, "sparsity=0.3"]
    record, _ = run_cell(compose_config([f"model={model}", *cell, "tasks=[arc_easy]", "eval.limit=2",
                                         "calib.n=4", "wandb.mode=disabled", f"results_dir={tmp_path / 'records'}",
                                         f"save_model={tmp_path / 'm'}"]))
    actual, non_embedding, total = card_fractions((tmp_path / "m" / "README.md").read_text())
    assert actual == round(record["sparsity"]["actual"], 4) > 0
    assert non_embedding == round(record["parameters"]["removed_fraction_non_embedding"], 4) > 0
    assert total == round(record["parameters"]["removed_fraction_total"], 4) > 0



@pytest.mark.parametrize("build", [tiny_gemma2, tiny_llama], ids=["gemma2", "llama"])
def test_a_hidden_width_transformers_refuses_still_saves_and_reloads_exactly(build, tmp_path):
    """Hidden pruning to 45 of 64 dims with 4 query heads: transformers >= 5.25 refuses hidden_size 45 in a
    config; the spec format writes an accepted width into config.json and load_pruned slices back to 45."""
    import json

    from diet.models.stock_config import stock_refusal
    from diet.prune.hidden import prune_hidden

    model = build()
    prune_hidden(model, torch.arange(64) % 64 < 45)
    batch = left_padded_batch()
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "h", "# c\n")
    assert saved["format"] == SPEC and saved["why"]
    spec = json.loads((tmp_path / "h" / "pruning_spec.json").read_text())
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert spec["hidden_size"] == 45 and config["hidden_size"] == spec.get("config_hidden_size", 45)
    assert stock_refusal(model.config, {"hidden_size": config["hidden_size"]}) is None
    restored, _, _ = load_pruned(tmp_path / "h")
    assert restored.config.hidden_size == 45 and torch.equal(logits(restored, batch), logits(model, batch))
    assert model.config.hidden_size == 45  # the in-memory model is left as it was


def test_a_disk_without_room_fails_before_profiling_and_writes_nothing(tmp_path, isolated_cache, monkeypatch):
    """CI once filled its disk with saved models: the export fell back to the spec format (as if transformers
    had refused the shape) and failed again half-way. A folder without room is refused as soon as the model's
    size is known, naming the folder and both sizes."""
    from conftest import compose_config
    from diet.errors import NoRoomError
    from diet.export import room
    from diet.run.pipeline import run_cell

    import diet.methods.diet as diet_method

    monkeypatch.setattr(room, "free_bytes", lambda path: room.MARGIN_BYTES)  # the margin fits, the weights do not
    monkeypatch.setattr(diet_method.Diet, "select", lambda *a, **k: pytest.fail("profiled before the room check"))
    cell = ["model=tiny_gemma2", "tasks=[arc_easy]", "eval.limit=4", "calib.n=4", "wandb.mode=disabled", "method=diet",
            "sparsity=0.25", f"results_dir={tmp_path / 'records'}", f"save_model={tmp_path / 'model'}"]
    with pytest.raises(NoRoomError, match=r"save_model=.*model.*needs about \d.* MiB .* only 256.0 MiB is free there"):
        run_cell(compose_config(cell))
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".model.*"))


def test_the_export_checks_the_exact_size_and_a_failing_disk_is_no_refusal(tmp_path, monkeypatch):
    from diet.errors import NoRoomError
    from diet.export import room

    model = tiny_llama()
    prune_mlp_channels(model, random_keep(adapter_for(model).mlp_widths(), 0.5))
    needed = room.model_bytes(model)
    dense = room.model_bytes(tiny_llama())
    assert needed < dense and needed == sum(p.numel() * p.element_size() for p in model.state_dict().values()
                                            if p is not model.lm_head.weight or not model.config.tie_word_embeddings)
    monkeypatch.setattr(room, "free_bytes", lambda path: needed + room.MARGIN_BYTES - 1)
    with pytest.raises(NoRoomError, match="needs about"):
        export_model(model, byte_level_tokenizer(), tmp_path / "small", "# card\n")
    monkeypatch.setattr(room, "free_bytes", lambda path: needed + room.MARGIN_BYTES)
    assert export_model(model, byte_level_tokenizer(), tmp_path / "fits", "# card\n")["format"] == STANDARD

    def full_disk(*args, **kwargs):  # as safetensors reports ENOSPC: not an OSError
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(type(model), "save_pretrained", full_disk)
    with pytest.raises(RuntimeError, match="os error 28"):  # not saved in the spec format instead
        export_model(model, byte_level_tokenizer(), tmp_path / "full", "# card\n")
    assert not (tmp_path / "full").exists() and not list(tmp_path.glob(".full.*"))
