"""The run config's fixed sections as typed options classes: every key a field, every value checked by the
field's type or its own check (`metadata["check"]`, diet/checks.py), so a section is valid exactly when
it binds. conf/config.yaml writes the same defaults with their comments; tests/test_config.py holds the two
equal, so the classes cannot drift from the file users read.

A stored record's config may predate an option: the missing key takes the class default, except where the
option's absence meant something else when the record was written (`LEGACY_DEFAULTS`).

The typed sections are what validation binds and what the pipeline reads; a method receives typed inputs built
from them (diet.methods.inputs), which the identity (diet/config/identity.py) hashes whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from diet.bind import bind, check_names
from diet.checks import FLAG, one_of, positive
from diet.errors import DietConfigError
from diet.eval.documents import DocumentSelection
from diet.eval.evaluate import BACKENDS
from diet.export.save import ExportOptions

WANDB_MODES = ("offline", "online", "disabled")


def _backends() -> list[str]:
    return BACKENDS.names()


@dataclass(frozen=True)
class DataOptions:
    dir: str | None = None  # conf/config.yaml: ${oc.env:DIET_DATA_DIR,null}


@dataclass(frozen=True)
class CalibOptions:
    n: int = field(default=100, metadata=positive())
    tasks: str | list | None = None
    exclude: list | str = field(default_factory=list)
    with_answer: bool = field(default=True, metadata=FLAG)
    max_length: int = field(default=512, metadata=positive())
    batch_size: int = field(default=8, metadata=positive())
    source: str = "tasks"
    windows: int | None = field(default=None, metadata=positive(allow_none=True))
    window_length: int | None = field(default=None, metadata=positive(allow_none=True))
    exclude_bos: bool = field(default=False, metadata=FLAG)


def include_paths(value: Any) -> tuple[str, ...]:
    """`eval.include_path` (null, a folder or a list of folders) -> absolute folder paths; a missing one fails."""
    if value is None:
        return ()
    listed = [value] if isinstance(value, str) else list(value) if isinstance(value, Iterable) else value
    if not isinstance(listed, list) or not listed or not all(isinstance(path, str) for path in listed):
        raise DietConfigError(f"eval.include_path={value!r} is not allowed: use a folder of task YAMLs or a list")
    paths = tuple(str(Path(path).expanduser().resolve()) for path in listed)
    for given, path in zip(listed, paths):
        if not Path(path).is_dir():
            raise DietConfigError(f"eval.include_path={given!r} is not a folder ({path}): give folders of task "
                                  f"YAMLs")
    return paths


@dataclass(frozen=True)
class EvalOptions:
    limit: int | None = field(default=None, metadata=positive(allow_none=True))
    docs: str = "random"
    docs_seed: int = 0
    batch_size: int = field(default=8, metadata=positive())
    backend: str = field(default="fast", metadata=one_of(_backends))
    metric: str = "auto"                  # checked per task against what the task reports (validate)
    max_length: int | None = field(default=None, metadata=positive(allow_none=True))
    by_task: bool = field(default=False, metadata=FLAG)
    # documents per kept chunk inside a task (diet/eval/chunks.py); needs by_task, which keeps them
    chunk_docs: int | None = field(default=None, metadata=positive(allow_none=True))
    # folders of the user's own task YAMLs (lm-eval's TaskManager(include_path=...)): one path or a list
    include_path: str | list | None = field(default=None, metadata={"check": lambda _, value: include_paths(value)})

    def __post_init__(self) -> None:
        self.documents()  # eval.docs / eval.docs_seed
        include_paths(self.include_path)
        if self.chunk_docs is not None and not self.by_task:
            raise DietConfigError(f"eval.chunk_docs={self.chunk_docs} keeps chunks of a task's documents as they "
                                  "finish, which only eval.by_task=true does: set eval.by_task=true or drop it")

    def documents(self) -> Any:
        return DocumentSelection(self.limit, self.docs, self.docs_seed)


@dataclass(frozen=True)
class WandbOptions:
    mode: str = field(default="offline", metadata=one_of(lambda: WANDB_MODES))
    project: str = "diet"
    entity: str | None = None
    group: str | None = None
    dir: str = ".cache/wandb"  # conf/config.yaml: ${oc.env:DIET_WANDB_DIR,.cache/wandb}


SECTIONS: dict[str, type] = {"data": DataOptions, "calib": CalibOptions, "eval": EvalOptions,
                             "wandb": WandbOptions, "export": ExportOptions}
# read only by pruning methods: for the others (dense) only the names are checked, so that a dense row of a
# sparsity sweep is valid whatever the sweep sets
PRUNING_SECTIONS = ("calib",)
# section -> {option: what its absence meant}, for stored configs written before the option existed
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "eval": {"docs": "first"},  # before random samples, a limit took the first N documents
}


def section(cfg: Mapping[str, Any], name: str) -> Any:
    """The typed `name` section of a run config (or of a stored record's config)."""
    return bind(SECTIONS[name], {**LEGACY_DEFAULTS.get(name, {}), **(cfg.get(name) or {})}, name)


def eval_options(cfg: Mapping[str, Any]) -> EvalOptions:
    return section(cfg, "eval")


@dataclass(frozen=True)
class RunOptions:
    """Every fixed section of one run's config, bound; the calibration section is None for a method that
    prunes nothing (its names are checked, its values never read). A method's own protocol (DIET's mask,
    merge and vote) is its section's, bound with its inputs (diet.methods.inputs.METHOD_SECTION)."""

    data: DataOptions
    eval: EvalOptions
    wandb: WandbOptions
    export: ExportOptions
    calib: CalibOptions | None


def run_options(cfg: Mapping[str, Any], prunes: bool = True) -> RunOptions:
    """Bind every fixed section of `cfg` (`prunes`: whether the run's method reads the pruning sections)."""
    bound = {}
    for name, options_type in SECTIONS.items():
        if prunes or name not in PRUNING_SECTIONS:
            bound[name] = section(cfg, name)
        else:
            check_names(options_type, cfg.get(name) or {}, name)
            bound[name] = None
    return RunOptions(**bound)
