"""The whole cell at Gemma-2 2B / 9B layouts, on CPU, before a user with a GPU tries it.

    python benchmarks/scale_e2e.py --shape 2b                    # the real 2B layout, float32 (~10.5 GB)
    python benchmarks/scale_e2e.py --shape 9b --dtype bfloat16   # the 9B layout where memory allows
    python benchmarks/scale_e2e.py --shape 2b --layers 2         # 2 layers of the real widths (the test suite)
    python benchmarks/scale_e2e.py --shape 9b --meta             # shapes only (no weights): where RAM is short

Random weights in the exact Gemma-2 configuration (diet.models.tiny.GEMMA2_SHAPES: hidden 2304/3584, MLP
9216/14336, 8/16 query heads, 4/8 KV heads, head_dim 256, sliding window 4096, attention and final logit
soft-capping, eager attention, tied 256k embedding), built by the `tiny_random` model source, so each cell
is `diet.run.pipeline.run_cell` itself: calibration on a few real train samples per task (diet's byte-level
tokenizer), profile, DIET (MLP channels + query heads, 0.5) and FLAP (MLP, global allocation + bias, 0.2)
selection, physical pruning, the export (save_model, `export.pad=true` for FLAP's uneven widths), the
fast evaluation on a few random documents per task, and a record. Then the saved folder is reloaded
(plain transformers, or diet.export.checkpoint.load_pruned) and evaluated again by both the fast and the stock
lm-eval backends on the same documents: both must give the record's scores, and the per-request
loglikelihoods of fast and stock must agree within the float32 rounding bound (diet.rounding.loglikelihood_bound).
Per stage: seconds and peak memory from the record; the tensor shapes; what ran and what did not.
`--meta` builds the model on PyTorch's meta device (shapes, no weights) and runs only what needs no
values: DIET-shaped selection from random scores, physical MLP + head pruning, the stock-config layout
of the export and the parameter counts and weight bytes; profiling, evaluation and saving are reported
as not run. Writes results/benchmarks/scale_e2e_<shape>[_meta].{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python benchmarks/<name>.py
from benchmarks.common import RESULTS_DIR, command_line, local_data_dir, machine, machine_line, write_report  # noqa: E402

# DIET prunes MLP channels and query heads at 0.5: with 2 query heads per KV group, 0.2 of a group
# rounds to no head at all (diet.dims.heads.select_heads), 0.5 removes one per group. FLAP at the paper's 0.2.
CELLS = {"diet": ["method=diet", "dims=mlp+heads", "sparsity=0.5"],
         "flap": ["method=flap", "dims=mlp", "sparsity=0.2", "export.pad=true"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="2b", choices=["2b", "9b"])
    parser.add_argument("--layers", type=int, default=None, help="fewer decoder layers of the real widths")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--methods", default="diet,flap")
    parser.add_argument("--tasks", default="boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa")
    parser.add_argument("--calib-n", type=int, default=2, help="calibration samples per task")
    parser.add_argument("--docs", type=int, default=2, help="evaluated documents per task (random, seed 0)")
    parser.add_argument("--batch-size", type=int, default=1, help="eval batch (the stock backend's full-vocabulary "
                        "logits are batch x tokens x 256k floats)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--meta", action="store_true", help="shapes only, on the meta device")
    parser.add_argument("--work", default=None, help="folder for records and saved models (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    return parser.parse_args(argv)


def cell_overrides(args: argparse.Namespace, method: str, work: Path) -> list[str]:
    from diet.models.tiny import GEMMA2_SHAPES

    shape = dict(GEMMA2_SHAPES[args.shape])
    if args.layers is not None:
        shape["num_hidden_layers"] = args.layers
    model = "{" + ",".join(f"{k}:{v}" for k, v in shape.items()) + "}"
    return ["model=tiny_gemma2", f"model.name=gemma2_{args.shape}_shape", f"++model.overrides={model}",
            f"model.dtype={args.dtype}", f"tasks=[{args.tasks}]", f"calib.n={args.calib_n}", "calib.max_length=256",
            f"eval.limit={args.docs}", f"eval.batch_size={args.batch_size}", "wandb.mode=disabled",
            f"results_dir={work / 'records'}", f"save_model={work / method}", *CELLS[method],
            *([f"threads={args.threads}"] if args.threads else [])]


def compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides), resolve=True)


def reload(saved: dict[str, Any]) -> tuple[Any, Any]:
    from diet.export.reload import load_saved

    return load_saved(saved)


def shapes_of(model: Any) -> dict[str, Any]:
    from diet.models.adapters import adapter_for

    adapter = adapter_for(model)
    layer = adapter.layers()[0]
    return {"mlp_widths": adapter.mlp_widths(), "query_heads": adapter.head_counts(),
            "layer0": {name: list(p.shape) for name, p in layer.named_parameters() if p.dim() == 2},
            "embedding": list(model.get_input_embeddings().weight.shape)}


def backends_agree(model: Any, tokenizer: Any, cfg: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The reloaded model through the fast and the stock backend on the record's documents."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from diet.config.validate import validate
    from diet.eval.evaluate import make_lm
    from diet.run.pipeline import eval_settings
    from diet.eval.tasks import build_tasks

    import dataclasses

    settings = eval_settings(cfg)
    tasks = list(record["tasks"])
    out: dict[str, Any] = {}
    for backend in ("fast", "stock"):
        lm = make_lm(model, tokenizer, dataclasses.replace(settings, backend=backend), "cpu")
        objects = build_tasks(tasks, validate(cfg).data_dir, with_train=False)
        samples = {t: record["tasks"][t]["doc_ids"] for t in tasks}
        start = time.perf_counter()
        results = simple_evaluate(model=lm, tasks=list(objects.values()), num_fewshot=0, samples=samples,
                                  log_samples=True, task_manager=TaskManager(include_defaults=False))
        out[backend] = {"seconds": round(time.perf_counter() - start, 2), "results": results}
    from diet.export.save import probe_batch
    from diet.rounding import depth_and_length, loglikelihood_bound

    with torch.no_grad():  # the logits' scale, which their rounding errors follow
        scale = float(model(input_ids=probe_batch(model)).logits.abs().max())
    depth, length = depth_and_length(model)
    worst, bound, requests, same = 0.0, 0.0, 0, True
    for task in tasks:
        by_doc = {backend: {s["doc_id"]: s for s in out[backend]["results"]["samples"][task]} for backend in out}
        for doc_id, fast in by_doc["fast"].items():
            stock = by_doc["stock"][doc_id]
            for rf, rs, args in zip(fast["resps"], stock["resps"], stock["arguments"]):
                tokens = len(tokenizer(args[1], add_special_tokens=False).input_ids)
                worst = max(worst, abs(float(rf[0][0]) - float(rs[0][0])))
                bound = max(bound, loglikelihood_bound(scale, depth, length, tokens))
                same &= bool(rf[0][1]) == bool(rs[0][1])
                requests += 1
            same &= all(fast.get(m) == stock.get(m) for m in ("acc", "acc_norm"))
    scores = {b: {t: out[b]["results"]["results"][t] for t in tasks} for b in out}
    reproduces = {b: all(scores[b][t][f"{record['tasks'][t]['metric']},none"] == record["tasks"][t]["score"]
                         for t in tasks) for b in out}
    return {"requests": requests, "fast_seconds": out["fast"]["seconds"], "stock_seconds": out["stock"]["seconds"],
            "identical_predictions": same, "max_abs_loglikelihood_diff": worst, "bound": bound,
            "within_bound": worst <= bound, "reload_reproduces_record": reproduces}


def run_method(args: argparse.Namespace, method: str, work: Path) -> dict[str, Any]:
    from diet.models.adapters import parameter_counts
    from diet.run.pipeline import run_cell

    cfg = compose(cell_overrides(args, method, work))
    print(f"[{method}] run_cell", flush=True)
    start = time.perf_counter()
    record, path = run_cell(cfg)
    cell_seconds = time.perf_counter() - start
    gc.collect()
    from diet.run.memory import peak_bytes, reset_peak

    reset_peak("cpu")
    load_start = time.perf_counter()
    model, tokenizer = reload(record["saved_model"])
    reload_seconds = time.perf_counter() - load_start
    shapes = shapes_of(model)
    print(f"[{method}] fast vs stock on the reloaded model", flush=True)
    agreement = backends_agree(model, tokenizer, cfg, record)
    reload_peak = peak_bytes("cpu") / 2**30
    saved_parameters = parameter_counts(model)["total"]
    del model
    gc.collect()
    return {"record": str(path.name), "cell_seconds": round(cell_seconds, 1), "timings": record["timings"],
            "peak_memory_gib": record.get("peak_memory_gib"), "sparsity": record["sparsity"]["actual"],
            "by_dim": record["sparsity"].get("by_dim"), "parameters": record["parameters"],
            "saved_model": {k: v for k, v in record["saved_model"].items() if k != "path"},
            "saved_parameters": saved_parameters, "reload_seconds": round(reload_seconds, 1),
            "reload_and_eval_peak_memory_gib": round(reload_peak, 3), "shapes": shapes,
            "scores": {t: m["score"] for t, m in record["tasks"].items()}, "backends": agreement}


def meta_structure(args: argparse.Namespace) -> dict[str, Any]:
    """The pruning and export logic on a weightless (meta) model of the real layout."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from diet.select import masks
    from diet.dims.heads import HeadLayout, select_heads
    from diet.models.adapters import adapter_for, parameter_counts
    from diet.models.tiny import GEMMA2_SHAPES
    from diet.prune.mlp import prune_mlp_channels
    from diet.prune.attention import prune_attention_heads
    from diet.export.stock_layout import stock_layout

    shape = dict(GEMMA2_SHAPES[args.shape], **({"num_hidden_layers": args.layers} if args.layers else {}))
    start = time.perf_counter()
    with torch.device("meta"):
        model = Gemma2ForCausalLM(Gemma2Config(**shape, attn_implementation="eager"))
    adapter, generator = adapter_for(model), torch.Generator().manual_seed(0)
    before = parameter_counts(model)
    scores = [torch.rand(w, generator=generator, dtype=torch.float64) for w in adapter.mlp_widths()]
    prune_mlp_channels(model, masks.task_mask(scores, 0.5, scope="layer"))
    heads = [torch.rand(adapter.num_heads(i), generator=generator, dtype=torch.float64)
             for i in range(adapter.num_layers())]
    prune_attention_heads(model, select_heads(heads, 0.5, HeadLayout.of(model)))
    after = parameter_counts(model)
    layout, why = stock_layout(model)
    return {"cells": "DIET-shaped selection (random scores) at 0.5, MLP + query heads", "seconds": round(
            time.perf_counter() - start, 2), "parameters": {"before": before, "after": after},
            "weight_gib": {dtype: {"before": round(before["total"] * size / 2**30, 2),
                                   "after": round(after["total"] * size / 2**30, 2)}
                           for dtype, size in (("float32", 4), ("bfloat16", 2))},
            "shapes": shapes_of(model), "stock_config": layout.overrides if layout else None, "stock_why": why}


