"""The real Gemma-3 270M (embedded through PyPI), real offline data, real lm-eval, small limits."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import DATA_DIR, compose_config
from diet.paths import cache_dir
from diet.pipeline import run_cell
from diet.tasks import write_offline_task_yamls

pytestmark = pytest.mark.real_model

TASKS = ["arc_easy", "rte", "winogrande", "hellaswag"]
LIMIT = 8


def stock_lm_eval(tmp_path, tasks, limit, batch_size) -> dict:
    """The same model, documents and settings through the stock `lm_eval` CLI (HFLM from the folder)."""
    yamls = write_offline_task_yamls(tmp_path / "yamls", tasks, DATA_DIR)
    model_dir = cache_dir() / "models" / "gemma3_270m"
    out = tmp_path / "stock"
    command = [
        sys.executable, "-m", "lm_eval",
        "--model", "hf",
        "--model_args", f"pretrained={model_dir},dtype=float32,add_bos_token=True",
        "--device", "cpu", "--tasks", ",".join(tasks), "--include_path", str(yamls),
        "--limit", str(limit), "--batch_size", str(batch_size), "--num_fewshot", "0",
        "--output_path", str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, cwd=tmp_path, capture_output=True, text=True)
    [results_file] = list(out.rglob("results_*.json"))
    return json.loads(results_file.read_text())["results"]


def test_dense_equals_stock_lm_eval(tmp_path):
    record, _ = run_cell(compose_config([
        "model=gemma3_270m", "method=dense", f"tasks=[{','.join(TASKS)}]", f"eval.limit={LIMIT}",
        "eval.batch_size=8", f"results_dir={tmp_path / 'records'}", "wandb.mode=disabled",
    ]))
    stock = stock_lm_eval(tmp_path, TASKS, LIMIT, batch_size=8)
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
