"""Evaluation throughput: lm-eval's stock HFLM vs diet's fast backend, same model, same documents.

    .venv/bin/python benchmarks/eval_throughput.py --limit 30 --tasks paper7 --batch-size 8

Each backend runs in its own subprocess (so each peak RSS, `ru_maxrss`, is its own): load the model,
then time `lm_eval.simple_evaluate` zero-shot on the tasks exactly as diet.eval.evaluate runs it (plus
log_samples, to compare per-document results). Reports documents/s (whole evaluation, and the
loglikelihood scoring alone), the fast/stock ratio, peak memory, and whether the two backends agree
(max |loglikelihood difference| per request, identical per-document acc / acc_norm). Writes
results/benchmarks/eval_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python benchmarks/<name>.py
from benchmarks.common import (  # noqa: E402
    MIB, RESULTS_DIR, command_line, local_data_dir, machine, machine_line, model_config,
    peak_rss_bytes, resolve_tasks, run_worker_process, write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=30, help="documents per task (default 30)")
    parser.add_argument("--tasks", default="paper7", help="a task set of conf/config.yaml, a task, or a,b,c")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="gemma3_270m", help="a conf/model/*.yaml entry (default gemma3_270m)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--backends", default="stock,fast", help="backends to run, in this order")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)       # internal: run one backend
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_worker(args: argparse.Namespace) -> None:
    """One backend, in this process: load, evaluate, write timings + per-document results as JSON."""
    import logging

    import psutil
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from diet.eval.evaluate import EvalSettings, make_lm
    from diet.models import load_model
    from diet.eval.tasks import build_tasks

    logging.disable(logging.WARNING)  # stock HFLM warns once per truncated request
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = resolve_tasks(args.tasks)
    start = time.perf_counter()
    loaded = load_model(model_config(args.model, args.device))
    load_seconds = time.perf_counter() - start
    rss_loaded = psutil.Process().memory_info().rss
    task_objects = build_tasks(tasks, local_data_dir(), with_train=False)
    settings = EvalSettings(limit=args.limit, batch_size=args.batch_size, backend=args.worker)
    lm = make_lm(loaded.model, loaded.tokenizer, settings, loaded.device)

    scoring = {"seconds": 0.0, "requests": 0}
    loglikelihood = lm.loglikelihood

    def timed_loglikelihood(requests, *a, **k):
        t0 = time.perf_counter()
        out = loglikelihood(requests, *a, **k)
        scoring["seconds"] += time.perf_counter() - t0
        scoring["requests"] += len(requests)
        return out

    lm.loglikelihood = timed_loglikelihood
    load_before = list(os.getloadavg())
    start = time.perf_counter()
    results = simple_evaluate(
        model=lm, tasks=list(task_objects.values()), num_fewshot=0, limit=args.limit, log_samples=True,
        task_manager=TaskManager(include_defaults=False), random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0,
    )
    eval_seconds = time.perf_counter() - start
    load_after = list(os.getloadavg())
    peak_rss = peak_rss_bytes()
    samples = {
        task: [
            {
                "doc_id": s["doc_id"],
                "loglikelihoods": [float(r[0][0]) for r in s["resps"]],
                "greedy": [bool(r[0][1]) for r in s["resps"]],
                **{m: float(s[m]) for m in ("acc", "acc_norm") if m in s},
            }
            for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])
        ]
        for task in tasks
    }
    out = {
        "backend": args.worker,
        "class": type(lm).__name__,
        "load_seconds": load_seconds,
        "eval_seconds": eval_seconds,
        "scoring_seconds": scoring["seconds"],
        "requests": scoring["requests"],
        "docs": sum(len(v) for v in samples.values()),
        "docs_per_task": {task: len(v) for task, v in samples.items()},
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,  # 1/5/15-minute load: other processes share the CPUs
        "load_average_after": load_after,
        "rss_after_load_bytes": rss_loaded,
        "peak_rss_bytes": peak_rss,
        "metrics": {
            task: {k.split(",")[0]: v for k, v in results["results"][task].items()
                   if k.endswith(",none") and isinstance(v, float) and "stderr" not in k}
            for task in tasks
        },
        "samples": samples,
    }
    Path(args.worker_out).write_text(json.dumps(out))


def compare(runs: dict[str, dict[str, Any]], reference: str, candidate: str) -> dict[str, Any]:
    """Per-request and per-document agreement of two backends' samples."""
    max_diff, n_requests, n_docs, greedy_same, metric_diffs = 0.0, 0, 0, True, []
    for task, ref_samples in runs[reference]["samples"].items():
        for ref, cand in zip(ref_samples, runs[candidate]["samples"][task], strict=True):
            assert ref["doc_id"] == cand["doc_id"]
            n_docs += 1
            for a, b in zip(ref["loglikelihoods"], cand["loglikelihoods"], strict=True):
                max_diff = max(max_diff, abs(a - b))
                n_requests += 1
            greedy_same &= ref["greedy"] == cand["greedy"]
            for metric in ("acc", "acc_norm"):
                if metric in ref and ref[metric] != cand[metric]:
                    metric_diffs.append((task, ref["doc_id"], metric))
    return {
        "requests": n_requests,
        "docs": n_docs,
        "max_abs_loglikelihood_diff": max_diff,
        "is_greedy_identical": greedy_same,
        "docs_with_different_acc_or_acc_norm": len(metric_diffs),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Evaluation throughput: stock lm-eval HFLM vs diet fast backend",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Model {report['settings']['model']}, tasks {', '.join(report['settings']['tasks'])}, "
        f"{report['settings']['limit']} docs per task, batch size {report['settings']['batch_size']}, "
        f"device {report['settings']['device']}, "
        f"{next(iter(report['backends'].values()))['torch_threads']} torch threads.",
        "",
        "| backend | docs | requests | eval s | docs/s | scoring s | scoring docs/s | peak RSS MiB | RSS after load MiB | load avg (1 min) before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in report["backends"].items():
        lines.append(
            f"| {name} | {run['docs']} | {run['requests']} | {run['eval_seconds']:.1f} | {run['docs_per_s']:.2f} | "
            f"{run['scoring_seconds']:.1f} | {run['scoring_docs_per_s']:.2f} | {run['peak_rss_bytes'] / MIB:.0f} | "
            f"{run['rss_after_load_bytes'] / MIB:.0f} | {run['load_average_before'][0]:.1f} / {run['load_average_after'][0]:.1f} |"
        )
    if "speedup" in report:
        s = report["speedup"]
        lines += ["", f"Speed-up fast / stock: **{s['docs_per_s']:.2f}x** (whole evaluation), "
                      f"{s['scoring_docs_per_s']:.2f}x (loglikelihood scoring alone)."]
    if "identity" in report:
        i = report["identity"]
        lines += ["", f"Identity: {i['requests']} requests over {i['docs']} documents, max |loglikelihood "
                      f"difference| {i['max_abs_loglikelihood_diff']:.2e}, is_greedy identical: "
                      f"{i['is_greedy_identical']}, documents with a different acc/acc_norm: "
                      f"{i['docs_with_different_acc_or_acc_norm']}."]
    lines += ["", machine_line(report["machine"]) + " The two backends ran one after the other.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return {}
    from diet.eval.evaluate import BACKENDS

    backends = args.backends.split(",")
    for name in backends:
        BACKENDS.get(name)
    tasks = resolve_tasks(args.tasks)
    command = command_line("eval_throughput.py", argv)
    report: dict[str, Any] = {
        "command": command,
        "machine": machine(),
        "settings": {"model": args.model, "tasks": tasks, "limit": args.limit, "batch_size": args.batch_size,
                     "device": args.device, "threads": args.threads},
        "backends": {},
    }
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            options = ["--limit", str(args.limit), "--tasks", args.tasks, "--batch-size", str(args.batch_size),
                       "--model", args.model, "--device", args.device]
            runs[name] = run_worker_process(__file__, name, options, args.threads, tmp, quiet=True)
            run = runs[name]
            run["docs_per_s"] = run["docs"] / run["eval_seconds"]
            run["scoring_docs_per_s"] = run["docs"] / run["scoring_seconds"]
            report["backends"][name] = {k: v for k, v in run.items() if k != "samples"}
            print(f"[{name}] {run['docs']} docs in {run['eval_seconds']:.1f} s: {run['docs_per_s']:.2f} docs/s, "
                  f"peak RSS {run['peak_rss_bytes'] / MIB:.0f} MiB", flush=True)
    if "stock" in runs and "fast" in runs:
        report["speedup"] = {
            "docs_per_s": runs["fast"]["docs_per_s"] / runs["stock"]["docs_per_s"],
            "scoring_docs_per_s": runs["fast"]["scoring_docs_per_s"] / runs["stock"]["scoring_docs_per_s"],
        }
        report["identity"] = compare(runs, "stock", "fast")
    text = markdown(report)
    print(text)
    write_report("eval_throughput", report, text, args.out)
    return report


if __name__ == "__main__":
    main()
