"""Validation of the whole run config before any model is loaded (its identity: diet.config.identity).

Every failure names the bad value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from diet.dims.accounting import SPARSITY_OF  # dim, params
from diet.dims.choice import dim_parts
from diet.checks import choice, flag, number_in
from diet.config.sections import RunOptions, eval_options, include_paths, run_options
from diet.eval.documents import DocumentSelection
from diet.errors import DietConfigError
from diet.eval.tasks import accuracy_tasks, check_data_files, headline_metric, is_perplexity, resolve_task_names
from diet.methods import METHODS
from diet.calib.sources import source_file
from diet.models.loaders import SOURCES
from diet.paths import data_dir as resolve_data_dir
from diet.recover.options import RecoveryPlan, recovery_plan


def document_selection(cfg: Mapping[str, Any]) -> DocumentSelection:
    """The evaluated documents (eval.limit / eval.docs / eval.docs_seed); validates the two options.

    A config without eval.docs (records written before random samples existed) meant the first N."""
    return eval_options(cfg).documents()


def calib_tasks(cfg: Mapping[str, Any], tasks: list[str]) -> list[str]:
    """The tasks profiled for calibration: `calib.tasks` (default: the evaluated tasks) minus
    `calib.exclude`, in their listed order."""
    calib = cfg["calib"]
    task_sets = cfg.get("task_sets") or {}
    if calib.get("tasks") is None:
        chosen = accuracy_tasks(tasks)  # a perplexity task is evaluated, never calibrated on
        if not chosen:
            raise DietConfigError(f"tasks={tasks} are all perplexity tasks: name the tasks to profile with "
                                  f"calib.tasks (e.g. calib.tasks=paper7)")
    else:
        chosen = resolve_task_names(calib["tasks"], task_sets, include_paths(cfg["eval"].get("include_path")))
        leaked = [task for task in chosen if is_perplexity(task)]
        if leaked:
            raise DietConfigError(f"calib.tasks={list(chosen)} includes the perplexity task(s) {leaked}: calibrating "
                                  f"on the text whose perplexity is reported is not allowed")
    exclude = calib.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [exclude]
    excluded = resolve_task_names(list(exclude), task_sets, include_paths(cfg["eval"].get("include_path"))) \
        if exclude else []
    missing = [task for task in excluded if task not in chosen]
    if missing:
        raise DietConfigError(
            f"calib.exclude={list(exclude)} names {missing}, which are not profiled anyway: "
            f"the profiled tasks are {chosen}"
        )
    remaining = [task for task in chosen if task not in excluded]
    if not remaining:
        raise DietConfigError(f"calib.exclude={list(exclude)} leaves no task to profile (profiled tasks: {chosen})")
    return remaining


@dataclass(frozen=True)
class CheckedConfig:
    """What validation derives from a run config on the way (diet.run.cell.Cell carries it on)."""

    method: type                 # the registered diet.methods.Method class
    options: RunOptions          # every fixed section, bound
    tasks: list[str]             # the evaluated tasks, task sets resolved
    calib_tasks: list[str]       # the profiled tasks; [] for a method that profiles nothing
    data_dir: Path | None        # the offline data folder; None online
    recovery: RecoveryPlan | None  # recovery fine-tuning after pruning (recover=lora); None: recover=none


def validate(cfg: Mapping[str, Any]) -> CheckedConfig:
    """Check every option, before any model is loaded; returns what was derived on the way."""
    method = METHODS.get(cfg["method"]["name"])
    options = run_options(cfg, method.prunes)  # each fixed section binds to its class (diet/config/sections.py)
    SOURCES.get(cfg["model"]["source"])
    tasks = resolve_task_names(cfg["tasks"], cfg.get("task_sets") or {}, include_paths(options.eval.include_path))
    for task in tasks:
        headline_metric(task, cfg["eval"]["metric"])
    flag("model.add_bos_token", cfg["model"]["add_bos_token"])
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise DietConfigError(f"seed={cfg['seed']!r} is not allowed: use an integer")
    if method.prunes:
        number_in("sparsity", cfg["sparsity"], 0.0, 1.0, low_open=False, high_open=True)
        dim_parts(cfg["dims"])  # registered dimensions (diet.dims), each once, in pruning order
        if cfg["dims"] not in method.dims:
            raise DietConfigError(
                f"method {method.name!r} does not support dims={cfg['dims']!r}: it supports "
                f"{', '.join(method.dims)}"
            )
        choice("sparsity_of", cfg.get("sparsity_of", "dim"), SPARSITY_OF)
    # a path option is checked when set, whatever the method: a typo must not wait for the sweep's one cell
    # whose method reads it (DIET ignores calib.source)
    path = source_file(cfg)
    if method.prunes and method.calib_source and path is not None and "wikitext" in path.name.lower() \
            and any(is_perplexity(t) for t in tasks):
        raise DietConfigError(f"calib.source={cfg['calib']['source']!r} is WikiText and its perplexity is "
                              f"evaluated: calibrating on the reported text is not allowed (use c4)")
    method.check(dict(cfg["method"]))
    save_model = cfg.get("save_model")
    if not (save_model is None or isinstance(save_model, (bool, str))):
        raise DietConfigError(f"save_model={save_model!r} is not allowed: use null, true (saved_models/<record "
                              f"name>) or a folder path")
    if save_model not in (None, False) and method.per_task_profiles:
        raise DietConfigError(f"method {method.name!r} evaluates one pruned model per task: save_model needs a "
                              f"method that makes one model")
    profiled = calib_tasks(cfg, tasks) if method.calibrates() else []
    if method.per_task_profiles and profiled != tasks:
        raise DietConfigError(
            f"method {method.name!r} evaluates each task with its own profile, so calib.tasks/calib.exclude "
            f"must leave the profiled tasks equal to the evaluated ones ({tasks}), got {profiled}"
        )
    recovery = recovery_plan(cfg, method.prunes)
    data_dir = resolve_data_dir(cfg["data"]["dir"])
    check_data_files(tasks, data_dir)
    check_data_files(profiled, data_dir, need_train=True)
    return CheckedConfig(method=method, options=options, tasks=tasks, calib_tasks=profiled, data_dir=data_dir,
                         recovery=recovery)
