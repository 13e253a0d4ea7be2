"""The zero-shot tasks: any task of lm-eval 0.4.13's catalogue or of the user's own YAMLs, data made local offline.

A task's facts (evaluated split, training split, output type, metrics) are read from its lm-eval config; only the
paper's tasks keep two hand-kept values lm-eval has none of: where their YAML is (so they need no catalogue index)
and their chance level (so tables need no data). Any other task's chance is measured on its evaluated split when
it is scored (diet.eval.evaluate) and stored in the record.

Offline mode (a data folder is configured): `<dir>/eval/<task>_<split>.jsonl` is scored and
`<dir>/train/<task>_train.jsonl` feeds calibration, unless the task's own YAML reads local files
(`dataset_path: json` with `dataset_kwargs.data_files`), which are then used as they are. Online mode: lm-eval's
config is used unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from diet.errors import DietConfigError
from diet.eval.catalogue import STRUCTURAL_KEYS, leaf_configs, load_task_yaml, nearest_names, official_root, user_names
from diet.eval.metric_kinds import ACCURACY, metric_kind
from diet.io import content_sha256
from diet.registry import Registry, unknown_name_message


@dataclass(frozen=True)
class PaperTask:
    """What lm-eval has none of for a paper task: its YAML's place (relative to lm_eval/tasks/) and its chance
    level, the score of a model with no skill on the evaluated split as `chance_level` computes it from the task
    (tests/test_tasks.py recomputes it from ../shared/data); None for a perplexity."""

    name: str
    yaml: str
    chance: float | None = None


PAPER_TASKS: Registry[PaperTask] = Registry("task")
for _paper in (
    PaperTask("boolq", "super_glue/boolq/default.yaml", chance=0.622),
    PaperTask("rte", "glue/rte/default.yaml", chance=0.527),
    PaperTask("sglue_rte", "super_glue/rte/default.yaml", chance=0.527),
    PaperTask("hellaswag", "hellaswag/hellaswag.yaml", chance=0.25),
    PaperTask("winogrande", "winogrande/default.yaml", chance=0.5),
    PaperTask("arc_easy", "arc/arc_easy.yaml", chance=0.25),
    PaperTask("arc_challenge", "arc/arc_challenge.yaml", chance=0.25),
    PaperTask("openbookqa", "openbookqa/openbookqa.yaml", chance=0.25),
    # WikiText-2 test documents, rolling loglikelihood: word/byte perplexity and bits per byte
    PaperTask("wikitext", "wikitext/wikitext.yaml"),
):
    PAPER_TASKS.register(_paper.name)(_paper)

# lm-eval's metrics of an output type whose config lists none (lm_eval.api.registry.DEFAULT_METRIC_REGISTRY)
DEFAULT_METRICS = {"loglikelihood": ("perplexity", "acc"), "loglikelihood_rolling": ("word_perplexity",
                   "byte_perplexity", "bits_per_byte"), "multiple_choice": ("acc", "acc_norm"),
                   "generate_until": ("exact_match",)}
# the file formats of `datasets` that read local files: a task YAML using one reads its own data offline
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")


@dataclass(frozen=True)
class TaskSpec:
    """A task's facts, read from its lm-eval config (`config`: the leaf's full config, functions resolved)."""

    name: str
    output_type: str
    eval_split: str         # the split lm-eval scores: test when the task has one, else validation
    training_split: str | None
    metrics: tuple[str, ...]
    chance: float | None    # hand-kept for a paper task; otherwise measured when scored (None here)
    paper: bool
    config: dict[str, Any] = field(compare=False, repr=False)

    @property
    def perplexity(self) -> bool:
        """A perplexity task: lower is better, never averaged with accuracies, never calibrated on."""
        return self.output_type == "loglikelihood_rolling"

    @property
    def local_files(self) -> dict[str, list[str]]:
        """split -> the local files the task's own YAML reads ({} when it reads a hub dataset)."""
        if self.config.get("dataset_path") not in LOCAL_BUILDERS:
            return {}
        files = (self.config.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(files, (str, list)):
            files = {"train": files}
        return {split: [paths] if isinstance(paths, str) else list(paths) for split, paths in (files or {}).items()}

    def higher_is_better(self, metric: str) -> bool | None:
        """As lm-eval reads it: the task's metric_list entry, else lm-eval's metric registry (None: unknown)."""
        for entry in self.config.get("metric_list") or []:
            if entry.get("metric") == metric and "higher_is_better" in entry:
                return bool(entry["higher_is_better"])
        from lm_eval.api.registry import is_higher_better

        known = is_higher_better(metric)
        return None if known is None else bool(known)

    def default_metric(self) -> str:
        """Headline metric (`eval.metric=auto`): acc_norm where a multiple-choice task reports it, else acc;
        exact_match for a generation task that reports it; otherwise the task's first metric (a perplexity task:
        word perplexity)."""
        for preferred in {"multiple_choice": ("acc_norm", "acc"), "generate_until": ("exact_match",),
                          "loglikelihood": ("acc",)}.get(self.output_type, ()):
            if preferred in self.metrics:
                return preferred
        return self.metrics[0]


def spec_from_config(name: str, config: Mapping[str, Any], chance: float | None = None,
                     paper: bool = False) -> TaskSpec:
    output_type = config.get("output_type", "generate_until")
    if output_type not in DEFAULT_METRICS:
        raise DietConfigError(f"task {name!r} has output_type {output_type!r}: supported are "
                              f"{', '.join(DEFAULT_METRICS)}")
    split = config.get("test_split") or config.get("validation_split")
    if not split:
        raise DietConfigError(f"task {name!r} has neither a test_split nor a validation_split to evaluate")
    listed = tuple(str(m["metric"]) for m in config.get("metric_list") or [] if isinstance(m.get("metric"), str))
    return TaskSpec(name=name, output_type=output_type, eval_split=str(split),
                    training_split=config.get("training_split"), metrics=listed or DEFAULT_METRICS[output_type],
                    chance=chance, paper=paper, config=dict(config))


# every task resolved in this process (paper tasks on first use; others when a config names them)
_SPECS: dict[str, TaskSpec] = {}


def task_spec(name: str) -> TaskSpec:
    """The facts of a task resolved by resolve_task_names (a paper task: always)."""
    if name not in _SPECS:
        if name not in PAPER_TASKS:
            raise DietConfigError(unknown_name_message("task", name, PAPER_TASKS.names() + sorted(_SPECS)))
        paper = PAPER_TASKS.get(name)
        _SPECS[name] = spec_from_config(name, load_task_yaml(str(official_root() / paper.yaml)), paper.chance, True)
    return _SPECS[name]


METRIC_CHOICES = ("auto", "acc", "acc_norm")


def _without_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without what does not change the task: lm-eval's metadata (its file's path) and the keys the
    factory drops before building a task (tags, groups)."""
    return {key: value for key, value in config.items() if key != "metadata" and key not in STRUCTURAL_KEYS}


def _resolve_name(name: str, include_paths: tuple[str, ...], task_sets: Sequence[str] = ()) -> list[str]:
    """One task, group or tag name -> its leaf tasks, each resolved into _SPECS."""
    user = user_names(include_paths)
    if name in PAPER_TASKS and name in user:
        raise DietConfigError(f"eval.include_path defines {name!r}, a paper task: give your task another name (the "
                              f"paper tasks keep lm-eval's official definition and their committed results)")
    if name in PAPER_TASKS:
        task_spec(name)
        return [name]
    try:
        leaves = leaf_configs(name, include_paths)
    except KeyError:
        close = nearest_names(name, include_paths, extra=task_sets)
        raise DietConfigError(f"unknown task {name!r}: lm-eval knows no task, group or tag of that name"
                              + (f" in its catalogue or eval.include_path={list(include_paths)}" if include_paths
                                 else "") + (f"; nearest: {', '.join(close)}" if close else "")
                              + (f" (task sets: {', '.join(task_sets)})" if task_sets else "")) from None
    for leaf, config in leaves.items():
        if leaf in PAPER_TASKS:
            if _without_metadata(config) != _without_metadata(task_spec(leaf).config):
                raise DietConfigError(f"{name!r} changes the paper task {leaf!r} (a group override): name the task "
                                      f"itself, or define the variant under another name")
            continue
        _SPECS[leaf] = spec_from_config(leaf, config)
    return list(leaves)


def resolve_task_names(tasks: str | Sequence[str], task_sets: Mapping[str, Sequence[str]],
                       include_paths: Sequence[str] = ()) -> list[str]:
    """`paper7` (a task set), `boolq` (one task), `[boolq, piqa]`, an lm-eval group or tag (`ai2_arc`), or a task
    of the user's YAMLs (`include_paths`: eval.include_path) -> validated list of leaf task names."""
    paths = tuple(str(path) for path in include_paths)
    if isinstance(tasks, str):
        if tasks in task_sets:
            requested = list(task_sets[tasks])
        else:
            requested = [tasks]
    else:
        requested = [str(name) for name in tasks]
    if not requested:
        raise DietConfigError("tasks is empty: name a task set (e.g. paper7) or a list of tasks")
    names = [leaf for name in requested for leaf in _resolve_name(name, paths, sorted(task_sets))]
    if len(set(names)) != len(names):
        raise DietConfigError(f"tasks lists a task twice: {names}")
    return names


