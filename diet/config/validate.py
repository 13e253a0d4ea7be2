"""Validation of the whole run config before any model is loaded (its identity: diet.config.identity).

Every failure names the bad value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from diet.dims.accounting import SPARSITY_OF  # dim, params
from diet.dims.choice import dim_parts
from diet.eval.documents import DocumentSelection
from diet.errors import DietConfigError
from diet.export.save import export_options
from diet.paths import data_dir as resolve_data_dir
from diet.registry import unknown_name_message

WANDB_MODES = ("offline", "online", "disabled")


def _number_in(name: str, value: Any, low: float, high: float, low_open: bool, high_open: bool) -> float:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DietConfigError(f"{name}={value!r} is not a number: allowed {interval}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise DietConfigError(f"{name}={value!r} is outside the allowed range {interval}")
    return float(value)


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "an integer >= 1" + (" or null" if allow_none else "")
        raise DietConfigError(f"{name}={value!r} is not allowed: use {allowed}")


def _flag(name: str, value: Any) -> None:
    # 'no' or 0 from the command line would otherwise be truthy/falsy by accident
    if not isinstance(value, bool):
        raise DietConfigError(f"{name}={value!r} is not allowed: use true or false")


def _choice(name: str, value: Any, allowed: list[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise DietConfigError(unknown_name_message(name, value, list(allowed)))


def document_selection(cfg: Mapping[str, Any]) -> DocumentSelection:
    """The evaluated documents (eval.limit / eval.docs / eval.docs_seed); validates the two options.

    A config without eval.docs (records written before random samples existed) meant the first N."""
    eval_cfg = cfg["eval"]
    return DocumentSelection(eval_cfg.get("limit"), eval_cfg.get("docs", "first"), eval_cfg.get("docs_seed", 0))


def calib_tasks(cfg: Mapping[str, Any], tasks: list[str]) -> list[str]:
    """The tasks profiled for calibration: `calib.tasks` (default: the evaluated tasks) minus
    `calib.exclude`, in their listed order."""
    from diet.eval.tasks import accuracy_tasks, is_perplexity, resolve_task_names

    calib = cfg["calib"]
    task_sets = cfg.get("task_sets") or {}
    if calib.get("tasks") is None:
        chosen = accuracy_tasks(tasks)  # a perplexity task is evaluated, never calibrated on
        if not chosen:
            raise DietConfigError(f"tasks={tasks} are all perplexity tasks: name the tasks to profile with "
                                  f"calib.tasks (e.g. calib.tasks=paper7)")
    else:
        chosen = resolve_task_names(calib["tasks"], task_sets)
        leaked = [task for task in chosen if is_perplexity(task)]
        if leaked:
            raise DietConfigError(f"calib.tasks={list(chosen)} includes the perplexity task(s) {leaked}: calibrating "
                                  f"on the text whose perplexity is reported is not allowed")
    exclude = calib.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [exclude]
    excluded = resolve_task_names(list(exclude), task_sets) if exclude else []
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


# sections whose keys are exactly those of conf/config.yaml (the model section differs per model file)
FIXED_SECTIONS = ("data", "calib", "profile", "mask", "vote", "eval", "wandb", "export")


def check_known_keys(cfg: Mapping[str, Any]) -> None:
    """A key conf/config.yaml does not define (a `+calib.window=8` typo) would enter the identity and make a
    cell of its own that nothing reads: refuse it, naming the section's options."""
    from diet.config.defaults import run_defaults

    defaults = run_defaults()
    for section in FIXED_SECTIONS:
        unknown = sorted(set(cfg.get(section) or {}) - set(defaults[section]))
        if unknown:
            allowed = ", ".join(f"{section}.{key}" for key in defaults[section])
            raise DietConfigError(f"{section}.{unknown[0]} is not an option: allowed {allowed}")


