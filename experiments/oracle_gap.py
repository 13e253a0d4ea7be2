"""Where DIET's merge loses against each task's own mask: the oracle gap per task, how much of it each merge
rule, vote threshold, mask scope and profile statistic (one option changed at a time) and the pooled baseline
closes, and the mask overlap behind it.

    python -m experiments.oracle_gap results/records --model gemma3_270m --documents random500s0 --out results/analysis

Scores come from the records (paired per document where both hold outcomes); the masks are recomputed with
the current code from the profile cache (experiments.check_masks checks that they equal the recorded ones),
so the overlaps need the model, the scores do not. Every run compared has the block's model, documents,
sparsity and calibration seed, DIET's task samples and otherwise default options.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch

from diet.analysis.blocks import DEFAULTS
from diet.analysis.frame import load_records
from diet.analysis.stats import Z
from diet.analysis.tables import compare
from diet.io import atomic_write_text
from diet.analysis.block_lookup import find_block

# the options a compared variant may change; every other ablation option stays at its default
VARIED = ("merge", "threshold", "scope", "stat", "exclude_bos")
# Exact-fill merges remove the target within half a channel per layer (< 0.01 for widths over 50); union and
# intersection remove whatever results, and a share of the gap "closed" at another sparsity means nothing.
SPARSITY_SLACK = 0.01


def comparable(run: dict[str, Any], sparsity: float, seed: int) -> bool:
    fixed = {key: value for key, value in DEFAULTS.items() if key not in VARIED}
    changed = [key for key in VARIED if run[key] is not None and run[key] != DEFAULTS[key]]
    return (run["sparsity"] == sparsity and run["seed"] == seed and len(changed) <= 1  # one option at a time
            and not run.get("method_options")  # a method's own non-default options make another variant
            and all(run[key] is None or run[key] == value for key, value in fixed.items()))


def label(run: dict[str, Any]) -> str:
    if run["method"] != "diet":
        return run["method"]
    changed = [f"{key}={run[key]:g}" if isinstance(run[key], float) else f"{key}={run[key]}"
               for key in VARIED if run[key] != DEFAULTS[key]]
    return "diet (" + ", ".join(changed) + ")" if changed else "diet"


def final_masks(record: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
    """{"all": the merged MLP mask} or, for the oracle, {task: that task's own mask}; recomputed and checked
    against the record's mask hash."""
    from diet.run.recheck import verified_selection

    selection = verified_selection(record)
    if selection.per_task is not None:
        return {task: own.kept("mlp") for task, own in selection.per_task.items()}
    return {"all": selection.kept("mlp")}


def fmt(value: float, se: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.1f}" if se is None else f"{value:+.1f} ± {se:.1f}"


def report(results_dir: Path, documents: str, sparsity: float, seed: int, overlaps: bool,
           model: str | None = None) -> str:
    from diet.select.masks import jaccard

    block = find_block(results_dir, documents, model)
    runs = [run for run in block.runs if comparable(run, sparsity, seed)]
    by_label = {label(run): run for run in runs if run["method"] in ("diet", "diet_oracle", "activation_pooled")}
    if "diet" not in by_label or "diet_oracle" not in by_label:
        raise SystemExit(f"{documents}: needs a default DIET run and a diet_oracle run at sparsity {sparsity}, seed "
                         f"{seed}; found {sorted(by_label)}")
    diet, tasks = by_label["diet"], block.averaged
    others = [name for name in by_label if name != "diet"]
    others.sort(key=lambda name: (name != "diet_oracle", name))
    lines = [f"# Oracle gap: {block.model}, {documents}, sparsity {sparsity:g}, calibration seed {seed}", "",
             f"Command: `python -m experiments.oracle_gap {results_dir} --model {block.model} --documents {documents} "
             f"--sparsity {sparsity:g} "
             f"--seed {seed}`", "",
             "Each row minus the default DIET run (vote, threshold 0.5), in points; ± one standard error, paired per "
             "document where both records hold outcomes. `diet_oracle` evaluates every task with that task's own "
             "single-task mask, so its row is the gap the merge leaves. closed = row average / oracle average, only "
             "for runs that remove the target share (removed = the fraction of MLP channels a run removed).", ""]
    header = "| run | removed | " + " | ".join(tasks) + " | average | closed |"
    lines += [header, "|" + "---|" * (len(tasks) + 4)]
    gap = compare(by_label["diet_oracle"], diet, tasks)[0]
    for name in others:
        run = by_label[name]
        cells = [fmt(*compare(run, diet, [task])[:2]) for task in tasks]
        diff, se, significant, _ = compare(run, diet, tasks)
        off_target = abs(run["sparsity_actual"] - sparsity) > SPARSITY_SLACK
        closed = ("–" if name == "diet_oracle" or not gap else "– (other sparsity)" if off_target
                  else f"{100 * diff / gap:.0f}%")
        average = f"{fmt(diff, se)}{' *' if significant else ''}"
        lines.append(f"| {name} | {run['sparsity_actual']:.3f} | " + " | ".join(cells) + f" | {average} | {closed} |")
    lines += ["", f"* = |average difference| > {Z:g} se. {len(others)} comparisons against the default DIET run, "
              "none of them the primary comparison (README): read them as exploratory.", ""]
    if overlaps:
        records = {r["config_hash"]: r for r in load_records(results_dir)}
        masks = {name: final_masks(records[run["config_hash"]]) for name, run in by_label.items()}
        own = masks["diet_oracle"]
        lines += ["Mask overlap (Jaccard of the kept MLP channels, all layers): with the default DIET mask, and with "
                  "each task's own single-task mask (the oracle's).", "",
                  "| mask | with diet | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 2)]
        for name in ["diet", *[n for n in others if n != "diet_oracle"]]:
            merged = masks[name]["all"]
            cells = [f"{jaccard(merged, own[task]):.3f}" for task in tasks]
            lines.append(f"| {name} | {jaccard(merged, masks['diet']['all']):.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--documents", required=True, help="the block's documents label, e.g. random500s0, first200")
    parser.add_argument("--model", default=None, help="needed when several models scored these documents")
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="calibration seed")
    parser.add_argument("--no-overlaps", action="store_true", help="scores only (no model needed)")
    parser.add_argument("--out", type=Path, default=None, help="folder for oracle_gap__<documents>.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    text = report(args.results_dir, args.documents, args.sparsity, args.seed, not args.no_overlaps, args.model)
    if args.out is not None:
        path = args.out / f"oracle_gap__{args.documents}__s{args.sparsity:g}.md"
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        print(f"written: {path}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
