"""The prepared GPU check: Gemma-2 2B (then 9B) shaped models with random weights, end to end, in minutes.

    python benchmarks/gpu_check.py                         # on a GPU machine: bfloat16, 2B then 9B
    python benchmarks/gpu_check.py --device cpu --tiny     # the same code on a tiny model (the test suite)

No hub access and no data folder are needed: the models are built in the exact Gemma-2 layouts
(diet.models.tiny.GEMMA2_SHAPES: 26/42 layers, hidden 2304/3584, MLP 9216/14336, 8/16 query heads, 4/8 KV
heads, head_dim 256, soft-capping, eager attention, tied 256k embedding) with random weights, and the
evaluation uses task documents through diet's byte-level tokenizer: the data folder's (DIET_DATA_DIR or
../shared/data, `--data`) when there is one, else hand-made documents in the same schema written to a
temporary folder (`hand_made_tasks`; no benchmark data is carried). What is checked is the machinery, not
accuracy.
Per shape, with wall seconds and peak memory (CUDA: max allocated) for every stage:

1. build the model in `--dtype` (bfloat16 on CUDA);
2. profile `--profile-tokens` tokens (default 70,000, about 700 calibration samples' worth) in batches;
3. masks at 0.2 and 0.5 (DIET's per-layer top-k of mean |a|); precision: the same profile in float32 and
   the Jaccard of its masks with the `--dtype` masks (sums are float64 either way: the check is that
   the activations' own rounding does not move the masks much);
4. pruned forward latency (1 x 128 tokens) vs dense, at both sparsities;
5. fast vs stock lm-eval on the same requests (`--eval-docs` documents per task): throughput ratio,
   max |loglikelihood| difference against its rounding bound for the model's dtype
   (diet.rounding.loglikelihood_bound with eps_of(dtype)), changed predictions;
6. in `--dtype` other than float32, the same requests evaluated again in float32: the evaluation's known
   precision difference (max |loglikelihood| difference, changed predictions, both accuracies).

`--precision-only` runs steps 1-3 and 6 alone (for CPUs, where bfloat16 matmuls are slow).
Every shape is attempted when the device's free memory holds it (`memory_needed`: the weights, a pruned copy
and working room); a shape that does not fit is skipped with both figures in the report.
Writes results/benchmarks/gpu_check.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python benchmarks/<name>.py
from benchmarks.common import RESULTS_DIR, command_line, local_data_dir, machine, machine_line, write_report  # noqa: E402

TINY = dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32, sliding_window=64,
            max_position_embeddings=512)
SPARSITIES = (0.2, 0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny Gemma-2 instead of the 2B/9B shapes")
    parser.add_argument("--shapes", default="2b,9b")
    parser.add_argument("--profile-tokens", type=int, default=70_000)
    parser.add_argument("--eval-docs", type=int, default=20, help="documents per task for fast vs stock")
    parser.add_argument("--tasks", default="arc_easy,hellaswag")
    parser.add_argument("--data", default=None, help="task data folder (default: DIET_DATA_DIR or ../shared/data, "
                        "else hand-made documents)")
    parser.add_argument("--precision-only", action="store_true",
                        help="only the bfloat16-vs-float32 items: masks (Jaccard) and evaluation of the same requests")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    return parser.parse_args(argv)


class Stages:
    """`with stages("profile"):` records seconds and peak memory (CUDA max allocated / CPU peak RSS)."""

    def __init__(self, device: str) -> None:
        self.device, self.rows = device, {}

    def __call__(self, name: str):
        import contextlib

        import torch

        @contextlib.contextmanager
        def stage():
            from diet.run.memory import peak_bytes, reset_peak

            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            reset_peak(self.device)
            start = time.perf_counter()
            yield
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            peak = peak_bytes(self.device)
            self.rows[name] = {"seconds": round(time.perf_counter() - start, 3), "peak_memory_gib": round(peak / 2**30, 3)}
            print(f"  {name}: {self.rows[name]['seconds']:.1f} s, peak {self.rows[name]['peak_memory_gib']:.2f} GiB",
                  flush=True)
        return stage()


def hand_made_tasks(directory: Path, docs: int) -> Path:
    """A data folder in the layout and schema of the paper tasks' files (eval/arc_easy_test.jsonl,
    eval/hellaswag_validation.jsonl), written here from templates: no benchmark text is carried or needed.
    The models have random weights, so the documents only have to exercise the requests' shapes."""
    import json
    import random

    rng = random.Random(0)
    (directory / "eval").mkdir(parents=True, exist_ok=True)
    arc, hellaswag = [], []
    for i in range(docs):
        numbers = rng.sample(range(10, 999), 4)
        arc.append({"id": f"hand-made-{i}", "question": f"Which of these numbers is the largest: {', '.join(map(str, numbers))}?",
                    "choices": {"text": [str(n) for n in numbers], "label": ["A", "B", "C", "D"]},
                    "answerKey": "ABCD"[numbers.index(max(numbers))]})
        start = rng.randrange(1, 50)
        endings = [f"says {start + 3} after {start + 2}.", f"stops at {start - 5}.", "sings a song about the sea.",
                   f"writes {start * 7} on a blackboard and leaves the room quietly."]
        rng.shuffle(endings)
        hellaswag.append({"ind": i, "activity_label": "Counting", "ctx_a": f"A child counts aloud from {start} to {start + 2}.",
                          "ctx_b": "then she", "ctx": f"A child counts aloud from {start} to {start + 2}. then she",
                          "endings": endings, "label": str(endings.index(f"says {start + 3} after {start + 2}."))})
    for name, rows in (("arc_easy_test", arc), ("hellaswag_validation", hellaswag)):
        (directory / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def task_data(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    """(data folder, what it is): the one named, the local data folder, else hand-made documents written
    under `scratch` (a folder the caller removes)."""
    if args.data:
        return Path(args.data), f"data folder {args.data}"
    local = local_data_dir()
    if local is not None and (local / "eval").is_dir():
        return local, f"data folder {local}"
    unknown = sorted(set(args.tasks.split(",")) - {"arc_easy", "hellaswag"})
    if unknown:
        raise SystemExit(f"no data folder (DIET_DATA_DIR, ../shared/data or --data) and no hand-made documents for "
                         f"{unknown}: use --tasks arc_easy,hellaswag or pass --data DIR")
    folder = hand_made_tasks(scratch / "tasks", max(args.eval_docs, 1))
    print(f"no data folder: {args.eval_docs} hand-made documents per task in {folder} (machinery check)", flush=True)
    return folder, "hand-made documents (no data folder)"


def shape_parameters(shape: dict[str, Any]) -> int:
    """Parameters of a Gemma-2 layout (tied embedding, four norms per block), without building it."""
    hidden, layers, heads, kv = shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"], \
        shape["num_key_value_heads"]
    head_dim = shape.get("head_dim") or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    return shape["vocab_size"] * hidden + hidden + layers * (attention + 3 * hidden * shape["intermediate_size"]
                                                             + 4 * hidden)


def memory_needed(shape: dict[str, Any], dtype: Any) -> int:
    """Bytes a shape's check holds at its peak: the weights, a pruned copy (at most as large), and a quarter
    more for activations, the profile and evaluation batches."""
    import torch

    return int(shape_parameters(shape) * torch.tensor([], dtype=dtype).element_size() * 2.25)


def memory_free(device: str) -> int:
    """Free bytes on the device (CUDA: mem_get_info; CPU: MemAvailable; unknown: no limit)."""
    from diet.run.memory import available_bytes

    free = available_bytes(device)
    return free if free is not None else 1 << 62


def build(shape: dict[str, Any], device: str, dtype: Any) -> Any:
    """Random-weight Gemma2ForCausalLM built directly on the device in `dtype` (no 9B init on the CPU)."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(**shape, pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager")
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Gemma2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():  # Gemma's (1 + w) norms start at w = 0: give them spread, as diet.models.tiny does
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.1)
    return model.eval()


def calibration_sequences(total_tokens: int, vocab: int, length: int = 100) -> list[list[int]]:
    import random

    rng = random.Random(0)
    return [[2] + [rng.randrange(4, vocab) for _ in range(length - 1)] for _ in range(max(1, total_tokens // length))]


def masks_at(profile: Any, sparsities=SPARSITIES) -> dict[float, list]:
    from diet.select import masks

    return {s: masks.task_mask(profile.scores("mlp", "mean_abs"), s, scope="layer") for s in sparsities}


def jaccard(a: list, b: list) -> float:
    kept_a = sum(int(x.sum()) for x in a)
    both = sum(int((x & y).sum()) for x, y in zip(a, b))
    either = sum(int((x | y).sum()) for x, y in zip(a, b))
    return both / either if either else 1.0 if kept_a == 0 else 0.0


def latency(model: Any, device: str, repeats: int = 5) -> float:
    import torch

    ids = torch.randint(4, 200, (1, 128), generator=torch.Generator().manual_seed(1)).to(device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first is warm-up


def run_backend(model: Any, device: str, tasks: list[str], docs: int, backend: str, data: Path) -> dict[str, Any]:
    """One lm-eval pass over the first `docs` documents per task: seconds, samples by task, scores."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from diet.eval.evaluate import EvalSettings, make_lm
    from diet.models.tiny import byte_level_tokenizer
    from diet.eval.tasks import build_tasks

    lm = make_lm(model, byte_level_tokenizer(), EvalSettings(limit=docs, docs="first", backend=backend), device)
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=list(build_tasks(tasks, data, with_train=False).values()),
                              num_fewshot=0, limit=docs, log_samples=True, task_manager=TaskManager(include_defaults=False))
    return {"seconds": time.perf_counter() - start,
            "samples": {t: sorted(results["samples"][t], key=lambda s: s["doc_id"]) for t in tasks},
            "acc": {t: results["results"][t].get("acc,none") for t in tasks}}


def compare_samples(a: dict[str, Any], b: dict[str, Any], tasks: list[str],
                    bound_of: Any = None) -> dict[str, Any]:
    """Per request: max |loglikelihood difference| (and, with `bound_of(continuation) -> bound`, the largest
    difference / its rounding bound), and how many greedy flags / per-document acc(_norm) outcomes differ
    between two passes over the same requests."""
    worst, ratio, requests, changed_greedy, changed_docs, docs = 0.0, 0.0, 0, 0, 0, 0
    for task in tasks:
        for x, y in zip(a["samples"][task], b["samples"][task]):
            for rx, ry, arguments in zip(x["resps"], y["resps"], x.get("arguments") or [None] * len(x["resps"])):
                difference = abs(float(rx[0][0]) - float(ry[0][0]))
                worst = max(worst, difference)
                if bound_of is not None and arguments is not None:
                    ratio = max(ratio, difference / bound_of(arguments[1]))
                changed_greedy += bool(rx[0][1]) != bool(ry[0][1])
                requests += 1
            changed_docs += any(x.get(m) != y.get(m) for m in ("acc", "acc_norm"))
            docs += 1
    out = {"requests": requests, "documents": docs, "max_abs_loglikelihood_diff": worst,
           "changed_greedy": changed_greedy, "changed_document_outcomes": changed_docs}
    if bound_of is not None:
        out.update(max_diff_over_bound=ratio, within_rounding_bound=ratio <= 1.0)
    return out


def bound_for(model: Any, device: str) -> Any:
    """continuation text -> the loglikelihood rounding bound of a request (diet.rounding, the model's dtype):
    the logits' scale on a probe batch, the model's depth and longest sum, the continuation's tokens."""
    import torch

    from diet.export.save import probe_batch
    from diet.models.tiny import byte_level_tokenizer
    from diet.rounding import depth_and_length, eps_of, loglikelihood_bound

    with torch.no_grad():
        scale = float(model(input_ids=probe_batch(model).to(device)).logits.float().abs().max())
    depth, length = depth_and_length(model)
    eps = eps_of(next(model.parameters()).dtype)
    tokenizer = byte_level_tokenizer()
    return lambda continuation: loglikelihood_bound(
        scale, depth, length, max(1, len(tokenizer(continuation, add_special_tokens=False).input_ids)), eps=eps)


def fast_vs_stock(model: Any, device: str, tasks: list[str], docs: int, data: Path) -> dict[str, Any]:
    """The same requests through both backends: seconds, the largest loglikelihood difference against its
    rounding bound for the model's dtype, changed predictions (a bfloat16 near-tie may flip one: counted)."""
    out = {backend: run_backend(model, device, tasks, docs, backend, data) for backend in ("stock", "fast")}
    compared = compare_samples(out["stock"], out["fast"], tasks, bound_for(model, device))
    return {"requests": compared["requests"], "stock_seconds": round(out["stock"]["seconds"], 3),
            "fast_seconds": round(out["fast"]["seconds"], 3),
            "speedup": round(out["stock"]["seconds"] / out["fast"]["seconds"], 3),
            "identical_predictions": compared["changed_greedy"] == 0 and compared["changed_document_outcomes"] == 0,
            "max_abs_loglikelihood_diff": compared["max_abs_loglikelihood_diff"],
            "max_diff_over_bound": compared["max_diff_over_bound"],
            "within_rounding_bound": compared["within_rounding_bound"], "fast_samples": out["fast"]}


def evaluation_vs_float32(model: Any, device: str, tasks: list[str], docs: int, low: dict[str, Any],
                          data: Path) -> dict[str, Any]:
    """The known difference of evaluating in bfloat16: the same requests in float32 (fast backend), compared
    with the bfloat16 pass; reported, not hidden (rounding of 8-bit mantissas moves loglikelihoods)."""
    high = run_backend(model.float(), device, tasks, docs, "fast", data)
    return {**compare_samples(low, high, tasks), "acc_low_precision": low["acc"], "acc_float32": high["acc"]}


EXPORT_BELOW = 5e9  # parameters: the export stage runs for the 2B shape (a 9B export writes ~14 GB to disk)


def export_once(model: Any) -> dict[str, Any]:
    """diet's export of a pruned model into a temporary folder: its format and reload check (the peak memory
    of this stage is what a run with save_model adds)."""
    import tempfile

    from diet.export.save import export_model
    from diet.models.tiny import byte_level_tokenizer

    with tempfile.TemporaryDirectory(prefix="gpu_check_export_") as folder:
        saved = export_model(model, byte_level_tokenizer(), Path(folder) / "model", "# gpu check\n")
    return {"format": saved["format"], "why": saved["why"]}


def recovery_steps(model: Any, device: str, vocab: int, steps: int = 3, batch: int = 8, length: int = 256) -> dict[str, Any]:
    """A few recover=lora training steps (conf/recover/lora.yaml's LoRA on every decoder projection, AdamW) on
    random tokens, then the merge: training tokens/s on this device and dtype, and that the merge keeps the
    parameter count (the stage's peak memory is what a recovered cell adds)."""
    import torch

    from diet.models.adapters import parameter_counts
    from diet.recover.lora import wrap
    from diet.recover.options import LoraRecovery, RecoveryPlan

    before = parameter_counts(model)["total"]
    peft_model = wrap(model, RecoveryPlan(LoraRecovery(), Path("."), "", 0, True))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    seconds, losses = [], []
    for _ in range(steps + 1):  # the first step warms up (optimizer state, kernels): not timed
        ids = torch.randint(0, vocab, (batch, length), generator=generator).to(device)
        start = time.perf_counter()
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # one host sync per step, as recover does
        seconds.append(time.perf_counter() - start)
    peft_model.merge_and_unload()
    return {"tokens_per_s": round(batch * length / statistics.median(seconds[1:]), 1), "batch": [batch, length],
            "losses_finite": all(map(lambda x: x == x and abs(x) < float("inf"), losses)),
            "parameters_kept": parameter_counts(model)["total"] == before}


def check_shape(name: str, shape: dict[str, Any], args: argparse.Namespace, dtype: Any, data: Path) -> dict[str, Any]:
    import torch

    from diet.models.adapters import adapter_for, parameter_counts
    from diet.calib.profiler import profile_activations
    from diet.prune.mlp import prune_mlp_channels

    stages = Stages(args.device)
    print(f"[{name}]", flush=True)
    with stages("build"):
        model = build(shape, args.device, dtype)
    sequences = calibration_sequences(args.profile_tokens, shape["vocab_size"])
    with stages("profile"):
        profile = profile_activations(model, sequences, batch_size=8, desc=f"profile {name}")
    with stages("masks"):
        chosen = masks_at(profile)
    precision: dict[str, Any] = {"dtype": str(dtype).replace("torch.", "")}
    if dtype != torch.float32:  # the same tokens in float32: do the masks move?
        with stages("profile_float32"):
            reference = masks_at(profile_activations(model.float(), sequences, batch_size=8, desc="profile fp32"))
            model.to(dtype)
        precision["mask_jaccard_vs_float32"] = {str(s): round(jaccard(chosen[s], reference[s]), 6) for s in SPARSITIES}
    if args.precision_only:  # the precision items alone (CPU bfloat16 is ~7x slower than float32)
        tasks = args.tasks.split(",")
        with stages("eval_low_precision"):
            low = run_backend(model, args.device, tasks, args.eval_docs, "fast", data)
        with stages("eval_float32"):
            precision["evaluation_vs_float32"] = evaluation_vs_float32(model, args.device, tasks, args.eval_docs, low,
                                                                       data)
        return {"shape": {k: shape[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size")},
                "parameters": parameter_counts(model)["total"], "profile_tokens": profile.n_tokens,
                "stages": stages.rows, "precision": precision}
    dense_latency = latency(model, args.device)
    pruned = {}
    for sparsity in SPARSITIES:
        with stages(f"prune_{sparsity}"):
            copy_ = prune_mlp_channels(copy.deepcopy(model), chosen[sparsity])
        pruned[str(sparsity)] = {"latency_s": latency(copy_, args.device),
                                 "mlp_widths": sorted(set(adapter_for(copy_).mlp_widths())),
                                 "parameters": parameter_counts(copy_)["total"]}
        pruned[str(sparsity)]["speedup"] = round(dense_latency / pruned[str(sparsity)]["latency_s"], 3)
        if sparsity == SPARSITIES[0] and shape_parameters(shape) < EXPORT_BELOW:
            with stages(f"export_{sparsity}"):  # save + stock reload check, the model parked on the host
                pruned[str(sparsity)]["export"] = export_once(copy_)
            with stages(f"recover_{sparsity}"):  # recover=lora on the pruned model (after the export: it merges)
                pruned[str(sparsity)]["recovery"] = recovery_steps(copy_, args.device, shape["vocab_size"])
        del copy_
    with stages("fast_vs_stock"):
        evaluation = fast_vs_stock(model, args.device, args.tasks.split(","), args.eval_docs, data)
    low_samples = evaluation.pop("fast_samples")
    if dtype != torch.float32:  # the evaluation's own precision difference, on the same requests
        with stages("eval_float32"):
            precision["evaluation_vs_float32"] = evaluation_vs_float32(model, args.device, args.tasks.split(","),
                                                                       args.eval_docs, low_samples, data)
        model.to(dtype)
    result = {"shape": {k: shape[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                               "num_attention_heads", "num_key_value_heads", "head_dim")},
              "parameters": parameter_counts(model)["total"], "profile_tokens": profile.n_tokens,
              "stages": stages.rows, "precision": precision, "dense_latency_s": dense_latency,
              "pruned": pruned, "fast_vs_stock": evaluation}
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def precision_line(precision: dict[str, Any]) -> str:
    e = precision["evaluation_vs_float32"]
    return (f"- known difference, {precision['dtype']} vs float32 evaluation of the same requests: max |loglikelihood "
            f"diff| {e['max_abs_loglikelihood_diff']:.2e}, {e['changed_greedy']} of {e['requests']} greedy flags and "
            f"{e['changed_document_outcomes']} of {e['documents']} document outcomes changed; acc {e['acc_low_precision']}"
            f" vs {e['acc_float32']}")


def markdown(report: dict[str, Any]) -> str:
    lines = ["# GPU check (random-weight Gemma-2 shapes)", "", f"Command: `{report['command']}`", "",
             machine_line(report["machine"]) + (f" GPU: {report['gpu']}." if report.get("gpu") else ""), ""]
    for name, r in report["shapes"].items():
        if "fast_vs_stock" not in r:  # --precision-only
            lines += [f"## {name}: {r['parameters'] / 1e9:.2f}B parameters, {r['precision']['dtype']} (precision only)", "",
                      "| stage | seconds | peak memory (GiB) |", "|---|---:|---:|",
                      *[f"| {s} | {v['seconds']:.1f} | {v['peak_memory_gib']:.2f} |" for s, v in r["stages"].items()], "",
                      f"- profiled {r['profile_tokens']} tokens; mask Jaccard vs float32: "
                      f"{r['precision'].get('mask_jaccard_vs_float32', 'same dtype')}",
                      *([precision_line(r["precision"])] if "evaluation_vs_float32" in r["precision"] else []), ""]
            continue
        ev, pr = r["fast_vs_stock"], r["pruned"]
        lines += [f"## {name}: {r['parameters'] / 1e9:.2f}B parameters, {r['precision']['dtype']}", "",
                  "| stage | seconds | peak memory (GiB) |", "|---|---:|---:|",
                  *[f"| {s} | {v['seconds']:.1f} | {v['peak_memory_gib']:.2f} |" for s, v in r["stages"].items()], "",
                  f"- profiled {r['profile_tokens']} tokens; masks vs float32: "
                  f"{r['precision'].get('mask_jaccard_vs_float32', 'same dtype')}",
                  f"- forward 1 x 128: dense {r['dense_latency_s'] * 1000:.1f} ms; "
                  + "; ".join(f"{s}: {v['latency_s'] * 1000:.1f} ms ({v['speedup']:.2f}x)" for s, v in pr.items()),
                  *[f"- export at {s}: {v['export']['format']} ({v['export']['why']})" for s, v in pr.items()
                    if "export" in v],
                  *[f"- recover=lora at {s}: {v['recovery']['tokens_per_s']:.0f} training tokens/s (batches of "
                    f"{v['recovery']['batch'][0]} x {v['recovery']['batch'][1]}), losses finite: "
                    f"{v['recovery']['losses_finite']}, parameters kept by the merge: {v['recovery']['parameters_kept']}"
                    for s, v in pr.items() if "recovery" in v],
                  f"- fast vs stock on {ev['requests']} requests: {ev['speedup']:.2f}x, max |loglikelihood diff| "
                  f"{ev['max_abs_loglikelihood_diff']:.2e} = {ev['max_diff_over_bound']:.3g} of its rounding bound "
                  f"(within: {ev['within_rounding_bound']}), identical predictions: {ev['identical_predictions']}",
                  *([precision_line(r["precision"])] if "evaluation_vs_float32" in r["precision"] else []), ""]
    lines.append(f"Documents: {report['data']}.")
    for name, why in report["skipped"].items():
        lines.append(f"Skipped {name}: {why}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    import torch

    from diet.models.tiny import GEMMA2_SHAPES

    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible: use --device cpu --tiny to test the script")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    shapes = {"tiny": TINY} if args.tiny else {f"gemma2_{s}_shape": GEMMA2_SHAPES[s] for s in args.shapes.split(",")}
    start, results, skipped = time.perf_counter(), {}, {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        data, data_note = task_data(args, Path(scratch))
        for name, shape in shapes.items():
            needed, free = memory_needed(shape, dtype), memory_free(args.device)
            if needed > free:  # every shape is tried when it fits; none is skipped for time
                skipped[name] = f"needs about {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {args.device}"
                print(f"[{name}] skipped: {skipped[name]}", flush=True)
                continue
            results[name] = check_shape(name, shape, args, dtype, data)
    report = {"command": command_line("gpu_check.py", argv), "machine": machine(), "device": args.device,
              "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
              "data": data_note, "shapes": results, "skipped": skipped,
              "seconds": round(time.perf_counter() - start, 1)}
    write_report("gpu_check", report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
