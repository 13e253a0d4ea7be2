"""Pruned models as plain transformers checkpoints: stock from_pretrained, no diet code, identical logits."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from conftest import left_padded_batch, logits
from diet.export import SPEC, STANDARD, export_model, standard_overrides
from diet.models.adapters import adapter_for
from diet.models.tiny import byte_level_tokenizer, tiny_gemma2
from diet.prune import load_pruned, prune_mlp_channels, set_down_bias
from diet.prune_attention import prune_attention_heads


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager")
    return LlamaForCausalLM(config).eval()


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


def test_non_uniform_or_biased_models_keep_the_self_describing_format(tmp_path):
    model = tiny_gemma2()
    widths = adapter_for(model).mlp_widths()
    keep = random_keep(widths, 0.75)
    keep[1] = random_keep([widths[1]], 0.5, seed=1)[0]  # layers of different widths (FLAP's allocation)
    prune_mlp_channels(model, keep)
    assert standard_overrides(model)[0] is None and "differ" in standard_overrides(model)[1]
    saved = export_model(model, byte_level_tokenizer(), tmp_path / "flap", "# card\n")
    assert saved["format"] == SPEC and (tmp_path / "flap" / "pruning_spec.json").exists()
    restored, _, _ = load_pruned(tmp_path / "flap")
    batch = left_padded_batch()
    assert torch.equal(logits(restored, batch), logits(model, batch))
    biased = tiny_gemma2()
    prune_mlp_channels(biased, random_keep(widths, 0.75))
    set_down_bias(biased, [torch.full((64,), 0.01), None])
    assert "biases" in standard_overrides(biased)[1]


def test_a_run_saves_its_pruned_model_with_a_card(tmp_path, isolated_cache):
    from conftest import compose_config
    from diet.errors import DietConfigError
    from diet.pipeline import run_cell

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
    from diet.pipeline import prune_cell

    import diet.evaluate

    monkeypatch.setattr(diet.evaluate, "evaluate", lambda *a, **k: pytest.fail("prune_cell must not evaluate"))
    cell = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=4", "wandb.mode=disabled", "method=diet",
            "sparsity=0.25", f"results_dir={tmp_path / 'records'}"]
    saved = prune_cell(compose_config([*cell, f"save_model={tmp_path / 'm'}"]))
    assert saved["format"] == STANDARD and saved["parameters_after"] < saved["parameters_before"]
    assert AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).config.intermediate_size == 96
    assert not (tmp_path / "records").exists() or not any((tmp_path / "records").iterdir())  # no record
    assert "Not evaluated yet" in (tmp_path / "m" / "README.md").read_text()
    with pytest.raises(DietConfigError, match="needs save_model"):
        prune_cell(compose_config(cell))
