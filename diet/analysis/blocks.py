"""Runs (one per deduplicated record) grouped into blocks of one model at one eval limit.

Only runs of the same model and eval.limit are comparable, so every table and figure is built per
block. A block also fixes the two things its tables share: the ordered task columns and the tasks
on which the dense model is clearly above chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from diet.analysis.frame import ABLATION_KEYS, ALL_PROFILED, NO_RECOVERY, RUN_COLUMNS
from diet.analysis.stats import clearly_above_chance
from diet.config.defaults import option_default, run_defaults
from diet.eval.metric_kinds import ACCURACY, PERPLEXITY, metric_kind
from diet.methods import METHODS

# Row order of every table, from the method registry (Method.table_rank): dense first, DIET and its oracle, then
# the baselines, then anything new; and the methods that are not baselines in the differences table.
METHOD_ORDER = tuple(sorted(METHODS.names(), key=lambda name: (METHODS.get(name).table_rank, name)))
DIET_METHODS = frozenset(name for name in METHODS.names() if not METHODS.get(name).baseline)
TASK_ORDER = tuple(run_defaults()["task_sets"]["paper7"])  # the paper's column order
# The option each ablation column varies, as written on the command line ("method.vote.threshold").
LABELS = dict(ABLATION_KEYS)
# The defaults (conf/config.yaml; a method.* option: conf/method/diet.yaml, the method the ablations vary): a run at
# these settings is a main-table run; any other value makes it a variant.
DEFAULTS: dict[str, Any] = {column: {"profiled": ALL_PROFILED, "recover": NO_RECOVERY}.get(column) or option_default(path)
                            for column, path in ABLATION_KEYS.items()}


def method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def task_rank(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)


def format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Options applied after pruning to any method alike (recovery fine-tuning): a baseline run with one is compared with
# DIET given the same one, never with DIET without it.
TREATMENTS = ("recover",)


def treatment(run: dict[str, Any]) -> str:
    """'' when no treatment is off its default, else 'recover=lora' (the part of `variant` a comparison shares)."""
    return ", ".join(f"{LABELS[key]}={format_value(run[key])}" for key in TREATMENTS
                     if run[key] is not None and run[key] != DEFAULTS[key])


def untreated_variant(run: dict[str, Any]) -> str:
    """`variant` with the treatments left out: the settings of the untreated cell a treated run is read against."""
    return variant({**run, **{key: None for key in TREATMENTS}})


def variant(run: dict[str, Any]) -> str:
    """'' at the default settings, else the differing options ('method.vote.threshold=1, calib.n=6', then the
    method's own options, 'method.bias=False')."""
    shared = [f"{LABELS[key]}={format_value(run[key])}" for key in ABLATION_KEYS
              if run[key] is not None and run[key] != DEFAULTS[key]]
    return ", ".join(shared + ([run["method_options"]] if run.get("method_options") else []))


def _plain(value: Any) -> Any:
    """NaN/NA -> None; numpy scalars -> Python (keys of dicts and sort keys must compare cleanly)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def runs_from_frame(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per run: its run fields plus tasks {task: (score, stderr, n)} and, for tasks whose
    record has per-document outcomes, outcomes {task: (outcomes, docs_sha256)}; ordered by config_hash.
    Records of one model evaluated on disjoint tasks are one run (merge_complementary)."""
    runs: dict[str, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        run = runs.setdefault(row["config_hash"], {col: _plain(row[col]) for col in RUN_COLUMNS}
                              | {"tasks": {}, "outcomes": {}, "kinds": {}, "chance": {}})
        run["tasks"][row["task"]] = (float(row["score"]), float(row["stderr"]), int(row["n"]))
        run["kinds"][row["task"]] = metric_kind(row["metric"])
        if _plain(row["chance"]) is not None:
            run["chance"][row["task"]] = float(row["chance"])
        if _plain(row["outcomes"]) is not None:
            run["outcomes"][row["task"]] = (row["outcomes"], row["docs_sha256"])
    for run in runs.values():
        run["variant"] = variant(run)
        run["config_hashes"] = [run["config_hash"]]
    return merge_complementary([runs[key] for key in sorted(runs)])


# Fields that may differ between records of one model evaluated on different tasks (run separately, e.g. a
# perplexity run beside the 7-task run): everything else must be equal for two records to be one run.
PER_EVALUATION = frozenset({"n_tasks", "config_hash", "finished_at", "group", "tasks", "outcomes", "config_hashes",
                            "kinds", "chance"})


def merge_complementary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of the same pruned model (same settings, seed and mask) evaluated on disjoint task sets
    become one run with the union of their tasks, so a table shows one row per model, not one per
    evaluation. Records whose task sets overlap stay apart: neither result is silently preferred.
    The merged run's config_hash joins theirs with '+'; config_hashes lists them (mask statistics: the first).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        key = tuple((k, repr(v)) for k, v in sorted(run.items()) if k not in PER_EVALUATION)
        groups.setdefault(key, []).append(run)
    merged = []
    for group in groups.values():
        tasks = [t for run in group for t in run["tasks"]]
        if len(group) == 1 or len(tasks) != len(set(tasks)):
            merged.extend(group)
            continue
        run = dict(group[0])
        run.update(tasks={t: v for r in group for t, v in r["tasks"].items()},
                   outcomes={t: v for r in group for t, v in r["outcomes"].items()},
                   kinds={t: v for r in group for t, v in r["kinds"].items()},
                   chance={t: v for r in group for t, v in r["chance"].items()},
                   config_hashes=[h for r in group for h in r["config_hashes"]],
                   config_hash="+".join(r["config_hash"] for r in group),
                   finished_at=max(r["finished_at"] for r in group))
        if run["mask_hash"] is None:  # unpruned: T counts the evaluated tasks (frame.voting_tasks)
            run["n_tasks"] = len(run["tasks"])
        merged.append(run)
    return sorted(merged, key=lambda r: r["config_hash"])


def row_key(run: dict[str, Any]) -> tuple:
    """Dense on top, then sparsity ascending, methods in METHOD_ORDER, default settings before variants."""
    return (run["method"] != "dense", run["sparsity"], method_rank(run["method"]), run["variant"] != "",
            run["variant"], run["config_hash"])


@dataclass
class Block:
    model: str
    limit: int | None
    runs: list[dict[str, Any]]      # every run of this model and these documents, in row_key order
    main: list[dict[str, Any]]      # the main-table selection (see main_runs), in row_key order
    tasks: list[str]                # task columns: paper order, then others alphabetically
    above_chance: list[str] | None  # tasks where dense is clearly above chance; None without a dense run
    documents: str = ""             # diet.analysis.frame.documents_label: all | first<N> | random<N>s<seed>
    kinds: dict[str, str] | None = None     # task -> its metric's kind (diet.eval.metric_kinds)
    chance: dict[str, float] | None = None  # task -> its chance level, where it has one

    def kind(self, task: str) -> str:
        return (self.kinds or {}).get(task, ACCURACY)

    def is_perplexity(self, task: str) -> bool:
        return self.kind(task) == PERPLEXITY

    def scale(self, task: str) -> float:
        """Accuracies in points (x100), any other metric as it is."""
        return 100.0 if self.kind(task) == ACCURACY else 1.0

    @property
    def averaged(self) -> list[str]:
        """The task columns an average covers: the tasks reported by an accuracy (a perplexity, an F1 are
        columns of their own, never averaged with accuracies)."""
        return [task for task in self.tasks if self.kind(task) == ACCURACY]

    @property
    def is_random(self) -> bool:
        return self.documents.startswith("random")

    @property
    def label(self) -> str:
        """File-name label: <model>__limit<N> (first N, as before random samples), __limitall, __random<N>."""
        if self.is_random:
            return f"{self.model}__{self.documents.removesuffix('s0')}"
        return f"{self.model}__limit{'all' if self.limit is None else self.limit}"

    @property
    def docs_title(self) -> str:
        """How figures name the documents."""
        return f"{self.limit} random docs" if self.is_random else f"limit {self.limit}"

    @property
    def first_n_note(self) -> str | None:
        """Tables of first-N blocks say so: those documents are not a random sample of the split."""
        if self.documents.startswith("first"):
            return (f"documents: the first {self.limit} of each split (records made before eval.docs=random), "
                    f"not a random sample: HellaSwag's first 3243 validation documents are all ActivityNet")
        return None


def main_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, sparsity) the run at the default settings; where there is none, every variant.
    Of several calibration seeds, the lowest (the seeds table aggregates them all).

    So ablation sweeps in the same folder do not crowd the main table, and a quick run at, say,
    calib.n=6 still shows up (labelled with its variant).
    """
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["method"], run["sparsity"]), []).append(run)
    chosen = []
    for cell in cells.values():
        defaults = [run for run in cell if run["variant"] == ""]
        picked = defaults or cell
        lowest = {}
        for run in sorted(picked, key=lambda r: (r["seed"], r["config_hash"])):
            lowest.setdefault(run["variant"], run)
        chosen.extend(lowest.values())
    return sorted(chosen, key=row_key)


def above_chance_tasks(main: list[dict[str, Any]]) -> list[str] | None:
    dense = [run for run in main if run["method"] == "dense"]
    if not dense:
        return None
    run = dense[0]  # several dense runs (e.g. seeds): the first by config_hash decides
    return sorted((t for t, (score, se, _) in run["tasks"].items()
                   if clearly_above_chance(run["chance"].get(t), score, se)), key=task_rank)


def blocks_from_frame(frame: pd.DataFrame) -> list[Block]:
    """One block per (model, documents): only runs on the same documents are compared."""
    by_block: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs_from_frame(frame):
        by_block.setdefault((run["model"], run["limit"], run["documents"]), []).append(run)
    blocks = []
    # None (all documents) sorts after every number
    for (model, limit, documents) in sorted(by_block, key=lambda k: (k[0], k[1] is None, k[1] or 0, k[2])):
        runs = sorted(by_block[(model, limit, documents)], key=row_key)
        main = main_runs(runs)
        tasks = sorted({t for run in runs for t in run["tasks"]}, key=task_rank)
        kinds = {t: k for run in runs for t, k in run["kinds"].items()}
        chance = {t: c for run in runs for t, c in run["chance"].items()}
        blocks.append(Block(model, limit, runs, main, tasks, above_chance_tasks(main), documents, kinds, chance))
    return blocks
