"""A second architecture end to end: a tiny random Llama (SmolLM2's family) through profiling, every method,
physical pruning, save and reload, and the fast evaluation, whose scores the reloaded model must reproduce."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import compose_config
from diet.config.validate import validate
from diet.eval.evaluate import evaluate
from diet.methods import METHODS
from diet.models.adapters import parameter_counts
from diet.run.pipeline import eval_settings, run_cell
from diet.export.checkpoint import load_pruned
from diet.export.save import SPEC, STANDARD

CELL = ["model=tiny_llama", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "calib.max_length=64",
        "wandb.mode=disabled"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def reload(saved: dict) -> tuple[torch.nn.Module, object]:
    if saved["format"] == "transformers":  # no diet code involved
        return AutoModelForCausalLM.from_pretrained(saved["path"]).eval(), AutoTokenizer.from_pretrained(saved["path"])
    model, tokenizer, _ = load_pruned(saved["path"])
    return model, tokenizer


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_on_a_tiny_llama(method, shared_cache, tmp_path):
    one_model = not METHODS.get(method).per_task_profiles
    sparsity = 0.6 if method == "shortgpt" else 0.3
    cell = [*CELL, f"method={method}", f"dims={METHODS.get(method).dims[0]}", f"sparsity={sparsity}",
            f"results_dir={tmp_path / 'records'}",
            "export.pad=true", *([f"save_model={tmp_path / 'model'}"] if one_model else [])]
    cfg = compose_config(cell)
    record, _ = run_cell(cfg)
    assert record["model"]["model_type"] == "llama"
    prunes = METHODS.get(method).prunes
    assert (record["parameters"]["after"]["total"] < record["parameters"]["before"]["total"]) is prunes
    if not one_model:
        assert set(record["mask"]["per_task"]) == {"arc_easy", "rte"}
        return
    saved = record["saved_model"]
    # padded / mlp_bias / fewer layers: all stock on Llama; SliceGPT's shortcut matrices never are
    assert saved["format"] == (SPEC if method == "slicegpt" else STANDARD), saved["why"]
    if method == "flap":  # its global allocation leaves layers of different widths: padded, with mlp_bias
        assert saved["padded"] and len(set(saved["padded"]["kept_mlp_widths"])) > 1
    model, tokenizer = reload(saved)
    zeros = (saved.get("padded") or {}).get("zero_parameters", 0)  # what padding added, all of it zeros
    assert parameter_counts(model)["total"] == record["parameters"]["after"]["total"] + zeros
    metrics = evaluate(model, tokenizer, ["arc_easy", "rte"], validate(cfg).data_dir, eval_settings(cfg))
    for task in ("arc_easy", "rte"):  # the saved model reproduces the run's own scores exactly
        assert metrics[task]["score"] == record["tasks"][task]["score"] and metrics[task]["n"] == 4
