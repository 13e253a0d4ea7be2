"""A cell's identity: the options its result depends on (`effective_config`), hashed (`config_hash`).

Reruns of one identity are skipped as done, so an option that changes a result but is missing from the
identity would silently give two different runs one record. Two guarantees close that:

- **What a method reads is identified.** A method sees the config only through a `ConfigView`, which
  records every option path it reads; after selection `check_reads` refuses (before anything is pruned
  or evaluated) a read that the identity does not encode. tests/test_identity.py drives every registered
  method through selection on a tiny model.
- **Method options are hashed whole.** Every option of conf/method/<name>.yaml enters as written.

Options added after cells were recorded enter only when they differ from their default, so those cells
keep their hash: `ONLY_WHEN_SET`. The other encodings (documents, profiled tasks, generic calibration
text by content) are written once here, in `effective_config`, and named in `ENCODED`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

from diet.config.validate import calib_tasks, document_selection
from diet.devices import resolved_precision
from diet.errors import DietConfigError
from diet.eval.documents import identity as documents_identity
from diet.io import stable_hash
from diet.methods import METHODS
from diet.calib.sources import source_file, source_identity

# Config sections every run depends on; a method adds the ones its result depends on (Method.uses).
BASE_SECTIONS = ("model", "tasks", "eval", "seed", "data_mode")

# option path -> (default, identity key, the Method.uses section it belongs to): enters the identity (under
# that key) only when not the default, and only for methods that use the section
ONLY_WHEN_SET: dict[str, tuple[Any, str, str]] = {
    "sparsity_of": ("dim", "sparsity_of", "sparsity"),
    "profile.exclude_bos": (False, "profile_exclude_bos", "calib"),
}

# Options a method may read that change how a result is computed, not what it is (float summation order
# at most): never part of an identity. calib.batch_size is hashed with task samples (it was before generic
# text existed) but not with generic windows, which are all one length (no padding).
COMPUTATION_ONLY = frozenset({"calib.batch_size", "model.device", "threads"})


def _calibrated(effective: Mapping[str, Any], method: Any) -> bool:
    return "calib" in effective


def _generic_text(effective: Mapping[str, Any], method: Any) -> bool:
    return isinstance((effective.get("calib") or {}).get("source"), Mapping)


# option path -> when the identity encodes it in another form than its own value
ENCODED: dict[str, Callable[[Mapping[str, Any], Any], bool]] = {
    "seed": lambda effective, method: bool(method.seeded),  # unseeded methods are recorded at seed 0
    "calib.tasks": _calibrated,          # as calib_tasks, when the profiled tasks are not the evaluated ones
    "calib.exclude": _calibrated,
    "task_sets": lambda effective, method: True,  # names resolved into `tasks` / calib_tasks
    "calib.source": lambda effective, method: "source" in (effective.get("calib") or {}),  # "tasks" | the file
    "calib.windows": _generic_text,      # in calib.source's identity
    "calib.window_length": _generic_text,
    "data.dir": lambda effective, method: True,  # data_mode, and a calibration file by its content
    # ONLY_WHEN_SET: encoded whenever the section it belongs to is part of the identity
    **{path: (lambda effective, method, section=section: section in effective)
       for path, (_, _, section) in ONLY_WHEN_SET.items()},
}


def _only_when_set(cfg: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in path.split("."):
        node = (node or {}).get(part) if isinstance(node, Mapping) else None
    default = ONLY_WHEN_SET[path][0]
    value = default if node is None else node
    return value != default, value


def effective_config(cfg: Mapping[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The options the result depends on: what the config hash identifies.

    Output locations, W&B settings and options a method ignores are left out, so that e.g.
    `method=dense` at every sparsity of a sweep is one cell, and the data folder's path on one
    machine does not matter (only online vs offline does).
    """
    method = METHODS.get(cfg["method"]["name"])
    # dtype as it resolves on this machine (auto: bfloat16 on a GPU, float32 on the CPU): two precisions are two
    # cells. The device stays out (same dtype, different kernels: float rounding only, like the batch size).
    model = {k: v for k, v in cfg["model"].items() if k not in ("device",)}
    model["dtype"] = resolved_precision(cfg["model"])[1]
    # batch size, backend, by_task and chunk_docs change how requests are computed, not the results (the fast
    # backend equals stock lm-eval per request: tests/test_fast_eval.py; by_task and chunk_docs only batch a
    # task's requests apart: tests/test_task_results.py, tests/test_chunks.py), so they are not part of a
    # cell's identity;
    # the documents enter only as a random sample (first-N and full-split cells keep their old hash)
    eval_cfg = {k: v for k, v in cfg["eval"].items()
                if k not in ("batch_size", "backend", "by_task", "chunk_docs", "docs", "docs_seed")}
    docs = documents_identity(document_selection(cfg))
    if docs is not None:
        eval_cfg["docs"] = docs
    values: dict[str, Any] = {
        "model": model,
        "tasks": tasks,
        "eval": eval_cfg,
        "seed": cfg["seed"] if method.seeded else 0,  # seed sweeps of dense collapse onto one cell
        "data_mode": "online" if cfg["data"]["dir"] is None else "offline",
        "method": dict(cfg["method"]),
    }
    for section in method.uses:
        values[section] = cfg[section]
    if "profile" in values:  # exclude_bos enters as profile_exclude_bos (ONLY_WHEN_SET)
        values["profile"] = {k: v for k, v in values["profile"].items() if k != "exclude_bos"}
    for path, (_, key, section) in ONLY_WHEN_SET.items():
        is_set, value = _only_when_set(cfg, path)
        if section in method.uses and is_set:
            values[key] = value
    if method.version != 1:
        values["method_version"] = method.version
    if "calib" in method.uses:
        generic = method.calib_source and source_file(cfg) is not None
        if generic:
            # generic text: the file by its content (not its path) and the windows drawn from it; the
            # task-sample options (n, with_answer, max_length, tasks) do not feed this cell
            values["calib"] = {"source": source_identity(cfg, method.reference_calib)}
        else:
            # calib.source counts only for the methods it feeds; windows only for generic text
            calib = {k: v for k, v in cfg["calib"].items()
                     if k not in ("source", "tasks", "exclude", "windows", "window_length")}
            if method.calib_source:
                calib["source"] = "tasks"
            values["calib"] = calib
            # the profiled tasks enter the identity only when they are not the evaluated ones, so that
            # existing cells keep their hash and calib.tasks=<the same tasks> is the same cell
            profiled = calib_tasks(cfg, tasks)
            if profiled != tasks:
                values["calib_tasks"] = profiled
    assert set(BASE_SECTIONS) <= set(values)
    return values


