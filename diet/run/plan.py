"""What a sweep would run before it runs: its cells, which are done, and what the rest should cost.

A cell is done when a record of its config hash exists in results_dir (exactly what a run skips). The cost
of a cell that is not done comes from finished records of the same model and method on the same kind
of device: their profiling / pruning seconds as they were, their evaluation seconds scaled by the
number of documents. Where no such record exists the plan says so instead of guessing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from diet.config.validate import document_selection
from diet.run.cell import resolve
from diet.run.claims import describe, live_claim
from diet.run.records import find_existing, iter_records
from diet.eval.metric_kinds import PERPLEXITY, metric_kind
from diet.eval.tasks import data_files, is_perplexity, task_spec


@dataclass
class PlannedCell:
    overrides: list[str]
    method: str
    model: str
    config_hash: str
    documents: int | None       # documents evaluated over all tasks (None: unknown, online data)
    done: Path | None = None    # the record that makes it done
    estimate_s: float | None = None
    basis: str = ""             # where the estimate comes from
    same_as: str | None = None  # an earlier cell of the sweep with the same hash (a method ignores the option)
    running: str | None = None  # who holds the cell's claim (diet.run.claims), when a live job runs it now


@dataclass
class Plan:
    cells: list[PlannedCell] = field(default_factory=list)

    @property
    def todo(self) -> list[PlannedCell]:
        """Cells that would run (each config hash once)."""
        return [cell for cell in self.cells if cell.done is None and cell.same_as is None]

    def total_estimate_s(self) -> tuple[float, int]:
        """Estimated seconds of the cells to run, and how many of them have no estimate."""
        known = [cell.estimate_s for cell in self.todo if cell.estimate_s is not None]
        return sum(known), len(self.todo) - len(known)


def split_documents(task: str, data_dir: Path | None) -> int | None:
    """Documents in a task's evaluated split: lines of its .jsonl file(s) (the data folder's, or those its own
    YAML reads); None where they are not known before loading (the hub, another format)."""
    spec = task_spec(task)
    files = [Path(path) for path in spec.local_files.get(spec.eval_split, [])] if spec.local_files else \
        ([] if data_dir is None else [data_files(task, data_dir)["eval"]])
    if not files or any(path.suffix != ".jsonl" for path in files):
        return None
    total = 0
    for path in files:
        with path.open(encoding="utf-8") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def cell_documents(cfg: dict[str, Any], tasks: list[str], data_dir: Path | None) -> int | None:
    limit = document_selection(cfg).limit
    sizes = [split_documents(task, data_dir) for task in tasks]
    if any(size is None for size in sizes):
        return None
    return sum(size if limit is None else min(limit, size) for size in sizes)


def device_kind(record: dict[str, Any]) -> str:
    return "cuda" if str(record["model"].get("device", "cpu")).startswith("cuda") else "cpu"


def work_kind(tasks: Iterable[str]) -> str:
    """'perplexity' when a perplexity task is evaluated (a WikiText document is thousands of tokens, not
    a multiple-choice item: its seconds per document are not comparable), else 'accuracy'."""
    return "perplexity" if any(is_perplexity(task) for task in tasks) else "accuracy"


CostKey = tuple[str, str, bool, str, str]  # (model, method, recovered, device, work kind)


def cost_name(method: str, recovered: bool) -> str:
    """A method as the plan names its cost basis ('diet+recover': recovered cells)."""
    return method + ("+recover" if recovered else "")


def cost_basis(records: Iterable[dict[str, Any]]) -> dict[CostKey, list[tuple[float, float]]]:
    """(model, method, recovered, device, work kind) -> [(fixed seconds, evaluation seconds per document)] of
    finished records. A recovered cell (recover=lora) costs its training on top: it is keyed apart."""
    basis: dict[CostKey, list[tuple[float, float]]] = {}
    for record in records:
        timings = record.get("timings") or {}
        documents = sum(int(m["n"]) for m in record["tasks"].values())
        if not timings or documents == 0:
            continue
        evaluate = float(timings.get("evaluate", 0.0))
        fixed = sum(float(v) for k, v in timings.items() if k != "evaluate")
        perplexity = any(metric_kind(m["metric"]) == PERPLEXITY for m in record["tasks"].values())
        key = (record["model"]["name"], record["method"], bool(record.get("recovery")), device_kind(record),
               "perplexity" if perplexity else "accuracy")
        basis.setdefault(key, []).append((fixed, evaluate / documents))
    return basis


def measured_cost(basis: dict[CostKey, list[tuple[float, float]]], model: str, method: str, recovered: bool,
                  device: str, kind: str) -> tuple[list[tuple[float, float]], str]:
    """The finished records a cell's cost is estimated from, and how the plan names them: the method's own
    records of this model, device and work kind; failing those, every other method's of the same (the
    evaluation, not the selection, dominates a cell: one WikiText pass is about an hour here, any profile
    minutes), recovered cells from recovered records only; ([], why) when there are none."""
    suffix = " with perplexity" if kind == "perplexity" else ""
    name = cost_name(method, recovered)
    own = basis.get((model, method, recovered, device, kind))
    if own:
        return own, f"{len(own)} {device} record(s) of {model}/{name}{suffix}"
    others = {cost_name(m, r): v for (mo, m, r, d, k), v in basis.items()
              if (mo, r, d, k) == (model, recovered, device, kind)}
    if others:
        measured = [cost for costs in others.values() for cost in costs]
        return measured, (f"no {device} record of {model}/{name}{suffix}: estimated from {len(measured)} of "
                          f"{model}/{'+'.join(sorted(others))} (evaluation dominates; its own selection not counted)")
    return [], f"no finished {device} record of {model}/{name}{suffix}: run one cell, then plan again"


def plan_cells(cfgs: Iterable[tuple[list[str], dict[str, Any]]], results_dir: Path, device: str) -> Plan:
    """Validate every cell (a bad one fails here, before anything runs), mark the done ones, estimate the rest."""
    plan = Plan()
    basis = cost_basis(iter_records(results_dir)) if results_dir.is_dir() else {}
    first: dict[str, str] = {}
    for overrides, cfg in cfgs:
        resolved = resolve(cfg)
        cfg_hash, method, model = resolved.config_hash, resolved.method.name, resolved.model_name
        cell = PlannedCell(overrides, method, model, cfg_hash, cell_documents(cfg, resolved.tasks, resolved.data_dir))
        cell.done = find_existing(results_dir, method, model, cfg_hash) if results_dir.is_dir() else None
        if cell.done is None:
            held = live_claim(results_dir, resolved.stem)
            cell.running = describe(held) if held is not None else None
        if cfg_hash in first:
            cell.same_as = first[cfg_hash]
            plan.cells.append(cell)
            continue
        first[cfg_hash] = " ".join(overrides) or "(defaults)"
        measured, why = measured_cost(basis, model, method, resolved.checked.recovery is not None, device,
                                      work_kind(resolved.tasks))
        if cell.done is None:
            cell.basis = why
            if measured and cell.documents is not None:
                fixed = statistics.median(f for f, _ in measured)
                per_doc = statistics.median(p for _, p in measured)
                cell.estimate_s = fixed + per_doc * cell.documents
        plan.cells.append(cell)
    return plan


def format_plan(plan: Plan, device: str) -> str:
    lines = ["| cell | method | hash | documents | status | estimate |", "|---|---|---|---:|---|---:|"]
    for cell in plan.cells:
        status = f"done ({cell.done.name})" if cell.done else (f"same cell as `{cell.same_as}`" if cell.same_as
                                                                  else f"running ({cell.running})" if cell.running
                                                                  else "to run")
        estimate = "" if cell.done or cell.same_as else (
            "?" if cell.estimate_s is None else f"{cell.estimate_s / 3600:.2f} h")
        lines.append(f"| {' '.join(cell.overrides) or '(defaults)'} | {cell.method} | {cell.config_hash} | "
                     f"{cell.documents if cell.documents is not None else '?'} | {status} | {estimate} |")
    total, unknown = plan.total_estimate_s()
    lines.append("")
    distinct = sum(1 for cell in plan.cells if cell.same_as is None)
    done = sum(1 for cell in plan.cells if cell.same_as is None and cell.done is not None)
    lines.append(f"{len(plan.cells)} cells, {distinct} distinct: {done} done, {len(plan.todo)} to run; "
                 f"estimated {total / 3600:.2f} {device} hours for the cells with a measured cost"
                 + (f", {unknown} cell(s) without one (see the basis below)" if unknown else ""))
    for basis in sorted({cell.basis for cell in plan.todo if cell.basis}):
        lines.append(f"- {basis}")
    return "\n".join(lines)