def meta_markdown(report: dict[str, Any]) -> str:
    r = report["meta"]
    gib = r["weight_gib"]
    return "\n".join([
        f"# Gemma-2 {report['shape']} layout on the meta device (shapes only)", "", f"Command: `{report['command']}`",
        "", machine_line(report["machine"]), "", f"Layout: {report['layout']}. {r['cells']}, in {r['seconds']} s.", "",
        f"- parameters {r['parameters']['before']['total']:,} -> {r['parameters']['after']['total']:,} "
        f"(non-embedding {r['parameters']['before']['non_embedding']:,} -> {r['parameters']['after']['non_embedding']:,})",
        f"- weights: float32 {gib['float32']['before']} -> {gib['float32']['after']} GiB, bfloat16 "
        f"{gib['bfloat16']['before']} -> {gib['bfloat16']['after']} GiB",
        f"- MLP widths {sorted(set(r['shapes']['mlp_widths']))}, query heads {sorted(set(r['shapes']['query_heads']))};"
        f" layer 0: " + ", ".join(f"{k} {v}" for k, v in r["shapes"]["layer0"].items()),
        f"- export: stock config {r['stock_config']} ({r['stock_why']})", "",
        f"Not run: {report['not_run']}", ""])


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# End to end at the Gemma-2 {report['shape']} layout (random weights, CPU)", "",
             f"Command: `{report['command']}`", "", machine_line(report["machine"]), "",
             f"Layout: {report['layout']}; {report['dtype']}; {report['calib_n']} calibration samples and "
             f"{report['docs']} random documents per task ({len(report['tasks'])} tasks). Scores of random weights "
             f"are meaningless: this checks the machinery.", ""]
    for method, r in report["methods"].items():
        b, saved = r["backends"], r["saved_model"]
        lines += [f"## {method}: sparsity {r['sparsity']:.3f}, {r['parameters']['before']['total']:,} -> "
                  f"{r['parameters']['after']['total']:,} parameters", "",
                  "| stage | seconds | peak memory (GiB) |", "|---|---:|---:|",
                  *[f"| {s} | {sec:.1f} | {(r['peak_memory_gib'] or {}).get(s, float('nan')):.2f} |"
                    for s, sec in r["timings"].items()],
                  f"| reload + fast and stock evaluation | {r['reload_seconds'] + b['fast_seconds'] + b['stock_seconds']:.1f} "
                  f"| {r['reload_and_eval_peak_memory_gib']:.2f} |", "",
                  f"- saved as {saved['format']} ({saved['why']}); {r['saved_parameters']:,} parameters in the folder"
                  + (f", {saved['padded']['zero_parameters']:,} of them padding zeros (reload max |logit diff| "
                     f"{saved['padded']['max_logit_difference']:.2e}, bound {saved['padded']['rounding_bound']:.2e})"
                     if saved.get("padded") else ""),
                  f"- MLP widths after: {sorted(set(r['shapes']['mlp_widths']))}; query heads: "
                  f"{sorted(set(r['shapes']['query_heads']))}; layer 0 weights: "
                  + ", ".join(f"{k} {v}" for k, v in r["shapes"]["layer0"].items()),
                  f"- reloaded model, fast vs stock on {b['requests']} requests: identical predictions "
                  f"{b['identical_predictions']}, max |loglikelihood diff| {b['max_abs_loglikelihood_diff']:.2e} "
                  f"(bound {b['bound']:.2e}); scores equal to the record's: {b['reload_reproduces_record']}; "
                  f"fast {b['fast_seconds']:.1f} s, stock {b['stock_seconds']:.1f} s", ""]
    lines += [f"Not run: {report['not_run']}", ""] if report.get("not_run") else []
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from diet.models.tiny import GEMMA2_SHAPES

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = GEMMA2_SHAPES[args.shape]
    layers = args.layers or shape["num_hidden_layers"]
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="scale_e2e_"))
    methods = args.methods.split(",")
    report: dict[str, Any] = {
        "command": command_line("scale_e2e.py", argv), "machine": machine(), "shape": args.shape,
        "layout": f"{layers} of {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, MLP "
                  f"{shape['intermediate_size']}, {shape['num_attention_heads']} query / {shape['num_key_value_heads']} "
                  f"KV heads, head_dim {shape['head_dim']}, vocab {shape['vocab_size']}",
        "dtype": args.dtype, "calib_n": args.calib_n, "docs": args.docs, "tasks": args.tasks.split(","),
        "data": str(local_data_dir()), "methods": {}, "not_run": None}
    suffix = f"_{layers}layers" if args.layers else ""
    if args.meta:
        report["meta"] = meta_structure(args)
        report["not_run"] = ("calibration, profiling, evaluation, save/reload: a meta model has no weights "
                             f"({report['meta']['weight_gib']['bfloat16']['before']} GiB in bfloat16 do not fit "
                             "beside the study in this machine's 23 GiB)")
        write_report(f"scale_e2e_{args.shape}{suffix}_meta", report, meta_markdown(report), args.out)
        return report
    for method in methods:
        report["methods"][method] = run_method(args, method, work_root)
    write_report(f"scale_e2e_{args.shape}{suffix}", report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
