"""lm-eval's task catalogue: any task, group or tag it knows, and the user's own task YAMLs (`eval.include_path`).

A name is turned into its leaf tasks' configs exactly as lm-eval's TaskManager would build them (a group's
task-level keys and a member's inline overrides applied, tags expanded), but without building the tasks: a
ConfigurableTask loads its data when constructed, and offline the data source must be replaced first
(diet.eval.tasks.task_config). The paper's tasks are read from their official YAML directly, without the
catalogue's index (about 15 s to build); any other name builds the index once per process and include path.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any, Sequence

from diet.errors import DietConfigError

# what the factory keeps out of a task's config (lm_eval.tasks._factory.TaskFactory._build_task)
STRUCTURAL_KEYS = ("tag", "group", "task_list")


def official_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@functools.lru_cache(maxsize=None)
def load_task_yaml(path: str) -> dict[str, Any]:
    """One task YAML, includes followed and `!function`s resolved, as lm-eval loads it."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=True)


@functools.lru_cache(maxsize=4)
def task_manager(include_paths: tuple[str, ...], include_defaults: bool = True) -> Any:
    """lm-eval's TaskManager over its own tasks (`include_defaults`) and the user's folders (built once)."""
    from lm_eval.tasks import TaskManager

    # include_paths come from config.sections.include_paths, which has checked they are folders
    return TaskManager(include_path=list(include_paths) or None, include_defaults=include_defaults)


def user_names(include_paths: tuple[str, ...]) -> set[str]:
    """Every task, group and tag name the user's folders define (their own index only: fast)."""
    return set(task_manager(include_paths, include_defaults=False).all_tasks) if include_paths else set()


def nearest_names(name: str, include_paths: tuple[str, ...], extra: Sequence[str] = ()) -> list[str]:
    known = [*task_manager(include_paths).all_tasks, *extra]
    return difflib.get_close_matches(name, known, n=5, cutoff=0.6)


def leaf_configs(name: str, include_paths: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """leaf task name -> its full config, for a task, group or tag name of lm-eval's catalogue or the user's
    folders (a KeyError when neither knows it)."""
    from lm_eval.tasks._index import Kind

    manager = task_manager(include_paths)
    index = manager.task_index
    if name not in index:
        raise KeyError(name)
    leaves: dict[str, dict[str, Any]] = {}
    _collect(index[name], None, index, manager._factory, leaves, Kind)
    return leaves


def _task_config(entry: Any, overrides: dict[str, Any] | None, factory: Any) -> dict[str, Any]:
    cfg = factory._load_full_config(entry, overrides)
    for key in STRUCTURAL_KEYS:
        cfg.pop(key, None)
    if "class" in cfg:
        raise DietConfigError(f"task {cfg['task']!r} is a Python-defined lm-eval task ({cfg['class']}): only YAML "
                              f"tasks (ConfigurableTask) are supported; define it as a task YAML under "
                              f"eval.include_path")
    return cfg


def _collect(entry: Any, overrides: dict[str, Any] | None, index: dict[str, Any], factory: Any,
             leaves: dict[str, dict[str, Any]], kind: Any) -> None:
    """TaskFactory.build and _build_group_members, keeping configs instead of building tasks."""
    from lm_eval.tasks._factory import GROUP_FIELD_NAMES

    if entry.kind == kind.TAG:
        for member in sorted(entry.tags):
            if member in index:
                leaves[member] = _task_config(index[member], {"task": member, **(overrides or {})}, factory)
        return
    if entry.kind != kind.GROUP:
        leaves[entry.name] = _task_config(entry, overrides, factory)
        return
    raw = factory._load_full_config(entry, None)
    merged = {**{k: v for k, v in raw.items() if k not in GROUP_FIELD_NAMES}, **(overrides or {})}
    for item in raw.get("task") or []:
        if isinstance(item, str):
            base, item_overrides = item, merged
        elif isinstance(item, dict) and "group" in item and item["group"] in index:
            _collect(index[item["group"]], {**merged, **{k: v for k, v in item.items() if k != "group"}}, index,
                     factory, leaves, kind)
            continue
        elif isinstance(item, dict) and "task" in item:
            base, item_overrides = item["task"], {**merged, **item}
        else:
            raise DietConfigError(f"group {entry.name!r} defines an inline group or task ({item!r}): name "
                                  f"registered tasks in its task list, or list the tasks themselves")
        if base not in index:
            raise DietConfigError(f"group {entry.name!r} lists {base!r}, which is not a registered task")
        child = index[base]
        if child.kind in (kind.GROUP, kind.TAG):
            _collect(child, item_overrides, index, factory, leaves, kind)
        else:
            leaves[base] = _task_config(child, {"task": base, **item_overrides}, factory)