def config_hash(effective: Mapping[str, Any]) -> str:
    return stable_hash(effective, length=16)


# ------------------------------------------------------------------------------------ what a method reads


class ConfigView(Mapping):
    """A read-only view of the run config that records the path of every option read through it
    (`reads`, shared by the nested views). Sections come back as views; other values as they are."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "", reads: set[str] | None = None) -> None:
        self._data, self._prefix = data, prefix
        self.reads: set[str] = set() if reads is None else reads

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        path = f"{self._prefix}{key}"
        if isinstance(value, Mapping):
            return ConfigView(value, f"{path}.", self.reads)
        self.reads.add(path)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _present(effective: Mapping[str, Any], path: str) -> bool:
    node: Any = effective
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return True  # a whole value above the path is hashed (e.g. a list)
        if part not in node:
            return False
        node = node[part]
    return True


def unidentified(reads: set[str], effective: Mapping[str, Any], method: Any) -> list[str]:
    """The option paths read that the identity `effective` does not encode (sorted)."""
    missing = []
    for path in sorted(reads):
        if path in COMPUTATION_ONLY:
            continue
        rule = ENCODED.get(path)
        if not (rule(effective, method) if rule is not None else _present(effective, path)):
            missing.append(path)
    return missing


def check_reads(reads: set[str], effective: Mapping[str, Any], method: Any) -> None:
    """Refuse a method that read options its identity leaves out (its `uses` is missing a section)."""
    missing = unidentified(reads, effective, method)
    if missing:
        raise DietConfigError(
            f"method {method.name!r} read {missing}, which its identity (config hash) does not contain: two runs "
            f"that differ only there would share one record. Add the section(s) to {type(method).__name__}.uses "
            f"(or, if the option cannot change the result, to diet.config.identity.COMPUTATION_ONLY)")