def definition_digest(task: str, data_dir: Path | None) -> str:
    """A non-paper task's definition by content: its config (functions by name and source file content, lm-eval's
    metadata left out) and the local files it reads. Two cells of one task name but another YAML or other data
    differ here."""
    spec = task_spec(task)

    def canonical(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): canonical(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        if callable(value):
            source = inspect.getsourcefile(value) if not isinstance(value, type) else None
            return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}" + \
                (f":{content_sha256(source)}" if source and Path(source).is_file() else "")
        return value

    config = _without_metadata(spec.config)
    if spec.local_files:  # its files by content under their split, not by where they are
        data = {split: [content_sha256(path) for path in paths] for split, paths in spec.local_files.items()}
        config["dataset_kwargs"] = {key: value for key, value in (config.get("dataset_kwargs") or {}).items()
                                    if key != "data_files"}
    else:
        data = {kind: content_sha256(path) for kind, path in data_files(task, data_dir).items()
                if path.is_file()} if data_dir is not None else {}
    content = {"config": canonical(config), "data": data}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_perplexity(task: str) -> bool:
    return task_spec(task).perplexity


def accuracy_tasks(tasks: Iterable[str]) -> list[str]:
    """The tasks scored per document (calibrated on); perplexity tasks left out."""
    return [task for task in tasks if not is_perplexity(task)]


