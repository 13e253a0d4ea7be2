"""The real Gemma-3 270M (embedded through PyPI), real offline data, real lm-eval, small limits."""

from __future__ import annotations

import json
import math

import pytest

from conftest import compose_config
from diet.run.pipeline import run_cell

pytestmark = [pytest.mark.real_model, pytest.mark.drift]  # drift: make test-latest runs it too

TASKS = ["arc_easy", "rte", "winogrande", "hellaswag"]
LIMIT = 8


def test_dense_equals_stock_lm_eval(tmp_path):
    """A random sample of documents (the default with a limit) scored by diet and by the stock CLI given
    the record's doc ids (`--samples`, experiments/stock_check.py): the same numbers exactly."""
    from experiments.stock_check import document_arguments, stock_results

    record, _ = run_cell(compose_config([
        "model=gemma3_270m", "method=dense", f"tasks=[{','.join(TASKS)}]", f"eval.limit={LIMIT}",
        "eval.batch_size=8", f"results_dir={tmp_path / 'records'}", "wandb.mode=disabled",
    ]))
    arguments = document_arguments(record)
    assert arguments[0] == "--samples" and json.loads(arguments[1])["rte"] == record["tasks"]["rte"]["doc_ids"]
    stock = stock_results(record, tmp_path)
    for task in TASKS:
        ours = record["tasks"][task]
        assert ours["n"] == LIMIT
        for metric in ("acc", "acc_norm"):
            if metric in ours:
                assert ours[metric] == stock[task][f"{metric},none"], (task, metric)
    assert record["eval"]["bos_prepended"] is True
    assert record["model"]["parameters"]["total"] == 268_098_176


def test_diet_prunes_real_model_and_reports_it(tmp_path):
    record, _ = run_cell(compose_config([
        "model=gemma3_270m", "method=diet", "sparsity=0.2", "tasks=[arc_easy,rte]", "calib.n=8",
        "eval.limit=4", f"results_dir={tmp_path / 'records'}", "wandb.mode=disabled", "seed=123",
    ]))
    removed_per_layer = round(0.2 * 2048)
    assert record["mask"]["kept_per_layer"] == [2048 - removed_per_layer] * 18
    assert record["sparsity"]["actual"] == pytest.approx(removed_per_layer / 2048)
    params = record["parameters"]
    assert params["before"]["total"] - params["after"]["total"] == 18 * removed_per_layer * 3 * 640
    assert params["after"]["embedding"] == params["before"]["embedding"]
    assert set(record["mask"]["jaccard"]) == {"arc_easy|rte"} and 0 < record["mask"]["jaccard"]["arc_easy|rte"] < 1
    assert all(not math.isnan(m["score"]) for m in record["tasks"].values())


def test_saved_diet_model_equals_stock_lm_eval_on_it(tmp_path):
    """A DIET 20% Gemma-3 270M saved by the run (save_model) is a plain checkpoint: the stock lm_eval CLI
    (HFLM from the folder, no diet code) scores the record's documents exactly as the run did, a generation task
    of the user's (eval.include_path, greedy exact match; calibrated on prompt + answer) included."""
    from experiments.stock_check import stock_results
    from test_user_tasks import write_generation_task

    gen = write_generation_task(tmp_path / "gen")
    record, _ = run_cell(compose_config([
        "model=gemma3_270m", "method=diet", "sparsity=0.2", "tasks=[arc_easy,rte,copy_word]", "calib.n=4",
        "eval.limit=8", f"eval.include_path={gen}", f"results_dir={tmp_path / 'records'}",
        f"save_model={tmp_path / 'diet20'}", "wandb.mode=disabled",
    ]))
    assert record["saved_model"]["format"] == "transformers" and record["mask"]["num_tasks"] == 3
    assert record["tasks"]["copy_word"]["metric"] == "exact_match" and record["tasks"]["copy_word"]["n"] == 6
    stock = stock_results(record, tmp_path)
    compared = 0
    for task, ours in record["tasks"].items():
        for metric in ("acc", "acc_norm", "exact_match"):
            if metric in ours:
                assert ours[metric] == stock[task][f"{metric},none"], (task, metric)
                compared += 1
    assert compared == 4  # arc_easy acc/acc_norm, rte acc, copy_word exact_match
