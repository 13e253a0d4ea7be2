"""Profiling overhead: the hooked profiling forward vs the plain forward, same model, same batches.

    .venv/bin/python benchmarks/profile_overhead.py --model gemma3_270m --tasks hellaswag,arc_easy --n 16

Calibration sequences are built exactly as DIET's profiler gets them (seeded train samples, rendered
by the lm-eval task, encoded as HFLM encodes them). Each repeat times the plain backbone forward
(diet.calib.profiler's batching and padding, no hooks) and `profile_activations` (hooks accumulating float64
running sums) back to back, alternating which goes first, so that load from other processes hits both
alike; the reported ratio is the median over repeats (goal: at most 1.10x).

Memory: the profile keeps fixed-size running sums per dimension, so it must not grow with the number
of tokens. The script profiles the sequences once and then the same sequences repeated `--scale` times
and reports the peak resident memory (Linux VmHWM, reset before each) and the size of the resulting
profile for both. Writes results/benchmarks/profile_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python benchmarks/<name>.py
from benchmarks.common import (  # noqa: E402
    MIB, RESULTS_DIR, command_line, local_data_dir, machine, machine_line, model_config, peak_rss_bytes,
    reset_peak_rss, resolve_tasks, write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3_270m", help="a conf/model/*.yaml entry (default gemma3_270m)")
    parser.add_argument("--tasks", default="hellaswag,arc_easy", help="tasks whose train samples are profiled")
    parser.add_argument("--n", type=int, default=16, help="calibration samples per task (default 16)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed plain/profile pairs (default 5)")
    parser.add_argument("--scale", type=int, default=4, help="token multiple for the memory check (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    args = parser.parse_args(argv)
    for name in ("n", "batch_size", "repeats", "scale", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def calibration_sequences(loaded: Any, tasks: list[str], n: int, max_length: int, seed: int) -> list[list[int]]:
    """The token sequences DIET's profiler would see for these tasks (with the gold answer)."""
    from diet.calib.samples import draw_samples, encode_samples
    from diet.eval.evaluate import EvalSettings, make_lm
    from diet.eval.tasks import build_tasks

    task_objects = build_tasks(tasks, local_data_dir(), with_train=True)
    lm = make_lm(loaded.model, loaded.tokenizer, EvalSettings(batch_size=8), loaded.device)
    sequences: list[list[int]] = []
    for task in tasks:
        samples = draw_samples(task, task_objects[task], n, seed, with_answer=True)
        sequences += encode_samples(lm, samples, max_length)
    return sequences


