"""Pruned speed: dense vs physically pruned MLPs (20% and 50% of the channels) against the ideal FLOP ratio.

    .venv/bin/python benchmarks/pruned_speed.py --models gemma3_270m,gemma2_2b_shape --sparsities 0.2,0.5

Per model (each in its own subprocess, so its peak memory is its own): build the model, time the
forward pass on a fixed batch of random tokens, then prune the MLP channels in place to each sparsity
(uniform per layer, seeded random channels: speed depends on the shapes only, not on which channels)
and time again. Reported per step: median forward latency, parameters (total and non-embedding),
weight bytes, peak memory during the timed forwards (CPU: resident set, Linux VmHWM reset before each
step; CUDA: max allocated), and the FLOPs of every nn.Linear in the forward counted by hooks. The
ideal speed-up is dense FLOPs / pruned FLOPs; the measured one is dense latency / pruned latency.

Models: any conf/model/*.yaml entry (real weights), or `gemma2_2b_shape` / `gemma2_9b_shape`: random
weights in the published Gemma-2 layout (diet.models.tiny.GEMMA2_SHAPES; no hub download). The forward
keeps LM-head logits for the last position only (`logits_to_keep=1`), as prefill before generation.
Writes results/benchmarks/pruned_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python benchmarks/<name>.py
from benchmarks.common import (  # noqa: E402
    MIB, REPO_ROOT, RESULTS_DIR, command_line, machine, machine_line, model_config, peak_rss_bytes,
    reset_peak_rss, run_worker_process, write_report,
)

SHAPE_SUFFIX = "_shape"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3_270m,gemma2_2b_shape",
                        help="conf/model entries and/or gemma2_2b_shape, gemma2_9b_shape (random weights)")
    parser.add_argument("--sparsities", default="0.2,0.5", help="MLP channel fractions removed")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per step, after one warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)       # internal: run one model
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.sparsity_values = sorted(float(s) for s in args.sparsities.split(","))
    except ValueError:
        parser.error(f"--sparsities must be comma-separated numbers, got {args.sparsities!r}")
    bad = [s for s in args.sparsity_values if not 0.0 < s < 1.0]
    if bad:
        parser.error(f"--sparsities must lie strictly between 0 and 1, got {bad}")
    for name in ("batch_size", "seq_len", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def check_model_name(name: str) -> None:
    from diet.models.tiny import GEMMA2_SHAPES

    shapes = [f"gemma2_{key}{SHAPE_SUFFIX}" for key in GEMMA2_SHAPES]
    if name in shapes:
        return
    if not (REPO_ROOT / "conf" / "model" / f"{name}.yaml").is_file():
        available = sorted(p.stem for p in (REPO_ROOT / "conf" / "model").glob("*.yaml")) + shapes
        raise SystemExit(f"unknown model {name!r}: available {', '.join(available)}")


def build_model(name: str, device: str) -> tuple[Any, str]:
    """(model in float32 on `device`, 'real weights' | 'random weights')."""
    import torch

    from diet.models import load_model
    from diet.models.tiny import GEMMA2_SHAPES, tiny_gemma2

    if name.endswith(SHAPE_SUFFIX) and name.startswith("gemma2_"):
        shape = name[len("gemma2_"):-len(SHAPE_SUFFIX)]
        model = tiny_gemma2(seed=0, **GEMMA2_SHAPES[shape]).to(device=device, dtype=torch.float32)
        return model.eval(), "random weights"
    cfg = model_config(name, device)
    cfg["dtype"] = "float32"
    loaded = load_model(cfg)
    return loaded.model, "random weights" if loaded.info["source"] == "tiny_random" else "real weights"


def linear_flops(model: Any, run) -> int:
    """Multiply-adds x 2 of every nn.Linear in one call of `run` (counted by forward hooks)."""
    from torch import nn

    total = 0

    def hook(module, args, output):
        nonlocal total
        total += 2 * module.in_features * module.out_features * (args[0].numel() // module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def random_keep(widths: list[int], target_widths: list[int], seed: int) -> list:
    """Per layer, a seeded random mask over the current width keeping `target` channels."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    masks = []
    for width, target in zip(widths, target_widths):
        keep = torch.zeros(width, dtype=torch.bool)
        keep[torch.randperm(width, generator=generator)[:target]] = True
        masks.append(keep)
    return masks


def measure_step(model: Any, inputs: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from diet.models.adapters import adapter_for, parameter_counts

    cuda = args.device.startswith("cuda")

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=inputs, use_cache=False, logits_to_keep=1)
        if cuda:
            torch.cuda.synchronize()

    forward()  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    resettable = reset_peak_rss()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    return {
        "mlp_widths": adapter_for(model).mlp_widths(),
        "latency_seconds": seconds,
        "latency_median": statistics.median(seconds),
        "parameters": parameter_counts(model),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "peak_memory_bytes": peak,
        "peak_reset": resettable,
        "linear_flops": linear_flops(model, forward),
        "load_average": list(os.getloadavg()),
    }


