"""Every export path on the real models: save, reload with the loader the record names, the same documents
scored the same. Also run by `make test-latest` (the drift check), where a new transformers release that
refuses a saved shape shows up before a user meets it."""

from __future__ import annotations

import pytest

from conftest import card_fractions, compose_config
from diet.export.reload import load_saved
from diet.export.save import SPEC, STANDARD
from diet.models.adapters import parameter_counts
from diet.run.pipeline import eval_settings, run_cell

pytestmark = [pytest.mark.real_model, pytest.mark.drift]

# each export path: the run's overrides, and the format it must give whatever the transformers release
# (None: stock where the installed release accepts the shape, else the spec format with a reason)
PATHS = {
    "mlp": (["method=diet", "dims=mlp"], STANDARD),
    "heads": (["method=diet", "dims=heads"], None),
    "mlp+heads": (["method=diet", "dims=mlp+heads"], None),
    "hidden": (["method=diet", "dims=hidden"], None),
    "shortgpt": (["method=shortgpt"], STANDARD),
    "flap-pad": (["method=flap", "export.pad=true"], None),
    "llm_pruner": (["method=llm_pruner", "calib.source=c4"], None),  # gradient scores; first and last layers whole
    # rotated and sliced, shortcut matrices and an untied head: never a stock architecture
    "slicegpt": (["method=slicegpt", "dims=hidden", "calib.source=wikitext2_test", "calib.windows=4",
                  "calib.window_length=128"], SPEC),
}
MODELS = ["gemma3_270m", "smollm2_135m"]
TASK, LIMIT = "arc_easy", 4


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("model", MODELS)
def test_export_reloads_with_the_named_loader_to_the_same_outcomes(model, path, tmp_path):
    check_export(model, path, *PATHS[path], tmp_path)


def test_llm_pruners_kv_groups_export_and_reload(tmp_path):
    """SmolLM2-135M's 3 KV heads: from a ratio of 1/3 the block-wise mode removes one group in each pruned layer
    (Gemma-3 270M's single KV head is never removed), so the layers differ in KV heads: the spec format."""
    record = check_export("smollm2_135m", "llm_pruner-kv_groups", ["method=llm_pruner", "dims=mlp+kv_groups",
                          "calib.source=c4", "sparsity=0.34"], SPEC, tmp_path)
    kept = record["mask"]["kv_groups"]["kept_per_layer"]
    first, last = record["mask"]["pruned_layers"]
    assert kept == [3] * first + [2] * (last - first) + [3] * (len(kept) - last)


def check_export(model: str, path: str, overrides: list[str], expected_format: str | None, tmp_path) -> dict:
    cfg = compose_config([f"model={model}", "sparsity=0.25", *overrides, f"tasks=[{TASK}]", "calib.n=4",
                          f"eval.limit={LIMIT}", f"results_dir={tmp_path / 'records'}", f"save_model={tmp_path / 'm'}",
                          "wandb.mode=disabled"])
    record, _ = run_cell(cfg)
    saved = record["saved_model"]
    assert saved["format"] in (STANDARD, SPEC)
    if expected_format is not None:
        assert saved["format"] == expected_format, saved["why"]
    if saved["format"] == SPEC:
        assert saved["why"] and saved["load_with"] == "diet.export.checkpoint.load_pruned"

    reloaded, tokenizer = load_saved(saved, cfg["model"]["attn_implementation"])
    zeros = (saved["padded"] or {}).get("zero_parameters", 0)
    assert parameter_counts(reloaded)["total"] == record["parameters"]["after"]["total"] + zeros

    from diet.config.validate import validate
    from diet.eval.evaluate import evaluate

    again = evaluate(reloaded, tokenizer, [TASK], validate(cfg).data_dir, eval_settings(cfg), "cpu")[TASK]
    ours = record["tasks"][TASK]
    assert again["doc_ids"] == ours["doc_ids"] and again["outcomes"] == ours["outcomes"], (path, saved["format"])

    actual, non_embedding, total = card_fractions((tmp_path / "m" / "README.md").read_text())
    assert actual == round(record["sparsity"]["actual"], 4) > 0
    assert non_embedding == round(record["parameters"]["removed_fraction_non_embedding"], 4) != 0
    assert total == round(record["parameters"]["removed_fraction_total"], 4) != 0
    if path == "slicegpt":  # what it adds is counted: at 0.25 the untied head outweighs the slicing on both models
        assert total < 0
    return record