def plain_forward(model: Any, sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> None:
    """profile_activations without hooks: same batches, padding and backbone call."""
    import torch

    from diet.models.adapters import adapter_for
    from diet.calib.profiler import length_sorted_batches, pad_batch

    backbone = adapter_for(model).backbone()
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in length_sorted_batches(sequences, batch_size):
            ids, mask, positions = pad_batch([sequences[i] for i in batch], pad_id)
            backbone(input_ids=ids.to(device), attention_mask=mask.to(device),
                     position_ids=positions.to(device), use_cache=False)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def profile_bytes(profile: Any) -> int:
    state = profile.to_state()
    return sum(t.numel() * t.element_size() for key in ("sum_abs", "sum_sq", "sum")
               for tensors in state[key].values() for t in tensors)


def memory_check(model: Any, sequences: list[list[int]], args: argparse.Namespace, pad_id: int) -> list[dict]:
    """Peak memory and profile size at 1x and `scale`x the tokens (same batches, repeated)."""
    import torch

    from diet.calib.profiler import profile_activations

    rows = []
    for multiple in (1, args.scale):
        repeated = sequences * multiple
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        resettable = reset_peak_rss()
        profile = profile_activations(model, repeated, args.batch_size, pad_id, desc=f"profile x{multiple}")
        peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else peak_rss_bytes()
        rows.append({"token_multiple": multiple, "tokens": profile.n_tokens, "sequences": len(repeated),
                     "peak_memory_bytes": peak, "peak_reset": resettable,
                     "profile_state_bytes": profile_bytes(profile)})
    return rows


def markdown(report: dict[str, Any]) -> str:
    t, s = report["timing"], report["settings"]
    lines = [
        "# Profiling overhead: hooked profiling forward vs plain forward",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Model {s['model']}, tasks {', '.join(s['tasks'])}, {s['n']} samples per task "
        f"({t['sequences']} sequences, {t['tokens']} tokens), batch size {s['batch_size']}, device {s['device']}.",
        "",
        "| repeat | plain s | profile s | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for i, (p, q) in enumerate(zip(t["plain_seconds"], t["profile_seconds"]), start=1):
        lines.append(f"| {i} | {p:.3f} | {q:.3f} | {q / p:.3f} |")
    lines += ["", f"Overhead profile / plain: **{t['ratio_median']:.3f}x** (median of per-repeat ratios; "
                  f"min {t['ratio_min']:.3f}, max {t['ratio_max']:.3f}; goal <= 1.10x).", "",
              "| tokens | sequences | peak memory MiB | profile state MiB |", "|---:|---:|---:|---:|"]
    for row in report["memory"]:
        lines.append(f"| {row['tokens']} | {row['sequences']} | {row['peak_memory_bytes'] / MIB:.0f} | "
                     f"{row['profile_state_bytes'] / MIB:.2f} |")
    m = report["memory"]
    lines += ["", f"Memory at {m[-1]['token_multiple']}x the tokens / 1x: "
                  f"**{m[-1]['peak_memory_bytes'] / m[0]['peak_memory_bytes']:.3f}x** peak, "
                  f"{m[-1]['profile_state_bytes'] / m[0]['profile_state_bytes']:.3f}x profile state.", "",
              machine_line(report["machine"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from diet.models import load_model
    from diet.calib.profiler import profile_activations

    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = resolve_tasks(args.tasks)
    loaded = load_model(model_config(args.model, args.device))
    pad_id = loaded.tokenizer.pad_token_id or 0
    sequences = calibration_sequences(loaded, tasks, args.n, args.max_length, args.seed)
    report: dict[str, Any] = {
        "command": command_line("profile_overhead.py", argv),
        "machine": machine(),
        "settings": {"model": args.model, "tasks": tasks, "n": args.n, "max_length": args.max_length,
                     "batch_size": args.batch_size, "repeats": args.repeats, "device": loaded.device},
    }
    model = loaded.model
    plain_forward(model, sequences[: args.batch_size], args.batch_size, pad_id)  # warm-up
    plain, profiled = [], []
    for repeat in range(args.repeats):
        runs = {
            "plain": lambda: plain_forward(model, sequences, args.batch_size, pad_id),
            "profile": lambda: profile_activations(model, sequences, args.batch_size, pad_id, desc="profile"),
        }
        order = ["plain", "profile"] if repeat % 2 == 0 else ["profile", "plain"]
        seconds = {name: timed(runs[name], loaded.device) for name in order}
        plain.append(seconds["plain"])
        profiled.append(seconds["profile"])
        print(f"repeat {repeat + 1}: plain {seconds['plain']:.3f} s, profile {seconds['profile']:.3f} s, "
              f"ratio {seconds['profile'] / seconds['plain']:.3f}", flush=True)
    ratios = [q / p for p, q in zip(plain, profiled)]
    report["timing"] = {
        "sequences": len(sequences), "tokens": sum(len(s) for s in sequences),
        "plain_seconds": plain, "profile_seconds": profiled,
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
    }
    report["memory"] = memory_check(model, sequences, args, pad_id)
    text = markdown(report)
    print(text)
    write_report("profile_overhead", report, text, args.out)
    return report


if __name__ == "__main__":
    main()
