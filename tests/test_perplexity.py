"""WikiText-2 perplexity through lm-eval's own `wikitext` task, offline from the shared file: evaluated
beside the accuracy tasks, never averaged with them, never calibrated on, identical to the stock CLI."""

from __future__ import annotations

import math

import pytest

from conftest import compose_config
from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.models.tiny import byte_level_tokenizer, tiny_gemma2
from diet.run.pipeline import run_cell


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The tiny Gemma-2 as a checkpoint folder, so that the stock CLI loads the very same weights."""
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    tiny_gemma2().save_pretrained(folder)
    byte_level_tokenizer().save_pretrained(folder)
    return folder


def cell(checkpoint, tmp_path, *extra):
    return compose_config(["model=custom", f"model.name_or_path={checkpoint}", "model.name=tiny_ckpt",
                           "model.dtype=float32", "model.device=cpu", "eval.max_length=256", "eval.limit=3",
                           "wandb.mode=disabled", f"results_dir={tmp_path / 'records'}", *extra])


def test_wikitext_is_reported_beside_accuracies_and_equals_stock_lm_eval(checkpoint, tmp_path, isolated_cache):
    from experiments.stock_check import compared_metrics, stock_results

    record, _ = run_cell(cell(checkpoint, tmp_path, "method=dense", "tasks=[arc_easy,wikitext]"))
    ppl = record["tasks"]["wikitext"]
    assert ppl["metric"] == "word_perplexity" and ppl["n"] == 3 and len(ppl["doc_ids"]) == 3  # random docs
    assert ppl["word_perplexity"] > 1 and 0 < ppl["bits_per_byte"] and ppl["byte_perplexity"] > 1
    assert record["average"]["tasks"] == ["arc_easy"]  # a perplexity is never averaged with accuracies
    assert record["average"]["score"] == record["tasks"]["arc_easy"]["score"]
    stock = stock_results(record, tmp_path)  # stock `lm_eval --model hf --include_path` on the same folder
    assert compared_metrics("wikitext", ppl) == ["word_perplexity", "byte_perplexity", "bits_per_byte"]
    for metric in compared_metrics("wikitext", ppl):
        assert ppl[metric] == stock["wikitext"][f"{metric},none"], metric  # exact
    assert record["tasks"]["arc_easy"]["acc"] == stock["arc_easy"]["acc,none"]


def test_wikitext_is_never_calibrated_on(checkpoint, tmp_path, isolated_cache):
    record, _ = run_cell(cell(checkpoint, tmp_path, "method=diet", "sparsity=0.25", "calib.n=2",
                              "tasks=[arc_easy,wikitext]"))
    assert record["calib_tasks"] == ["arc_easy"] and not math.isnan(record["tasks"]["wikitext"]["score"])
    with pytest.raises(DietConfigError, match="perplexity task.*wikitext.*not allowed"):
        validate(cell(checkpoint, tmp_path, "method=diet", "tasks=[arc_easy,wikitext]", "calib.tasks=[wikitext]"))
    with pytest.raises(DietConfigError, match="all perplexity tasks: name the tasks to profile"):
        validate(cell(checkpoint, tmp_path, "method=diet", "tasks=[wikitext]"))
    assert validate(cell(checkpoint, tmp_path, "method=diet", "tasks=[wikitext]", "calib.tasks=[arc_easy]"))
    # FLAP's nearest own text (WikiText-2 test) is a calibration source, never beside WikiText's perplexity
    with pytest.raises(DietConfigError, match="calib.source='wikitext2_test' is WikiText and its perplexity is evaluated"):
        validate(cell(checkpoint, tmp_path, "method=flap", "tasks=[arc_easy,wikitext]", "calib.source=wikitext2_test"))
    checked = validate(cell(checkpoint, tmp_path, "method=flap", "tasks=[arc_easy]", "calib.source=wikitext2_test"))
    assert checked.method.name == "flap"
