"""Check a record against the stock `lm_eval` CLI on the same model, documents and settings.

    python -m experiments.stock_check results/records/gemma3_270m__dense__<hash>__<code>.json
    python -m experiments.stock_check <record of a run with save_model=DIR>   # the saved pruned model

A dense record is checked on the converted checkpoint; a pruned record on the model it saved, when that
is a plain transformers checkpoint (diet/export/save.py).
Runs `lm_eval --model hf` (HFLM loading the converted checkpoint folder) with the offline task YAMLs
that diet uses, then writes results/checks/stock_identity__<record stem>.json with both numbers per
task and metric and whether they are identical. Exit code 1 when any number differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from diet.io import atomic_write_json
from diet.paths import cache_dir
from diet.config.sections import include_paths
from diet.eval.tasks import resolve_task_names, task_spec, write_offline_task_yamls


def document_arguments(record: dict) -> list[str]:
    """The record's documents for the stock CLI: `--samples` (a random sample: each task's doc ids),
    `--limit` (the first N, records before eval.docs=random), or nothing (full splits)."""
    samples = {task: m["doc_ids"] for task, m in record["tasks"].items() if m.get("doc_ids") is not None}
    if samples:  # tasks without doc_ids were evaluated whole (the sample covered the split)
        return ["--samples", json.dumps(samples)]
    if record["eval"]["limit"] is not None and record["eval"].get("docs", "first") == "first":
        return ["--limit", str(record["eval"]["limit"])]
    return []


def checkpoint_of(record: dict) -> Path:
    """The folder stock lm-eval loads: the record's saved model, else (dense) the converted checkpoint."""
    saved = record.get("saved_model")
    if saved and saved.get("format") == "transformers":
        return Path(saved["path"])
    if record["method"] != "dense":
        raise SystemExit("stock lm-eval loads a plain checkpoint: rerun the pruned cell with save_model=DIR "
                         "(uniform shapes) or check a dense record")
    local = record["config"]["model"].get("name_or_path")
    if local and Path(local).is_dir():  # model.source=pretrained from a local folder
        return Path(local)
    return cache_dir() / "models" / record["model"]["name"]


def compared_metrics(task: str, ours: dict) -> list[str]:
    """The metrics of `task` (diet.eval.tasks: acc/acc_norm, exact_match, or word/byte perplexity and bits per
    byte) the record holds."""
    return [metric for metric in task_spec(task).metrics if metric in ours]


def max_length_argument(record: dict) -> str:
    """`eval.max_length` when the run set it (rolling perplexity windows and truncation depend on it)."""
    value = record["config"]["eval"].get("max_length")
    return "" if value is None else f",max_length={value}"


def scoring_argument(record: dict) -> str:
    """The run's scoring dtype (log-softmax and sums: float32 whatever the model), as lm-eval's HFLM takes it;
    records from before it was recorded scored in the model's dtype (float32 on the CPU)."""
    value = record["eval"].get("scoring_dtype")
    return "" if value is None else f",softmax_dtype={value}"


def task_folder(record: dict, work: Path) -> Path:
    """One --include_path folder with every task of the record: offline YAMLs of lm-eval's tasks (their data
    source made local) and a copy of each of the user's eval.include_path folders (their own data files)."""
    data_dir = Path(record["eval"]["data"])
    tasks = list(record["tasks"])
    yamls = write_offline_task_yamls(work / "yamls", [task for task in tasks if not task_spec(task).local_files],
                                     data_dir)
    for number, folder in enumerate(include_paths(record["config"]["eval"].get("include_path"))):
        shutil.copytree(folder, yamls / f"user{number}")
    return yamls


def stock_results(record: dict, work: Path) -> dict:
    """Stock `lm_eval` on the record's model, tasks and documents (run from the current folder, as the cell was:
    a task YAML's relative data paths resolve the same)."""
    tasks = list(record["tasks"])
    yamls = task_folder(record, work)
    model_dir = checkpoint_of(record)
    command = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={model_dir},dtype={record['model']['dtype']},"
                        f"add_bos_token={record['eval']['add_bos_token']}" + max_length_argument(record)
                        + scoring_argument(record),
        "--device", record["model"]["device"], "--tasks", ",".join(tasks), "--include_path", str(yamls),
        "--batch_size", str(record["eval"]["batch_size"]), "--num_fewshot", "0", "--output_path", str(work / "out"),
    ]
    command += document_arguments(record)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env)
    [results_file] = list((work / "out").rglob("results_*.json"))
    return json.loads(results_file.read_text())["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path("results/checks"))
    args = parser.parse_args()
    record = json.loads(args.record.read_text())
    resolve_task_names(list(record["tasks"]), {}, include_paths(record["config"]["eval"].get("include_path")))
    checkpoint_of(record)  # fails here, before lm-eval starts, for a pruned record without a saved model
    with tempfile.TemporaryDirectory() as work:
        stock = stock_results(record, Path(work))
    rows, identical = [], True
    for task, ours in record["tasks"].items():
        for metric in compared_metrics(task, ours):
            theirs = stock[task][f"{metric},none"]
            rows.append({"task": task, "metric": metric, "diet": ours[metric], "stock": theirs,
                         "n": ours["n"], "identical": ours[metric] == theirs})
            identical &= ours[metric] == theirs
    report = {"record": args.record.name, "identical": identical, "rows": rows,
              "command": f"python -m experiments.stock_check {args.record}"}
    path = atomic_write_json(args.out_dir / f"stock_identity__{args.record.stem}.json", report)
    for row in rows:
        print(f"{row['task']:<14} {row['metric']:<9} diet={row['diet']:.4f} stock={row['stock']:.4f} "
              f"{'==' if row['identical'] else '!='}")
    print(f"{'IDENTICAL' if identical else 'DIFFERENT'}; report: {path}")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