def run_worker(args: argparse.Namespace) -> None:
    """One model, in this process: dense, then pruned in place to each sparsity in increasing order."""
    import torch

    from diet.models.adapters import adapter_for
    from diet.prune.mlp import prune_mlp_channels

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, weights = build_model(args.worker, args.device)
    build_seconds = time.perf_counter() - start
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(args.seed)
    inputs = torch.randint(3, vocab, (args.batch_size, args.seq_len), generator=generator).to(args.device)
    original = adapter_for(model).mlp_widths()
    steps = {"dense": {"sparsity": 0.0, **measure_step(model, inputs, args)}}
    print(f"[{args.worker}] dense: {steps['dense']['latency_median']:.3f} s", flush=True)
    for sparsity in args.sparsity_values:
        targets = [max(1, round(w * (1 - sparsity))) for w in original]
        current = adapter_for(model).mlp_widths()
        prune_mlp_channels(model, random_keep(current, targets, args.seed))
        steps[f"{sparsity:g}"] = {"sparsity": sparsity, **measure_step(model, inputs, args)}
        print(f"[{args.worker}] {sparsity:g}: {steps[f'{sparsity:g}']['latency_median']:.3f} s", flush=True)
    out = {"model": args.worker, "weights": weights, "build_seconds": build_seconds,
           "torch_threads": torch.get_num_threads(), "steps": steps}
    Path(args.worker_out).write_text(json.dumps(out))


def with_ratios(run: dict[str, Any]) -> dict[str, Any]:
    dense = run["steps"]["dense"]
    for step in run["steps"].values():
        step["speedup_measured"] = dense["latency_median"] / step["latency_median"]
        step["speedup_ideal"] = dense["linear_flops"] / step["linear_flops"]
        step["parameter_ratio"] = step["parameters"]["total"] / dense["parameters"]["total"]
        step["non_embedding_ratio"] = step["parameters"]["non_embedding"] / dense["parameters"]["non_embedding"]
        step["weight_ratio"] = step["weight_bytes"] / dense["weight_bytes"]
        step["memory_ratio"] = step["peak_memory_bytes"] / dense["peak_memory_bytes"]
    return run


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# Pruned speed: dense vs physically pruned MLP channels",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Forward of {s['batch_size']} x {s['seq_len']} random tokens (LM head on the last position), "
        f"float32, device {s['device']}; median of {s['repeats']} timed forwards after a warm-up. "
        "Ideal speed-up = dense / pruned FLOPs of all nn.Linear layers (attention score products excluded).",
        "",
        "| model | weights | MLP sparsity | params (M) | non-emb. params (M) | latency s | measured speed-up | ideal speed-up | measured / ideal | weights MiB | weights ratio | peak memory MiB | peak ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in s["models"]:  # JSON output sorts keys: order by the settings and by sparsity
        run = report["models"][model]
        for st in sorted(run["steps"].values(), key=lambda step: step["sparsity"]):
            lines.append(
                f"| {run['model']} | {run['weights']} | {st['sparsity']:g} | {st['parameters']['total'] / 1e6:.1f} | "
                f"{st['parameters']['non_embedding'] / 1e6:.1f} | {st['latency_median']:.3f} | "
                f"{st['speedup_measured']:.2f}x | {st['speedup_ideal']:.2f}x | "
                f"{st['speedup_measured'] / st['speedup_ideal']:.2f} | {st['weight_bytes'] / MIB:.0f} | "
                f"{st['weight_ratio']:.2f} | {st['peak_memory_bytes'] / MIB:.0f} | {st['memory_ratio']:.2f} |"
            )
    if report.get("note"):
        lines += ["", f"Note: {report['note']}"]
    lines += ["", "Peak memory is the process's resident set during the timed forwards (CPU) and includes memory the "
                  "allocator kept after pruning freed the old weights; the weights columns are exact.", "",
              machine_line(report["machine"]) +
              " Steps of one model ran one after the other in one process (pruned in place).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return {}
    models = args.models.split(",")
    for name in models:
        check_model_name(name)
    report: dict[str, Any] = {
        "command": command_line("pruned_speed.py", argv),
        "machine": machine(),
        "settings": {"models": models, "sparsities": args.sparsity_values, "batch_size": args.batch_size,
                     "seq_len": args.seq_len, "repeats": args.repeats, "device": args.device,
                     "threads": args.threads, "seed": args.seed},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            options = ["--sparsities", args.sparsities, "--batch-size", str(args.batch_size), "--seq-len",
                       str(args.seq_len), "--repeats", str(args.repeats), "--seed", str(args.seed), "--device", args.device]
            report["models"][name] = with_ratios(run_worker_process(__file__, name, options, args.threads, tmp))
    text = markdown(report)
    print(text)
    write_report("pruned_speed", report, text, args.out)
    return report


if __name__ == "__main__":
    main()
