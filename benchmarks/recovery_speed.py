"""Recovery fine-tuning (recover=lora) speed and memory: a LoRA training step vs a plain forward of the same batches,
on the same model in the same run.

    .venv/bin/python benchmarks/recovery_speed.py --model gemma3_270m --steps 6 --threads 2

The model is pruned first (magnitude, 20% of MLP channels: the shapes recovery meets, no calibration needed),
then wrapped with the LoRA of conf/recover/lora.yaml (r 8 on every decoder projection). Each repeat times, on
one batch of `--batch-size` windows of `--length` tokens of the C4 excerpt, the plain no-grad forward and a full
training step (forward with the full-vocabulary loss, backward through the frozen base, AdamW on the adapters),
alternating which goes first; reported: training tokens/s, forward tokens/s, their ratio (median over repeats),
and the peak resident memory of each (Linux VmHWM, reset before each; on a GPU, CUDA's peak allocation).
Writes results/benchmarks/recovery_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python benchmarks/<name>.py
from benchmarks.common import (  # noqa: E402
    MIB, RESULTS_DIR, command_line, local_data_dir, machine, machine_line, model_config, write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3_270m", help="a conf/model/*.yaml entry (default gemma3_270m)")
    parser.add_argument("--steps", type=int, default=6, help="timed forward/step pairs (default 6)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128, help="tokens per window (default 128)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def pruned_model(name: str, device: str) -> Any:
    from diet import models
    from diet.dims.apply import apply_selection
    from diet.methods import METHODS, PruningContext
    from diet.methods.inputs import Target

    loaded = models.load_model(model_config(name, device))
    import contextlib

    method = METHODS.get("magnitude")
    inputs = method.Inputs(target=Target(sparsity=0.2, dims="mlp"))
    context = PruningContext(loaded=loaded, data_dir=None, timer=lambda stage: contextlib.nullcontext())
    apply_selection(loaded.model, method().select(context, inputs))
    return loaded


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from diet.recover.lora import wrap
    from diet.recover.data import recovery_windows
    from diet.recover.options import LoraRecovery, RecoveryPlan
    from diet.run.memory import peak_bytes, reset_peak

    loaded = pruned_model(args.model, args.device)
    path = local_data_dir() / "text" / "c4_en_train_head1000.jsonl"
    plan = RecoveryPlan(LoraRecovery(), path, "", 0, True)
    train, _ = recovery_windows(path, loaded.tokenizer, args.batch_size * args.steps, 1, args.length, 0, True)
    batches = torch.tensor(train.sequences, device=args.device).split(args.batch_size)
    model = wrap(loaded.model, plan)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def forward(batch: Any) -> None:
        with torch.no_grad():
            model.eval()
            model(input_ids=batch, labels=batch)

    def step(batch: Any) -> None:
        model.train()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: optimizer state allocated, kernels chosen
    seconds: dict[str, list[float]] = {"forward": [], "step": []}
    peaks: dict[str, int] = {"forward": 0, "step": 0}
    for index, batch in enumerate(batches):
        order = [("forward", forward), ("step", step)]
        for name, call in order if index % 2 == 0 else order[::-1]:
            reset_peak(args.device)
            start = time.perf_counter()
            call(batch)
            seconds[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], peak_bytes(args.device))
    tokens = args.batch_size * args.length
    forward_tps = tokens / statistics.median(seconds["forward"])
    step_tps = tokens / statistics.median(seconds["step"])
    return {"model": args.model, "device": args.device, "batch_size": args.batch_size, "length": args.length,
            "steps": args.steps, "trainable_parameters": sum(p.numel() for p in params),
            "forward_tokens_per_s": round(forward_tps, 1), "train_tokens_per_s": round(step_tps, 1),
            "step_over_forward_time": round(forward_tps / step_tps, 2),
            "peak_mib": {name: round(value / MIB) for name, value in peaks.items()},
            "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()}}


def markdown(report: dict[str, Any]) -> str:
    r = report["result"]
    windows = 1024 * 128
    return "\n".join([
        "# Recovery fine-tuning speed and memory (recover=lora)", "",
        f"`{report['command']}`", "", machine_line(report["machine"]), "",
        f"{r['model']} (magnitude-pruned 20% of MLP channels), LoRA r 8 on every decoder projection "
        f"({r['trainable_parameters']:,} trainable parameters), batches of {r['batch_size']} x {r['length']} tokens, "
        f"{r['steps']} timed pairs (medians):", "",
        "| | tokens/s | peak resident memory of the process (MiB) |", "|---|---:|---:|",
        f"| plain forward (no grad) | {r['forward_tokens_per_s']:.0f} | {r['peak_mib']['forward']} |",
        f"| LoRA training step | {r['train_tokens_per_s']:.0f} | {r['peak_mib']['step']} |", "",
        f"A training step takes {r['step_over_forward_time']:.2f}x the time of a forward on the same tokens; "
        f"recover=lora's default (1024 windows x 128 tokens, one epoch) would take about "
        f"{windows / r['train_tokens_per_s'] / 60:.0f} minutes here at this rate, plus its validation passes.", ""])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = {"command": command_line("recovery_speed.py", argv), "machine": machine(), "result": measure(args)}
    write_report("recovery_speed", report, markdown(report), args.out)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
