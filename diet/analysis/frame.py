"""All records of a results folder as one tidy DataFrame: one row per (record, task).

Reruns of a cell share its config_hash (the hash leaves out output paths, W&B and code version), so
only the newest record of each hash is kept: tables always show the latest result of a cell.
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from diet.calib.generic_text import NAMED_SOURCES
from diet.config.defaults import method_defaults, recover_defaults, run_defaults
from diet.eval.tasks import chance_levels
from diet.methods import METHODS
from diet.run.records import iter_records

# Options the ablation tables vary: column name -> the option it shows, as written on the command line (its label;
# its default is read from conf/, diet.analysis.blocks.DEFAULTS). Values are read from the method's inputs in the
# record's identity (ablation_value, INPUT_KEYS), so a method that does not receive an option shows none.
ABLATION_KEYS: dict[str, str] = {
    "threshold": "method.vote.threshold",
    "calib_n": "calib.n",
    "stat": "method.profile.stat",
    "scope": "method.mask.scope",
    "merge": "method.merge",
    "profiled": "profiled",               # the tasks profiled (calib.tasks / calib.exclude), as a label (profiled_label)
    "dims": "dims",
    "sparsity_of": "sparsity_of",         # the target's `of`
    "calib_source": "calib.source",       # baselines: "tasks" | "c4" | a file's name (calib_source_label)
    "exclude_bos": "calib.exclude_bos",   # the calibration's exclude_bos
    "recover": "recover",                 # recovery fine-tuning after pruning: none | lora[(options off its defaults)]
}
# column -> (input field, key) where the value is one field of one input (diet.methods.inputs)
INPUT_KEYS: dict[str, tuple[str, str]] = {
    "threshold": ("merge", "threshold"),
    "stat": ("profile", "stat"),
    "scope": ("mask", "scope"),
    "merge": ("merge", "rule"),
}
ALL_PROFILED = "all"  # the profiled tasks are the evaluated ones (the default)
NO_RECOVERY = "none"
RUN_COLUMNS = ["model", "method", "sparsity", "sparsity_actual", "limit", "documents", "seed", "params_removed",
               "params_removed_total",
               *ABLATION_KEYS, "method_options", "n_tasks", "mask_hash", "config_hash", "finished_at", "group"]
CHANCE: dict[str, float] = chance_levels()  # the paper tasks'
TASK_COLUMNS = ["task", "metric", "score", "stderr", "n", "chance", "outcomes", "docs_sha256"]  # the last three: None
# if absent (chance: a paper task's hand-kept level where an older record carries none)
COLUMNS = RUN_COLUMNS + TASK_COLUMNS


def _newest_key(record: dict[str, Any]) -> tuple[datetime, str]:
    # finished_at is ISO 8601 with an offset; the file name breaks ties (a `__rerunN` file sorts last)
    return datetime.fromisoformat(record["finished_at"]), Path(record.get("_path", "")).name


def newest_per_cell(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record of each config_hash, ordered by config_hash (deterministic)."""
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        kept = newest.get(record["config_hash"])
        if kept is None or _newest_key(record) > _newest_key(kept):
            newest[record["config_hash"]] = record
    return [newest[key] for key in sorted(newest)]


def load_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Deduplicated records of a folder; a missing folder has none."""
    if not Path(results_dir).is_dir():
        return []
    return newest_per_cell(iter_records(Path(results_dir)))


def default_tasks() -> list[str]:
    """conf/config.yaml's `tasks`, through its task_sets (paper7)."""
    defaults = run_defaults()
    tasks, task_sets = defaults["tasks"], defaults.get("task_sets") or {}
    return list(task_sets[tasks]) if isinstance(tasks, str) and tasks in task_sets else \
        ([tasks] if isinstance(tasks, str) else list(tasks))