def averaged_tasks(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The tasks of a record's metrics that an average covers: those whose headline metric is an accuracy
    (acc, acc_norm, exact_match: a fraction of documents right), never a perplexity or another scale."""
    return [task for task, entry in metrics.items() if metric_kind(entry["metric"]) == ACCURACY]


def chance_levels() -> dict[str, float]:
    """task -> its chance level, for the paper tasks (hand-kept; other tasks' records carry their own)."""
    return {name: PAPER_TASKS.get(name).chance for name in PAPER_TASKS.names()
            if PAPER_TASKS.get(name).chance is not None}


def chance_level(task: Any) -> float:
    """What a model with no skill scores on a built task's evaluated documents (rounded to 3 decimals).

    A task whose answer options are one fixed label set for every document (BoolQ's no/yes, RTE's
    True/False) is a classification: always answering its most frequent label scores that label's rate
    (62.2% "yes" on BoolQ), so that rate is chance. A multiple-choice task whose options differ per
    document (HellaSwag endings, ARC answers, Winogrande fillings) has no label to favour: uniform guessing,
    the mean of 1 / options."""
    from collections import Counter

    docs = list(task.eval_docs)
    choices = [task.doc_to_choice(doc) for doc in docs]
    if all(options == choices[0] for options in choices):
        return round(max(Counter(task.doc_to_target(doc) for doc in docs).values()) / len(docs), 3)
    return round(sum(1 / len(options) for options in choices) / len(docs), 3)


def headline_metric(task: str, metric: str) -> str:
    """The metric a task is reported by: `eval.metric` chooses between the accuracies of a multiple-choice task
    (auto: TaskSpec.default_metric); any other task reports its default."""
    if metric not in METRIC_CHOICES:
        raise DietConfigError(f"eval.metric={metric!r} is not allowed: use one of {', '.join(METRIC_CHOICES)}")
    spec = task_spec(task)
    if metric == "auto" or spec.output_type != "multiple_choice":
        return spec.default_metric()
    if metric not in spec.metrics:
        return "acc"  # acc_norm requested for a task that only reports acc
    return metric


def data_files(task: str, data_dir: Path) -> dict[str, Path]:
    """The data folder's files for a task: {'eval': ..., 'train': ... (may be absent on disk)}."""
    spec = task_spec(task)
    return {
        "eval": data_dir / "eval" / f"{task}_{spec.eval_split}.jsonl",
        "train": data_dir / "train" / f"{task}_train.jsonl",
    }


def _no_training_split(task: str, where: str) -> DietConfigError:
    return DietConfigError(
        f"task {task!r} has no training split to draw calibration samples from ({where}): give it one, or "
        f"calibrate on other tasks (calib.tasks=[...] or calib.exclude=[{task}]); its evaluated documents are "
        f"never used for calibration")


def check_data_files(tasks: Iterable[str], data_dir: Path | None, need_train: bool = False) -> None:
    """Fail fast, before any model is loaded, on a missing local data file or training split (`need_train`: the
    tasks are calibrated on)."""
    if data_dir is not None and not data_dir.is_dir():
        raise DietConfigError(f"data dir {str(data_dir)!r} does not exist (set data.dir or DIET_DATA_DIR)")
    for task in tasks:
        spec = task_spec(task)
        if spec.local_files:  # the task's own YAML names its files, online or offline
            wanted = [spec.eval_split] + ([spec.training_split] if need_train and spec.training_split else [])
            for split in wanted:
                paths = spec.local_files.get(split) or []
                missing = [path for path in paths if not Path(path).is_file()]
                if not paths or missing:
                    raise DietConfigError(f"task {task!r} reads split {split!r} from "
                                          f"{missing or 'no file'}: not found (dataset_kwargs.data_files of its YAML)")
            if need_train and not spec.training_split:
                raise _no_training_split(task, "its YAML sets no training_split")
            continue
        if need_train and not spec.training_split:
            raise _no_training_split(task, "lm-eval's config sets no training_split")
        if data_dir is None:
            continue
        files = data_files(task, data_dir)
        wanted = ["eval", "train"] if need_train else ["eval"]
        for kind in wanted:
            if not files[kind].is_file():
                raise DietConfigError(
                    f"missing {kind} data for task {task!r}: expected file {str(files[kind])!r} "
                    f"(layout: <data.dir>/eval/<task>_<split>.jsonl, <data.dir>/train/<task>_train.jsonl)"
                )


def task_config(task: str, data_dir: Path | None, with_train: bool = True) -> dict[str, Any]:
    """The task's config; offline, only the data source and split keys are overridden (a task whose YAML reads
    local files keeps them)."""
    spec = task_spec(task)
    config = copy.deepcopy(spec.config)
    if data_dir is None or spec.local_files:
        return config
    files = data_files(task, data_dir)
    split_files = {spec.eval_split: str(files["eval"])}
    has_train = with_train and files["train"].is_file()
    if has_train:
        split_files["train"] = str(files["train"])
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": split_files},
        training_split="train" if has_train else None,
        validation_split="validation" if spec.eval_split == "validation" else None,
        test_split="test" if spec.eval_split == "test" else None,
    )
    return config


def build_tasks(tasks: Sequence[str], data_dir: Path | None, with_train: bool = True) -> dict[str, Any]:
    """name -> lm-eval ConfigurableTask, data loaded."""
    from lm_eval.api.task import ConfigurableTask

    built = {}
    for task in tasks:
        built[task] = ConfigurableTask(config=task_config(task, data_dir, with_train=with_train))
    return built


def write_offline_task_yamls(directory: Path, tasks: Sequence[str], data_dir: Path) -> Path:
    """Task YAMLs for the stock `lm_eval --include_path DIR` CLI that read the local files.

    Each file includes the task's own YAML (the official one of a paper task; any other catalogue task's file, as
    lm-eval's metadata names it) and overrides only the data source, so stock lm-eval scores exactly the documents
    this framework scores (used by the identity tests; handy for users). A task whose YAML reads its own local
    files needs none: give stock lm-eval its folder.
    """
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        spec = task_spec(task)
        source = str(official_root() / PAPER_TASKS.get(task).yaml) if spec.paper else \
            (spec.config.get("metadata") or {}).get("config_source")
        if spec.local_files or not source or not Path(source).is_file():
            raise DietConfigError(f"task {task!r} has no YAML of lm-eval's to include (or reads its own files): give "
                                  f"stock lm-eval its own folder (--include_path) instead")
        offline = task_config(task, data_dir, with_train=False)
        overrides = {key: offline[key] for key in
                     ("dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split")}
        document = {"include": source, "task": task, **overrides}
        (directory / f"{task}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return directory