def validate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check every option; returns facts derived on the way (task list, profiled tasks, data dir)."""
    from diet.eval.evaluate import BACKENDS
    from diet.select.masks import MERGES, SCOPES
    from diet.methods import METHODS
    from diet.models.loaders import SOURCES
    from diet.calib.profiler import STATS
    from diet.eval.tasks import check_data_files, headline_metric, resolve_task_names

    check_known_keys(cfg)
    method = METHODS.get(cfg["method"]["name"])
    SOURCES.get(cfg["model"]["source"])
    tasks = resolve_task_names(cfg["tasks"], cfg.get("task_sets") or {})
    for task in tasks:
        headline_metric(task, cfg["eval"]["metric"])
    _positive_int("eval.limit", cfg["eval"]["limit"], allow_none=True)
    document_selection(cfg)
    _positive_int("eval.batch_size", cfg["eval"]["batch_size"])
    _choice("eval.backend", cfg["eval"]["backend"], BACKENDS.names())
    _positive_int("eval.max_length", cfg["eval"].get("max_length"), allow_none=True)
    _flag("model.add_bos_token", cfg["model"]["add_bos_token"])
    _flag("profile.exclude_bos", (cfg.get("profile") or {}).get("exclude_bos", False))
    _choice("wandb.mode", cfg["wandb"]["mode"], WANDB_MODES)
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise DietConfigError(f"seed={cfg['seed']!r} is not allowed: use an integer")
    if method.prunes:
        _number_in("sparsity", cfg["sparsity"], 0.0, 1.0, low_open=False, high_open=True)
        _number_in("vote.threshold", cfg["vote"]["threshold"], 0.0, 1.0, low_open=True, high_open=False)
        _number_in("mask.min_keep_fraction", cfg["mask"]["min_keep_fraction"], 0.0, 1.0, False, False)
        _positive_int("calib.n", cfg["calib"]["n"])
        _positive_int("calib.batch_size", cfg["calib"]["batch_size"])
        _positive_int("calib.max_length", cfg["calib"]["max_length"])
        _flag("calib.with_answer", cfg["calib"]["with_answer"])
        _flag("vote.exact", cfg["vote"]["exact"])
        _choice("profile.stat", cfg["profile"]["stat"], STATS.names())
        _choice("mask.scope", cfg["mask"]["scope"], SCOPES.names())
        _choice("merge rule", cfg["merge"], MERGES.names())
        dim_parts(cfg["dims"])  # registered dimensions (diet.dims), each once, in pruning order
        if cfg["dims"] not in method.dims:
            raise DietConfigError(
                f"method {method.name!r} does not support dims={cfg['dims']!r}: it supports "
                f"{', '.join(method.dims)}"
            )
        _choice("sparsity_of", cfg.get("sparsity_of", "dim"), SPARSITY_OF)
        _positive_int("calib.windows", cfg["calib"].get("windows"), allow_none=True)
        _positive_int("calib.window_length", cfg["calib"].get("window_length"), allow_none=True)
        if method.calib_source:
            from diet.methods.calibrated import source_file
            from diet.eval.tasks import is_perplexity

            path = source_file(cfg)
            if path is not None and "wikitext" in path.name.lower() and any(is_perplexity(t) for t in tasks):
                raise DietConfigError(f"calib.source={cfg['calib']['source']!r} is WikiText and its perplexity is "
                                      f"evaluated: calibrating on the reported text is not allowed (use c4)")
    method.check(dict(cfg["method"]))
    save_model = cfg.get("save_model")
    if not (save_model is None or isinstance(save_model, (bool, str))):
        raise DietConfigError(f"save_model={save_model!r} is not allowed: use null, true (saved_models/<record "
                              f"name>) or a folder path")
    export_options(cfg)
    if save_model not in (None, False) and method.per_task_profiles:
        raise DietConfigError(f"method {method.name!r} evaluates one pruned model per task: save_model needs a "
                              f"method that makes one model")
    profiled = calib_tasks(cfg, tasks) if "calib" in method.uses else []
    if method.per_task_profiles and profiled != tasks:
        raise DietConfigError(
            f"method {method.name!r} evaluates each task with its own profile, so calib.tasks/calib.exclude "
            f"must leave the profiled tasks equal to the evaluated ones ({tasks}), got {profiled}"
        )
    data_dir = resolve_data_dir(cfg["data"]["dir"])
    check_data_files(tasks, data_dir)
    check_data_files(profiled, data_dir, need_train=True)
    return {"tasks": tasks, "data_dir": data_dir, "method": method, "calib_tasks": profiled}
