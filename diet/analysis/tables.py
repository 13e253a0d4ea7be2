"""Paper tables from the tidy results frame: a registry of named builders, one table per block.

Every builder takes a Block (one model at one eval limit) and returns a Table or None (nothing to
show). Scores are in points (x100). A column X with a sibling X_se is "X ± se" when rendered, a
sibling X_n is noted in X's header; csv keeps them as separate numeric columns (diet.analysis.render).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from diet.analysis.blocks import (DEFAULTS, DIET_METHODS, LABELS, Block, blocks_from_frame, method_rank, row_key,
                                  task_rank, treatment, untreated_variant)
from diet.analysis.blocks import variant as variant_of
from diet.errors import DietConfigError
from diet.methods import METHODS
from diet.registry import Registry
from diet.analysis.frame import ABLATION_KEYS
from diet.eval.metric_kinds import ACCURACY, PERPLEXITY
from diet.analysis.stats import ALPHA, Z, difference, holm, mean_se, paired_difference, two_sided_p, votes_needed

CELL_NOTE = "cells: score ± standard error, in points (x100); (n=...) = documents per task"


@dataclass
class Table:
    name: str
    data: pd.DataFrame                                    # numeric, what csv and W&B get
    notes: list[str] = field(default_factory=list)        # printed under md, as % comments in tex
    formats: dict[str, str] = field(default_factory=dict)  # column -> format of its value (default {:.1f})
    hidden: tuple[str, ...] = ("config_hash",)            # csv only (traceability), not in md/tex
    group: str = "tables"                                 # W&B group (common_group)


Builder = Callable[[Block], "Table | None"]
TABLES: Registry[Builder] = Registry("table")


def common_group(runs: list[dict[str, Any]]) -> str:
    """The W&B group most of the runs were logged under (ties: alphabetical); "tables" when none had one.

    An ablation table also holds the default-settings run, often made by the main sweep (same cell).
    """
    counts = Counter(run["group"] for run in runs if run["group"])
    return min(counts, key=lambda g: (-counts[g], g)) if counts else "tables"


def score_columns(run: dict[str, Any], block: Block) -> dict[str, Any]:
    """Per-task score/se/n and the two averages (NaN where the run lacks one of the tasks averaged)."""
    row: dict[str, Any] = {}
    for task in block.tasks:
        score, se, n = run["tasks"].get(task, (math.nan, math.nan, None))
        scale = block.scale(task)  # accuracies in points, a perplexity as it is
        row.update({task: scale * score, f"{task}_se": scale * se, f"{task}_n": n})
    for column, tasks in (("average", block.averaged), ("avg_above_chance", block.above_chance or [])):
        if tasks and all(task in run["tasks"] for task in tasks):
            mean, se = mean_se([run["tasks"][t][0] for t in tasks], [run["tasks"][t][1] for t in tasks])
        else:
            mean, se = math.nan, math.nan
        row.update({column: 100 * mean, f"{column}_se": 100 * se})
    return row


def compare(run: dict[str, Any], ref: dict[str, Any], tasks: list[str]) -> tuple[float, float, bool | None, bool]:
    """run minus ref, averaged over `tasks`, in points: (diff, se, significant, paired).

    Paired (the se of the per-document differences) where both runs hold outcomes of every task over
    the same documents; else unpaired from the two averages' se. NaN/None where a run lacks a task.
    """
    if not tasks or any(task not in run["tasks"] or task not in ref["tasks"] for task in tasks):
        return math.nan, math.nan, None, False
    pairs = [(run["outcomes"].get(task), ref["outcomes"].get(task)) for task in tasks]
    if all(a is not None and b is not None and a[1] == b[1] for a, b in pairs):
        per_task = [paired_difference(a[0], b[0]) for a, b in pairs]
        diff, se = (100 * v for v in mean_se([d for d, _ in per_task], [e for _, e in per_task]))
        return diff, se, bool(abs(diff) > Z * se), True
    own, other = (mean_se([r["tasks"][t][0] for t in tasks], [r["tasks"][t][1] for t in tasks]) for r in (run, ref))
    diff, se, significant = difference(100 * own[0], 100 * own[1], 100 * other[0], 100 * other[1])
    return diff, se, significant, False


def holm_columns(rows: list[dict[str, Any]], prefixes: Sequence[str]) -> int:
    """Add `<prefix>p_holm` and `<prefix>significant_holm` to every row beside each `<prefix>diff` /
    `<prefix>diff_se`, Holm-adjusted over every comparison the rows make together (the table's family);
    returns the family's size."""
    slots = [(row, prefix) for row in rows for prefix in prefixes if row.get(f"{prefix}diff") is not None]
    adjusted = holm([two_sided_p(row[f"{prefix}diff"], row[f"{prefix}diff_se"]) for row, prefix in slots])
    for (row, prefix), p in zip(slots, adjusted):
        row[f"{prefix}p_holm"] = p
        row[f"{prefix}significant_holm"] = None if math.isnan(p) else bool(p < ALPHA)
    return sum(not math.isnan(p) for p in adjusted)


def holm_note(family: int, prefix: str = "") -> str:
    return (f"{prefix}p_holm: two-sided p of {prefix}diff / se (normal), Holm-adjusted over the {family} comparisons "
            f"of this table; {prefix}significant_holm = {prefix}p_holm < {ALPHA:g} (family-wise), the reading to quote")


SIGNIFICANCE_NOTE = (f"significant = |diff| > {Z:g} se; paired: se from the per-document differences (both records "
                     "hold outcomes of the same documents), else se = sqrt(se_a^2 + se_b^2) (unpaired, so conservative)")


def above_chance_note(block: Block) -> str:
    rule = f"dense score - chance > {Z:g} se; chance: " + ", ".join(f"{t} {block.chance[t]:g}" for t in block.tasks
                                                                    if t in (block.chance or {}))
    if block.above_chance is None:
        return f"avg_above_chance: no dense run of this model at this limit ({rule})"
    if not block.above_chance:
        return f"avg_above_chance: no task is clearly above chance for dense ({rule})"
    return f"avg_above_chance averages {', '.join(block.above_chance)} ({rule})"


def perplexity_tasks(block: Block) -> list[str]:
    return [task for task in block.tasks if block.is_perplexity(task)]


def perplexity_note(block: Block) -> list[str]:
    """What a perplexity column holds, for the blocks that have one."""
    tasks = perplexity_tasks(block)
    return [f"{', '.join(tasks)}: the record's perplexity metric (word perplexity by default) over the whole test "
            "split, as it is (not in points; lower is better; lm-eval gives it no standard error), never averaged "
            "with the accuracies"] if tasks else []


def other_metric_note(block: Block) -> list[str]:
    """What the columns of tasks reported by neither an accuracy nor a perplexity hold (F1, BLEU...)."""
    tasks = [task for task in block.tasks if block.kind(task) not in (ACCURACY, PERPLEXITY)]
    return [f"{', '.join(tasks)}: reported by a metric that is neither an accuracy nor a perplexity, as it is (not "
            "in points), never averaged"] if tasks else []


def average_note(block: Block) -> list[str]:
    """Which tasks an average covers, where a column other than a perplexity (its own note) is left out of it."""
    left_out = [task for task in block.tasks if task not in block.averaged and not block.is_perplexity(task)]
    return [f"average: the mean of the accuracy columns ({', '.join(block.averaged)}; acc, acc_norm or "
            f"exact_match); {', '.join(left_out)} not averaged"] if left_out and block.averaged else []


def score_formats(block: Block) -> dict[str, str]:
    """Column formats of the score columns: anything but an accuracy in points with two decimals (accuracies:
    the default, one)."""
    return {task: "{:.2f}" for task in block.tasks if block.kind(task) != ACCURACY}


def block_notes(block: Block) -> list[str]:
    """Notes every table of a block carries: first-N documents, the seed shown of several."""
    notes = [block.first_n_note] if block.first_n_note else []
    seeds = {run["seed"] for run in block.runs}
    if len(seeds) > 1:
        notes.append("calibration seeds: one row per cell at its lowest seed; seeds__* aggregates every seed")
    return notes


def _frame(rows: list[dict[str, Any]], drop_empty: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(rows, dtype=object)
    for column in drop_empty:  # e.g. "variant": shown only when some row has one
        if column in frame and not frame[column].astype(bool).any():
            frame = frame.drop(columns=column)
    for column in frame:  # floats as floats (csv float_format), the rest (ints with None, str) as objects
        if all(isinstance(v, float) for v in frame[column]):
            frame[column] = frame[column].astype(float)
    return frame


# What a row removed, three ways (mean over its runs: the seeds of one setting remove the same counts)
REMOVED_NOTE = ("actual: fraction of the pruned dimension removed (MLP channels where they are pruned); non_embedding "
                "/ total: fraction of the non-embedding / of all parameters removed")
REMOVED_COLUMNS = ("actual", "non_embedding", "total")
REMOVED_FORMATS = {column: "{:.3f}" for column in REMOVED_COLUMNS}


def removed_columns(runs: list[dict[str, Any]]) -> dict[str, float]:
    mean = lambda key: sum(run[key] for run in runs) / len(runs)  # noqa: E731
    return {"actual": mean("sparsity_actual"), "non_embedding": mean("params_removed"),
            "total": mean("params_removed_total")}


@TABLES.register("main")
def main_table(block: Block) -> Table | None:
    """Rows method x sparsity (dense on top), columns the tasks, average and avg_above_chance."""
    if not block.main:
        return None
    rows = [{"method": run["method"], "variant": run["variant"], "sparsity": run["sparsity"],
             **removed_columns([run]), **score_columns(run, block), "config_hash": run["config_hash"]}
            for run in block.main]
    frame = _frame(rows, drop_empty=("variant",))
    notes = [CELL_NOTE, REMOVED_NOTE, *perplexity_note(block), *other_metric_note(block), *average_note(block)]
    if block.averaged:
        notes.append(above_chance_note(block))
    else:  # perplexity only: there is no accuracy to average
        frame = frame.drop(columns=["average", "average_se", "avg_above_chance", "avg_above_chance_se"])
    if "variant" in frame:
        notes.append("variant: options that differ from conf/config.yaml (a method's runs at a sparsity with "
                     "no default-settings run)")
    notes += block_notes(block)
    return Table(f"main__{block.label}", frame, notes,
                 formats={"sparsity": "{:.2f}", **REMOVED_FORMATS, **score_formats(block)},
                 group=common_group(block.main))


@TABLES.register("differences")
def differences_table(block: Block) -> Table | None:
    """Each pruned run's average minus the best non-DIET baseline's at the same sparsity, with its se."""
    rows = []
    for sparsity in sorted({run["sparsity"] for run in block.main if run["method"] != "dense"}):
        at = [run for run in block.main if run["sparsity"] == sparsity]
        scored = {run["config_hash"]: score_columns(run, block) for run in at}
        row_pairs: dict[str, dict[str, Any]] = {run["config_hash"]: {} for run in at}
        for column, short, tasks in (("average", "avg", block.averaged),
                                     ("avg_above_chance", "above_chance", block.above_chance or [])):
            baselines = [run for run in at if run["method"] not in DIET_METHODS
                         and not math.isnan(scored[run["config_hash"]][column])]
            if not baselines:
                continue
            # best baseline: highest score; ties go to the earlier method in METHOD_ORDER
            best = min(baselines, key=lambda r: (-scored[r["config_hash"]][column], row_key(r)))
            for run in at:
                if run is best:
                    continue
                diff, se, significant, paired = compare(run, best, tasks)
                row_pairs[run["config_hash"]].update({
                    f"vs_{short}": best["method"], f"{short}_diff": diff, f"{short}_diff_se": se,
                    f"{short}_significant": significant, f"{short}_paired": paired})
        for run in at:
            if row_pairs[run["config_hash"]]:
                rows.append({"method": run["method"], "variant": run["variant"], "sparsity": sparsity,
                             "average": scored[run["config_hash"]]["average"],
                             "average_se": scored[run["config_hash"]]["average_se"],
                             **row_pairs[run["config_hash"]], "config_hash": run["config_hash"]})
    if not rows:
        return None
    family = holm_columns(rows, ("avg_", "above_chance_"))
    columns = ["method", "variant", "sparsity", "average", "average_se"]
    for short in ("avg", "above_chance"):
        columns += [f"vs_{short}", f"{short}_diff", f"{short}_diff_se", f"{short}_significant",
                    f"{short}_p_holm", f"{short}_significant_holm", f"{short}_paired"]
    frame = _frame([{c: row.get(c) for c in columns + ["config_hash"]} for row in rows], drop_empty=("variant",))
    frame = frame.dropna(axis=1, how="all")  # no above-chance baseline at all: drop those columns
    notes = ["difference to the best non-DIET baseline at the same sparsity (vs_*), in points; " + SIGNIFICANCE_NOTE
             + " (uncorrected)", holm_note(family), above_chance_note(block), *block_notes(block)]
    formats = {"sparsity": "{:.2f}", "avg_diff": "{:+.1f}", "above_chance_diff": "{:+.1f}",
               "avg_p_holm": "{:.3f}", "above_chance_p_holm": "{:.3f}"}
    return Table(f"differences__{block.label}", frame, notes, formats, group=common_group(block.main))


def ablation_table(key: str) -> Builder:
    """Runs that differ only in option `key`, side by side (groups where `key` takes >= 2 values)."""
    others = [k for k in ABLATION_KEYS if k != key]

    def fixed(run: dict[str, Any]) -> tuple:
        return (run["method"], run["sparsity"], run["seed"], *(run[k] for k in others), run["method_options"],
                tuple(sorted(run["tasks"])))

    def build(block: Block) -> Table | None:
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for run in block.runs:
            if run[key] is not None:
                groups.setdefault(fixed(run), []).append(run)
        chosen = [run for group in groups.values() if len({r[key] for r in group}) > 1 for run in group]
        # each row is read against the run of its group at the option's default value (same seed: paired)
        reference = {group_key: next((r for r in group if r[key] == DEFAULTS[key]), None)
                     for group_key, group in groups.items()}
        compared = 0
        if not chosen:
            return None
        chosen.sort(key=lambda r: (method_rank(r["method"]), r["sparsity"], *(format_sort(r[k]) for k in others),
                                   r["seed"], format_sort(r[key]), r["config_hash"]))
        varying = [k for k in others if len({r[k] for r in chosen}) > 1]
        several_seeds = len({r["seed"] for r in chosen}) > 1
        rows = []
        for run in chosen:
            row: dict[str, Any] = {"method": run["method"], "sparsity": run["sparsity"]}
            if several_seeds:
                row["seed"] = run["seed"]
            row.update({LABELS[k]: run[k] for k in varying})
            row[LABELS[key]] = run[key]
            if key == "threshold":
                row["k"] = votes_needed(run["threshold"], run["n_tasks"])
            row.update({**removed_columns([run]), **score_columns(run, block)})
            ref = reference[fixed(run)]
            if ref is not None and ref is not run and block.averaged:
                diff, se, significant, _ = compare(run, ref, block.averaged)
                row.update(minus_default=diff, minus_default_se=se, significant=significant)
                compared += 1
            row["config_hash"] = run["config_hash"]
            rows.append(row)
        fixed_notes = ", ".join(f"{LABELS[k]}={chosen[0][k]}" for k in others if k not in varying
                                and chosen[0][k] is not None)
        notes = [CELL_NOTE, above_chance_note(block)] + ([f"fixed: {fixed_notes}"] if fixed_notes else [])
        if key == "threshold":
            tasks = sorted({r["n_tasks"] for r in chosen})
            notes.append(f"k = ceil(threshold x T) votes of T = {'/'.join(map(str, tasks))} tasks keep a channel")
        notes.append(REMOVED_NOTE)
        if compared:
            notes.append(f"minus_default: the row's average minus that of the run at {LABELS[key]}="
                         f"{DEFAULTS[key]} with everything else equal (same seed and documents), in points; "
                         f"{SIGNIFICANCE_NOTE}; {compared} comparisons in this table, uncorrected")
        notes += block_notes(block)
        formats = {"sparsity": "{:.2f}", **REMOVED_FORMATS, LABELS["threshold"]: "{:.4g}", "minus_default": "{:+.1f}"}
        return Table(f"ablation_{key}__{block.label}", _frame(rows), notes, formats, group=common_group(chosen))

    return build


LEFT_OUT = "all but "  # diet.analysis.frame.profiled_label of a leave-one-task-out run


@TABLES.register("loo")
def leave_one_out_table(block: Block) -> Table | None:
    """Per left-out task: its score when its profile was left out of the vote vs when all were profiled."""
    others = [k for k in ABLATION_KEYS if k != "profiled"]

    def settings(run: dict[str, Any]) -> tuple:
        return (run["method"], run["sparsity"], run["seed"], *(run[k] for k in others), run["method_options"],
                tuple(sorted(run["tasks"])))

    reference = {settings(run): run for run in block.runs if run["profiled"] == DEFAULTS["profiled"]}
    dense = next((run for run in block.main if run["method"] == "dense"), None)
    rows = []
    for run in block.runs:
        if not str(run["profiled"] or "").startswith(LEFT_OUT) or settings(run) not in reference:
            continue
        task = run["profiled"][len(LEFT_OUT):]
        if task not in run["tasks"]:
            continue
        full = reference[settings(run)]
        (held, held_se, n), (with_all, all_se, _) = run["tasks"][task], full["tasks"][task]
        diff, se, significant, paired = compare(run, full, [task])
        row = {"left_out": task, "method": run["method"], "sparsity": run["sparsity"], "n": n}
        if dense is not None and task in dense["tasks"]:
            row.update(dense=100 * dense["tasks"][task][0], dense_se=100 * dense["tasks"][task][1])
        row.update(all_profiled=100 * with_all, all_profiled_se=100 * all_se, left_out_score=100 * held,
                   left_out_score_se=100 * held_se, diff=diff, diff_se=se, significant=significant,
                   paired=paired, config_hash=run["config_hash"])
        rows.append(row)
    if not rows:
        return None
    rows.sort(key=lambda r: (method_rank(r["method"]), r["sparsity"], task_rank(r["left_out"])))
    notes = ["each row: the left-out task's score with its profile left out of the vote (left_out_score) and with "
             "all tasks profiled (all_profiled), same settings otherwise; diff = left_out_score - all_profiled, "
             "in points; " + SIGNIFICANCE_NOTE]
    chosen = [run for run in block.runs if str(run["profiled"] or "").startswith(LEFT_OUT)]
    return Table(f"loo__{block.label}", _frame(rows), notes,
                 formats={"sparsity": "{:.2f}", "diff": "{:+.1f}"}, group=common_group(chosen))


def format_sort(value: Any) -> tuple[int, Any]:
    """Sort key for option values of one kind (None first; numbers numerically, strings alphabetically)."""
    return (0, 0) if value is None else (1, value)


for _key in ABLATION_KEYS:
    TABLES.register(f"ablation_{_key}")(ablation_table(_key))


# --------------------------------------------------------------------------- calibration seeds

SEEDS_NOTE = ("over calibration seeds (the same documents for every seed): average = mean over seeds; sd_seeds = "
              "the spread across seeds (ddof=1); se_documents = sqrt(mean of the seeds' squared document se); "
              "average_se combines both, sqrt(se_documents^2 + sd_seeds^2 / seeds)")


def seed_groups(block: Block) -> dict[tuple, list[dict[str, Any]]]:
    """Runs that differ only in their calibration seed: (method, sparsity, variant) -> runs by seed."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in block.runs:
        groups.setdefault((run["method"], run["sparsity"], run["variant"]), []).append(run)
    return {key: sorted(runs, key=lambda r: r["seed"]) for key, runs in groups.items()}


def combine_seeds(values: list[float], doc_ses: list[float]) -> dict[str, float]:
    """Mean over seeds, sd across seeds, the document se and the combined se (see SEEDS_NOTE), over the seeds
    that have a value: a seed evaluated on other tasks (perplexity only beside a 7-task run) is NaN here."""
    kept = [(value, se) for value, se in zip(values, doc_ses) if not math.isnan(value)]
    if not kept:
        return {"mean": math.nan, "sd": math.nan, "se_documents": math.nan, "se": math.nan, "seeds": 0}
    values, doc_ses = [value for value, _ in kept], [se for _, se in kept]
    count = len(values)
    mean = sum(values) / count
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (count - 1)) if count > 1 else math.nan
    se_documents = math.sqrt(sum(se * se for se in doc_ses) / count)
    seed_term = 0.0 if count == 1 else sd * sd / count
    return {"mean": mean, "sd": sd, "se_documents": se_documents, "se": math.sqrt(se_documents ** 2 + seed_term),
            "seeds": count}


def average_over_seeds(scored: list[dict[str, Any]]) -> dict[str, float]:
    """The task average of one setting's runs (their score_columns): mean over seeds ± combined se."""
    return combine_seeds([s["average"] for s in scored], [s["average_se"] for s in scored])


@TABLES.register("seeds")
def seeds_table(block: Block) -> Table | None:
    """Per (method, sparsity, variant): the mean over calibration seeds with the spread across them."""
    groups = seed_groups(block)
    if not any(len(runs) > 1 for runs in groups.values()):
        return None
    rows, partial = [], []
    for (method, sparsity, variant), runs in sorted(groups.items(), key=lambda kv: row_key(kv[1][0])):
        # A seed without every accuracy task (e.g. perplexity-only beside the 7-task run of seed 0) counts for
        # the tasks it has; the average is over the seeds with every one (a note names them).
        scored = [score_columns(run, block) for run in runs]
        row: dict[str, Any] = {"method": method, "variant": variant, "sparsity": sparsity, "seeds": len(runs),
                               **removed_columns(runs)}
        for task in block.tasks:
            combined = combine_seeds([s[task] for s in scored], [s[f"{task}_se"] for s in scored])
            row.update({task: combined["mean"], f"{task}_se": combined["se"]})
            if block.is_perplexity(task):  # no document se: the spread across seeds is its only uncertainty
                row[f"{task}_sd_seeds"] = combined["sd"]
        if block.averaged:
            average = average_over_seeds(scored)
            averages = [s["average"] for s in scored if not math.isnan(s["average"])]
            row.update(average=average["mean"], average_se=average["se"], sd_seeds=average["sd"],
                       se_documents=average["se_documents"], lowest=min(averages, default=math.nan),
                       highest=max(averages, default=math.nan))
            if 0 < len(averages) < len(runs):
                seeds = [str(run["seed"]) for run, s in zip(runs, scored) if not math.isnan(s["average"])]
                partial.append(f"{method}{f' ({variant})' if variant else ''} at {sparsity:g}: the accuracy columns "
                               f"and the average over seed(s) {', '.join(seeds)} only, the seeds with every task; "
                               "each other column over the seeds that evaluated it")
        row["config_hash"] = ",".join(run["config_hash"] for run in runs)
        rows.append(row)
    if not rows:
        return None
    notes = ["cells: mean over seeds ± combined se, in points; " + SEEDS_NOTE, REMOVED_NOTE, *partial,
             *perplexity_note(block), *([block.first_n_note] if block.first_n_note else [])]
    formats = {"sparsity": "{:.2f}", **REMOVED_FORMATS, **score_formats(block),
               **{f"{task}_sd_seeds": "{:.2f}" for task in perplexity_tasks(block)}}
    return Table(f"seeds__{block.label}", _frame(rows, drop_empty=("variant",)), notes,
                 formats=formats, group=common_group(block.runs))


def is_seeded(method: str) -> bool:
    """Whether the calibration seed can change the method's result (diet.methods: `seeded`)."""
    try:
        return bool(METHODS.get(method).seeded)
    except DietConfigError:  # a method this code no longer has: assume it was seeded (pair only equal seeds)
        return True


def minus_over_seeds(own_runs: list[dict[str, Any]], other: str, runs: list[dict[str, Any]],
                     block: Block) -> dict[str, Any] | None:
    """`own_runs` (DIET's, or a method recovered) minus method `other`'s runs, paired per calibration seed (same
    documents), combined over seeds as in the seeds table; None when no seed pairs. An unseeded method (dense,
    magnitude) is one run, compared with every seed of `own_runs`; a seeded one only at the seeds both ran."""
    by_seed = {run["seed"]: run for run in runs}
    single = runs[0] if len(runs) == 1 and not is_seeded(other) else None
    pairs = [(run, by_seed.get(run["seed"], single)) for run in own_runs]
    pairs = [(a, b) for a, b in pairs if b is not None]
    # only the seeds where both runs have every accuracy task (a perplexity-only seed pairs with nothing)
    differences = [(a, b, compare(a, b, block.averaged)) for a, b in pairs]
    differences = [(a, b, c) for a, b, c in differences if not math.isnan(c[0])]
    if not differences:
        return None
    pairs, compared = [(a, b) for a, b, _ in differences], [c for *_, c in differences]
    combined = combine_seeds([d for d, *_ in compared], [se for _, se, *_ in compared])
    return {"seeds": len(pairs), "diff": combined["mean"], "diff_se": combined["se"], "sd_seeds": combined["sd"],
            "se_documents": combined["se_documents"], "significant": bool(abs(combined["mean"]) > Z * combined["se"]),
            "paired": all(paired for *_, paired in compared),
            "per_seed": ", ".join(f"{d:+.1f}" for d, *_ in compared),
            "config_hash": ",".join(b["config_hash"] for _, b in pairs)}


# a method's budget reading (diet.methods.base.Method.compared_at) -> the run column matched with DIET's and how
# close it must come: whole channels over fewer layers cannot always hit DIET's count (SmolLM2-135M: 9210 channels
# at 20%, 24 pruned layers of 384 = 9216); SliceGPT's width moves in steps of 8 dims, 1.2 points of Gemma-3 270M's
# non-embedding parameters and 1.8 of SmolLM2-135M's, so the nearest step is within 1 point
BUDGET_READINGS: dict[str, tuple[str, float]] = {
    "actual": ("sparsity_actual", 1e-3),        # a thousandth of the pruned dimension
    "non_embedding": ("params_removed", 1e-2),  # a hundredth of the non-embedding parameters
}


def compared_at(method: str) -> str | None:
    """The budget reading of a method whose `sparsity` is another knob (diet.methods: compared_at), else None."""
    return METHODS.get(method).compared_at if method in METHODS else None


def same_budget(method: str, runs: list[dict[str, Any]], sparsity: float, diet_runs: list[dict[str, Any]]) -> bool:
    """Whether `method`'s runs remove what DIET's runs at `sparsity` remove: the same sparsity, or for a method
    whose sparsity is another knob what its reading (BUDGET_READINGS) says it removed, within that reading's
    tolerance of DIET's."""
    reading = compared_at(method)
    if reading is not None:
        column, tolerance = BUDGET_READINGS[reading]
        return abs(runs[0][column] - diet_runs[0][column]) <= tolerance
    return runs[0]["sparsity"] == sparsity


def default_diet_runs(groups: dict[tuple, list[dict[str, Any]]],
                      treated: str = "") -> dict[float, list[dict[str, Any]]]:
    """sparsity -> DIET's runs at the default settings (given the treatment `treated`, e.g. 'recover=lora'), by
    seed."""
    return {sparsity: runs for (method, sparsity, variant), runs in groups.items()
            if method == "diet" and variant == treated}


@TABLES.register("seed_differences")
def seed_differences_table(block: Block) -> Table | None:
    """DIET minus every other method at the same sparsity, per seed and over seeds: a paired difference per seed
    (same documents), then combined as in the seeds table. DIET's cell is the default one given the same
    treatment as the other's (a recovered baseline against recovered DIET; none where DIET lacks that cell)."""
    groups = seed_groups(block)
    if not any(len(runs) > 1 for runs in groups.values()):
        return None
    rows = []
    for (other, other_sparsity, other_variant), runs in sorted(groups.items(), key=lambda kv: row_key(kv[1][0])):
        treated = treatment(runs[0])
        for sparsity, diet_runs in default_diet_runs(groups, treated).items():
            if other == "diet" or (other != "dense" and not same_budget(other, runs, sparsity, diet_runs)):
                continue
            difference_row = minus_over_seeds(diet_runs, other, runs, block)
            if difference_row is not None:
                rows.append({"method": "diet", "sparsity": sparsity, "diet_variant": treated, "vs": other,
                             "vs_variant": other_variant, "vs_sparsity": other_sparsity if compared_at(other) else None,
                             **difference_row})
    if not rows:
        return None
    rows.sort(key=lambda row: row["sparsity"])  # stable: each sparsity's rows in the groups' order
    family = holm_columns(rows, ("",))
    order = ["method", "sparsity", "diet_variant", "vs", "vs_variant", "vs_sparsity", "seeds", "diff", "diff_se",
             "sd_seeds", "se_documents", "significant", "p_holm", "significant_holm", "paired", "per_seed",
             "config_hash"]
    rows = [{column: row.get(column) for column in order} for row in rows]
    notes = [f"diff = DIET minus `vs`, {len(block.averaged)}-task average in points, over {len(rows)} comparisons in "
             f"this table; "
             "per seed the paired difference on the same documents (dense: one run, against every DIET seed), "
             "then combined over seeds as in seeds__*; significant = |diff| > "
             f"{Z:g} se, uncorrected for the number of comparisons", holm_note(family),
             *([block.first_n_note] if block.first_n_note else [])]
    if any(row["vs_sparsity"] is not None for row in rows):
        notes.append("vs_sparsity: the baseline's own sparsity knob where it is not what DIET's removes "
                     "(llm_pruner: a ratio inside its layer range, read where it removes the same fraction of the "
                     "MLP channels as DIET at `sparsity`; slicegpt: a hidden width, read where it removes DIET's "
                     "non-embedding parameter count within a hundredth)")
    if any(row["diet_variant"] for row in rows):
        notes.append("diet_variant: the treatment DIET's cell shares with the baseline's (recover=lora: both "
                     "recovered with the same recipe and seed); empty: DIET at its default settings")
    return Table(f"seed_differences__{block.label}",
                 _frame(rows, drop_empty=("diet_variant", "vs_variant", "vs_sparsity")), notes,
                 formats={"sparsity": "{:.2f}", "vs_sparsity": "{:.2f}", "diff": "{:+.1f}", "p_holm": "{:.3f}"},
                 group=common_group(block.runs))


SAME_TOKENS = "same tokens (DIET's task samples)"


def _calibration_only(run: dict[str, Any]) -> bool:
    """Whether calib.source is the run's one option off the defaults. A `dims` its method admits alone
    (SliceGPT's hidden width) is not a choice, so it does not make the run a variant here."""
    own = METHODS.get(run["method"]).dims if run["method"] in METHODS else ()
    unchosen = {"calib_source": None, **({"dims": None} if own == (run["dims"],) else {})}
    return variant_of({**run, **unchosen}) == ""


@TABLES.register("protocols")
def protocols_table(block: Block) -> Table | None:
    """Each calibrated baseline on its published protocol (generic text: any calib.source but the task
    samples) and on DIET's own task samples (the same tokens), beside DIET at default settings: its mean over
    calibration seeds and DIET minus it, paired per seed. Only runs whose one non-default option is
    calib.source; only when some baseline ran on generic text (else seed_differences__* says it all)."""
    groups = seed_groups(block)
    diet_by_sparsity = default_diet_runs(groups)
    rows = []
    for (method, sparsity, _), runs in sorted(groups.items(), key=lambda kv: row_key(kv[1][0])):
        source = runs[0]["calib_source"]
        budget = next((at for at, diet_runs in diet_by_sparsity.items()
                       if same_budget(method, runs, at, diet_runs)), None)
        if method in ("diet", "dense") or budget is None or source is None or not _calibration_only(runs[0]):
            continue
        average = average_over_seeds([score_columns(run, block) for run in runs])
        versus = minus_over_seeds(diet_by_sparsity[budget], method, runs, block)
        if versus is None or math.isnan(average["mean"]):
            continue
        rows.append({"method": method, "sparsity": sparsity,
                     "protocol": SAME_TOKENS if source == DEFAULTS["calib_source"] else f"published: {source}",
                     "seeds": average["seeds"], "average": average["mean"], "average_se": average["se"],
                     "diet_minus": versus["diff"], "diet_minus_se": versus["diff_se"],
                     "significant": versus["significant"], "paired": versus["paired"], "per_seed": versus["per_seed"],
                     "config_hash": ",".join(run["config_hash"] for run in runs)})
    if not any(row["protocol"] != SAME_TOKENS for row in rows):
        return None
    notes = [f"average: the baseline's {len(block.averaged)}-task average, mean over its calibration seeds ± combined se (as in "
             "seeds__*); diet_minus: DIET (task samples, default settings) minus the baseline, paired per seed on "
             f"the same documents, then combined over seeds; significant = |diet_minus| > {Z:g} se, uncorrected "
             f"for the {len(rows)} comparisons in this table",
             "published = the baseline's own calibration protocol (generic text, its reference sample count and "
             "length); same tokens = calibrated on exactly the task samples DIET profiles",
             *([block.first_n_note] if block.first_n_note else [])]
    return Table(f"protocols__{block.label}", _frame(rows), notes,
                 formats={"sparsity": "{:.2f}", "diet_minus": "{:+.1f}"}, group=common_group(block.runs))


@TABLES.register("recovery")
def recovery_table(block: Block) -> Table | None:
    """Per method given a treatment (recover=lora), beside the same cell untreated, over the seeds of the treated
    cell: both averages, the gain (paired per seed), the loss to the untuned dense model before and after, and the
    recovered fraction of that loss. The dense model given the same treatment is the control row."""
    groups = seed_groups(block)
    untreated = {(method, sparsity, variant): runs for (method, sparsity, variant), runs in groups.items()
                 if not treatment(runs[0])}
    dense = [run for run in block.main if run["method"] == "dense"]
    rows, used = [], []
    for (method, sparsity, _), treated_runs in sorted(groups.items(), key=lambda kv: row_key(kv[1][0])):
        treated, base = treatment(treated_runs[0]), untreated_variant(treated_runs[0])
        plain = untreated.get((method, sparsity, base)) if treated else None
        gain = minus_over_seeds(treated_runs, method, plain, block) if plain else None
        if gain is None:
            continue
        seeds = {run["seed"] for run in treated_runs}
        plain = [run for run in plain if run["seed"] in seeds] or plain  # an unseeded method: its one run
        averages = [average_over_seeds([score_columns(run, block) for run in runs]) for runs in (plain, treated_runs)]
        row = {"method": method, "sparsity": sparsity, "variant": base, "treatment": treated, "seeds": gain["seeds"],
               **removed_columns(treated_runs),  # recovery merges its adapters: the same counts as untreated
               "untreated": averages[0]["mean"], "untreated_se": averages[0]["se"],
               "treated": averages[1]["mean"], "treated_se": averages[1]["se"],
               "gain_diff": gain["diff"], "gain_diff_se": gain["diff_se"], "per_seed": gain["per_seed"]}
        losses = [minus_over_seeds(runs, "dense", dense, block) if dense and method != "dense" else None
                  for runs in (plain, treated_runs)]
        for name, loss in zip(("loss_untreated", "loss_treated"), losses):
            row.update({name: -loss["diff"], f"{name}_se": loss["diff_se"]} if loss else
                       {name: math.nan, f"{name}_se": math.nan})
        clear = losses[0] is not None and -losses[0]["diff"] > Z * losses[0]["diff_se"]  # a loss to divide by
        row["recovered_fraction"] = gain["diff"] / -losses[0]["diff"] if clear else math.nan
        row["config_hash"] = ",".join(run["config_hash"] for run in treated_runs)
        rows.append(row)
        used += treated_runs
    if not rows:
        return None
    family = holm_columns(rows, ("gain_",))
    order = ["method", "sparsity", "variant", "treatment", "seeds", *REMOVED_COLUMNS, "untreated", "untreated_se", "treated",
             "treated_se", "gain_diff", "gain_diff_se", "gain_p_holm", "gain_significant_holm", "per_seed",
             "loss_untreated", "loss_untreated_se", "loss_treated", "loss_treated_se", "recovered_fraction",
             "config_hash"]
    frame = _frame([{column: row.get(column) for column in order} for row in rows], drop_empty=("variant",))
    notes = [f"untreated / treated: the {len(block.averaged)}-task average without and with the treatment, mean over "
             "the treated cell's calibration seeds ± combined se (as in seeds__*); gain_diff = treated minus untreated, "
             "paired per seed on the same documents, then combined over seeds",
             holm_note(family, "gain_"), REMOVED_NOTE,
             "loss_*: the untuned dense model minus the row, paired per seed (dense: one run); recovered_fraction = "
             f"gain_diff / loss_untreated, a ratio of two noisy differences to read with their se, shown only where "
             f"loss_untreated > {Z:g} se; the dense row given the same treatment is the control (how much the "
             "treatment moves the unpruned model)",
             *([block.first_n_note] if block.first_n_note else [])]
    formats = {"sparsity": "{:.2f}", **REMOVED_FORMATS, "gain_diff": "{:+.1f}", "gain_p_holm": "{:.3f}", "recovered_fraction": "{:.2f}"}
    return Table(f"recovery__{block.label}", frame, notes, formats, group=common_group(used))


def build_tables(frame: pd.DataFrame) -> list[Table]:
    """Every registered table of every block, ordered by name."""
    tables = [table for block in blocks_from_frame(frame) for name in TABLES
              if (table := TABLES.get(name)(block)) is not None]
    return sorted(tables, key=lambda t: t.name)
