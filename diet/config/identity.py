"""A cell's identity: what its result depends on (`identity`), hashed (`config_hash`).

Reruns of one identity are skipped as done, so the identity must hold everything that can change a result
and nothing that cannot. It is built from these things and nothing else:

- the base sections every run depends on: the model (its dtype as it resolves on this machine: bfloat16 on a
  GPU, float32 on the CPU, two precisions are two cells), the evaluated tasks, the evaluation options and the
  documents scored, whether data came from the data folder or the hub; a task that is not one of the paper's
  (any other lm-eval task, or the user's own YAML from eval.include_path, a folder path that identifies
  nothing) by its definition's content (diet.eval.tasks.definition_digest), so that a changed YAML or data
  file is another cell while the paper tasks' identities stay as they were;
- the method: its name, its version (bumped when its scoring changes);
- the recovery fine-tuning after pruning, when there is one (diet.recover.options.RecoveryPlan.identity: its
  options, the text by content, the seed); `recover=none` adds nothing, so no earlier cell changed;
- the method's inputs, whole (diet.methods.inputs.identity_of): exactly the typed object its `select`
  receives, so an option reaches a method only by entering its identity. A method that ignores an option
  never receives it, so cells differing only there are one cell (dense at every sparsity and seed).

Options that change how a result is computed, not what it is (float summation order at most), are the runtime
options (diet.config.runtime.Runtime, `RUNTIME`): left out of the base sections and never part of any input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diet.config.runtime import RUNTIME
from diet.config.validate import calib_tasks, document_selection
from diet.config.sections import include_paths
from diet.eval.tasks import PAPER_TASKS, definition_digest, resolve_task_names
from diet.devices import resolved_precision
from diet.eval.documents import identity as documents_identity
from diet.io import stable_hash
from diet.methods import METHODS
from diet.methods.inputs import build_inputs, identity_of
from diet.paths import data_dir
from diet.recover.options import RecoveryPlan, recovery_plan

def base_identity(cfg: Mapping[str, Any], tasks: list[str], recovery: RecoveryPlan | None = None) -> dict[str, Any]:
    """What every run depends on, whatever its method (`recovery`: the cell's recovery fine-tuning, if any)."""
    model = {k: v for k, v in cfg["model"].items() if k not in RUNTIME["model"]}
    model["dtype"] = resolved_precision(cfg["model"])[1]
    # the documents enter as their selection's identity (a random sample: its size and seed)
    evaluation = {k: v for k, v in cfg["eval"].items()
                  if k not in RUNTIME["eval"] and k not in ("docs", "docs_seed", "include_path")}
    docs = documents_identity(document_selection(cfg))
    if docs is not None:
        evaluation["docs"] = docs
    # the tasks evaluated or profiled that are not the paper's, by content (calib.tasks may name others)
    named = list(dict.fromkeys([*tasks, *calib_tasks(cfg, tasks)] if (cfg.get("calib") or {}).get("tasks") is not None
                               else tasks))
    resolve_task_names(named, {}, include_paths(cfg["eval"].get("include_path")))  # as this config defines them
    own = {task: definition_digest(task, data_dir(cfg["data"]["dir"])) for task in named if task not in PAPER_TASKS}
    return {"model": model, "tasks": list(tasks), "eval": evaluation,
            "data_mode": "online" if cfg["data"]["dir"] is None else "offline",
            **({"task_definitions": own} if own else {}),
            **({"recover": recovery.identity()} if recovery is not None else {})}


def identity(cfg: Mapping[str, Any], tasks: list[str], method: Any, inputs: Any, recovery: RecoveryPlan | None,
             version: int | None = None) -> dict[str, Any]:
    """The identity of a cell whose method (a Method class) receives `inputs` and whose recovery is `recovery`
    (validate's, checked once) (`version`: the method's, unless given: a record made by an earlier version
    keeps that one)."""
    return {**base_identity(cfg, tasks, recovery),
            "method": {"name": method.name, "version": method.version if version is None else version,
                       "inputs": identity_of(inputs)}}


def effective_config(cfg: Mapping[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The identity of a validated run config (its method's inputs built here; diet.run.cell.resolve builds
    them once and keeps them for the method)."""
    method = METHODS.get(cfg["method"]["name"])
    inputs = build_inputs(method, cfg, calib_tasks(cfg, tasks) if method.calibrates() else [])
    return identity(cfg, tasks, method, inputs, recovery_plan(cfg, method.prunes))


def config_hash(effective: Mapping[str, Any]) -> str:
    return stable_hash(effective, length=16)