def profiled_label(profiled: list[str], evaluated: list[str],
                   task_sets: dict[str, list[str]] | None = None) -> str:
    """'all' | 'all but boolq' (leave-one-task-out) | the name of a task set with exactly these tasks
    ('pair3') | 'boolq+rte' (any other set: cross-task transfer, or evaluation on a subset).
    'all' also for the default run's mask (profiled on conf/config.yaml's tasks) evaluated on none of them
    (a perplexity record): the same model as the default 7-task run, so one table row with it."""
    if profiled == evaluated or (not set(profiled) & set(evaluated) and list(profiled) == default_tasks()):
        return ALL_PROFILED
    left_out = [task for task in evaluated if task not in profiled]
    if len(left_out) == 1 and len(profiled) == len(evaluated) - 1:
        return f"all but {left_out[0]}"
    named = sorted(name for name, members in (task_sets or {}).items() if list(members) == list(profiled))
    return named[0] if named else "+".join(profiled)


def documents_label(record: dict[str, Any]) -> str:
    """Which documents a record scored: 'all', 'first<N>' (records before eval.docs existed took the
    first N) or 'random<N>s<seed>' (diet.eval.documents)."""
    evaluated = record["eval"]
    if evaluated.get("documents"):
        return str(evaluated["documents"])
    return "all" if evaluated.get("limit") is None else f"first{evaluated['limit']}"


def calib_source_label(record: dict[str, Any]) -> str:
    """A named source ('c4') or the calibration file's name, for a generic-text calibration."""
    configured = str(record["config"]["calib"].get("source"))
    return configured if configured in NAMED_SOURCES else Path(configured).name


def method_inputs(record: dict[str, Any]) -> dict[str, Any] | None:
    """The method's inputs as its identity holds them (diet.config.identity); None for a method without any."""
    return ((record.get("effective_config") or {}).get("method") or {}).get("inputs") or None


def calibration_input(inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """A method's calibration plan (TaskSamples: `tasks`; GenericText: `file_sha256`), None if it has none."""
    return next((value for value in (inputs or {}).values()
                 if isinstance(value, dict) and ("file_sha256" in value or "with_answer" in value)), None)


def recover_label(record: dict[str, Any]) -> str:
    """'none', 'lora' (conf/recover/lora.yaml's recipe) or 'lora(alpha=10.0, lr=0.0002, ...)': the recovery options
    a record's identity holds that differ from that file (recover=lora_slicegpt is such a variant)."""
    identity = (record.get("effective_config") or {}).get("recover")
    if identity is None:
        return NO_RECOVERY
    defaults = recover_defaults()
    changed = [f"{key}={identity[key]}" for key in sorted(defaults) if key in identity and identity[key] != defaults[key]]
    return "lora" + (f"({', '.join(changed)})" if changed else "")


def ablation_value(record: dict[str, Any], column: str) -> Any:
    """The option's value, or None where the method does not receive it (not among its inputs)."""
    if column == "recover":  # every method, dense included (the control)
        return recover_label(record)
    inputs = method_inputs(record)
    if inputs is None:
        return None
    calibration = calibration_input(inputs)
    target = inputs.get("target") or {}
    if column == "calib_source":  # the baselines' calibration text; DIET's task samples are not a choice
        if calibration is None or not _calib_source_choice(record["method"]):
            return None
        return "tasks" if "tasks" in calibration else calib_source_label(record)
    if column in ("sparsity_of", "dims"):
        return target.get({"sparsity_of": "of"}.get(column, column))
    if column == "exclude_bos":
        return None if calibration is None else bool(calibration["exclude_bos"])
    if column == "calib_n":
        return None if calibration is None else calibration.get("n")
    if column == "profiled":
        if calibration is None:
            return None
        evaluated = list(record["effective_config"]["tasks"])  # resolved, in run order (record["tasks"]: sorted)
        # generic text profiles no task: the same label as the evaluated tasks (the tables' default row)
        return profiled_label(calibration.get("tasks", evaluated), evaluated, record["config"].get("task_sets"))
    section, key = INPUT_KEYS[column]
    value = inputs.get(section)
    return None if value is None else value.get(key)


def _calib_source_choice(method: str) -> bool:
    """Whether `calib.source` chooses the method's calibration text (the task-agnostic baselines)."""
    return method in METHODS and METHODS.get(method).calib_source


def method_options_label(record: dict[str, Any]) -> str | None:
    """The method's own options (Method.Options, as its identity's inputs hold them) that differ from
    conf/method/<name>.yaml ("method.allocation=layer, ..."), or None at its defaults: a FLAP run without bias
    compensation is a variant, not another seed of FLAP. Its shared inputs (DIET's vote) have columns of their own."""
    options = (method_inputs(record) or {}).get("options") or {}
    defaults = method_defaults(record["method"])
    changed = [f"method.{key}={options[key]}" for key in sorted(options) if options[key] != defaults.get(key)]
    return ", ".join(changed) or None


def voting_tasks(record: dict[str, Any]) -> int:
    """T in k = ceil(threshold * T): the tasks whose masks were merged (the profiled tasks)."""
    mask = record.get("mask") or {}
    return int(mask.get("num_tasks") or len(record["tasks"]))


def input_seed(record: dict[str, Any]) -> int:
    """The seed among the method's inputs (a calibration draw, random channels), 0 where there is none."""
    inputs = method_inputs(record) or {}
    calibration = calibration_input(inputs)
    if calibration is not None:
        return int(calibration["seed"])
    return int((inputs.get("seed") or {}).get("value", 0))


@dataclass(frozen=True)
class RunRow:
    """One record as every table and figure reads it, built once per record (`run_row`); the frame has one row
    per (record, task) with these columns first (RUN_COLUMNS)."""

    model: str
    method: str
    sparsity: float
    sparsity_actual: float
    limit: int | None
    documents: str               # documents_label: 'all', 'first<N>' or 'random<N>s<seed>'
    seed: int                    # the seed the result depends on (0 for a method whose inputs hold none)
    params_removed: float        # fraction of the non-embedding parameters removed: comparable across dims, methods
    params_removed_total: float  # fraction of all parameters removed (embeddings included)
    ablation: dict[str, Any]     # ABLATION_KEYS column -> value; None where the method does not receive the option
    method_options: str | None   # its own options off their defaults (method_options_label)
    n_tasks: int                 # T of the vote (voting_tasks)
    mask_hash: str | None        # the pruned model, whatever was evaluated
    config_hash: str
    finished_at: str
    group: str | None            # the W&B group

    def columns(self) -> dict[str, Any]:
        """The frame's run columns, in RUN_COLUMNS order (the ablation columns spread out)."""
        plain = {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.name != "ablation"}
        return {column: self.ablation[column] if column in ABLATION_KEYS else plain[column] for column in RUN_COLUMNS}


def run_row(record: dict[str, Any]) -> RunRow:
    return RunRow(
        model=record["model"]["name"],
        method=record["method"],
        sparsity=float(record["sparsity"]["target"]),
        sparsity_actual=float(record["sparsity"]["actual"]),
        limit=record["eval"]["limit"],
        documents=documents_label(record),
        seed=input_seed(record),
        params_removed=float(record["parameters"]["removed_fraction_non_embedding"]),
        params_removed_total=float(record["parameters"]["removed_fraction_total"]),
        ablation={column: ablation_value(record, column) for column in ABLATION_KEYS},
        method_options=method_options_label(record),
        n_tasks=voting_tasks(record),
        mask_hash=(record.get("mask") or {}).get("mask_hash"),
        config_hash=record["config_hash"],
        finished_at=record["finished_at"],
        group=(record["config"].get("wandb") or {}).get("group"),
    )


def tidy_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for record in records:
        fields = run_row(record).columns()
        for task, m in record["tasks"].items():
            rows.append({**fields, "task": task, "metric": m["metric"], "score": float(m["score"]),
                         "stderr": math.nan if m.get("score_stderr") is None else float(m["score_stderr"]), "n": int(m["n"]),
                         "chance": m.get("chance", CHANCE.get(task)),
                         "outcomes": m.get("outcomes"), "docs_sha256": m.get("docs_sha256")})
    # object dtype keeps None as None (pandas would turn a None limit into NaN and ints into floats)
    frame = pd.DataFrame(rows, columns=COLUMNS, dtype=object)
    for column in ("sparsity", "sparsity_actual", "params_removed", "params_removed_total", "score", "stderr"):
        frame[column] = frame[column].astype(float)
    return frame.sort_values(["config_hash", "task"], kind="stable").reset_index(drop=True)


def load_frame(results_dir: str | Path) -> pd.DataFrame:
    return tidy_frame(load_records(results_dir))
