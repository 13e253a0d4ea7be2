"""The zero-shot tasks: official lm-eval 0.4.13 task configs, with only the data source made local offline.

Offline mode (a data folder is configured): `<dir>/eval/<task>_<split>.jsonl` is scored and
`<dir>/train/<task>_train.jsonl` feeds calibration. Online mode: lm-eval's config is used unchanged.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from diet.errors import DietConfigError
from diet.registry import Registry, unknown_name_message


@dataclass(frozen=True)
class TaskSpec:
    name: str
    yaml: str          # path of the official task YAML, relative to lm_eval/tasks/
    eval_split: str    # the split lm-eval scores for this task (test when the task has one)
    metrics: tuple[str, ...]
    # a perplexity task: lower is better, never averaged with accuracies, never calibrated on
    perplexity: bool = False
    # the score of a model with no skill on the evaluated split, as `chance_level` computes it from the task
    # YAML and the split (tests/test_tasks.py recomputes it from ../shared/data), kept here so that tables
    # need no data; None for a perplexity
    chance: float | None = None

    def default_metric(self) -> str:
        """Headline metric (`eval.metric=auto`): acc_norm where the task reports it, else acc; a perplexity
        task's first metric (word perplexity)."""
        if self.perplexity:
            return self.metrics[0]
        return "acc_norm" if "acc_norm" in self.metrics else "acc"


TASKS: Registry[TaskSpec] = Registry("task")
for _spec in (
    TaskSpec("boolq", "super_glue/boolq/default.yaml", "validation", ("acc",), chance=0.622),
    TaskSpec("rte", "glue/rte/default.yaml", "validation", ("acc",), chance=0.527),
    TaskSpec("sglue_rte", "super_glue/rte/default.yaml", "validation", ("acc",), chance=0.527),
    TaskSpec("hellaswag", "hellaswag/hellaswag.yaml", "validation", ("acc", "acc_norm"), chance=0.25),
    TaskSpec("winogrande", "winogrande/default.yaml", "validation", ("acc",), chance=0.5),
    TaskSpec("arc_easy", "arc/arc_easy.yaml", "test", ("acc", "acc_norm"), chance=0.25),
    TaskSpec("arc_challenge", "arc/arc_challenge.yaml", "test", ("acc", "acc_norm"), chance=0.25),
    TaskSpec("openbookqa", "openbookqa/openbookqa.yaml", "test", ("acc", "acc_norm"), chance=0.25),
    # WikiText-2 test documents, rolling loglikelihood: word/byte perplexity and bits per byte
    TaskSpec("wikitext", "wikitext/wikitext.yaml", "test", ("word_perplexity", "byte_perplexity", "bits_per_byte"),
             perplexity=True),
):
    TASKS.register(_spec.name)(_spec)

METRIC_CHOICES = ("auto", "acc", "acc_norm")


def resolve_task_names(tasks: str | Sequence[str], task_sets: Mapping[str, Sequence[str]]) -> list[str]:
    """`paper7` (a task set), `boolq` (one task) or `[boolq, rte]` -> validated list of task names."""
    if isinstance(tasks, str):
        if tasks in task_sets:
            names = list(task_sets[tasks])
        elif tasks in TASKS:
            names = [tasks]
        else:
            raise DietConfigError(unknown_name_message("task or task set", tasks, TASKS.names() + list(task_sets)))
    else:
        names = [str(name) for name in tasks]
    if not names:
        raise DietConfigError("tasks is empty: name a task set (e.g. paper7) or a list of tasks")
    for name in names:
        TASKS.get(name)
    if len(set(names)) != len(names):
        raise DietConfigError(f"tasks lists a task twice: {names}")
    return names


def is_perplexity(task: str) -> bool:
    return TASKS.get(task).perplexity


def accuracy_tasks(tasks: Iterable[str]) -> list[str]:
    """The tasks scored by accuracy (averaged, calibrated on); perplexity tasks left out."""
    return [task for task in tasks if not is_perplexity(task)]


def chance_levels() -> dict[str, float]:
    """task -> its chance level (TaskSpec.chance), for the tasks that have one."""
    return {name: TASKS.get(name).chance for name in TASKS.names() if TASKS.get(name).chance is not None}


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
    if metric not in METRIC_CHOICES:
        raise DietConfigError(f"eval.metric={metric!r} is not allowed: use one of {', '.join(METRIC_CHOICES)}")
    spec = TASKS.get(task)
    if metric == "auto" or spec.perplexity:  # eval.metric chooses between accuracies
        return spec.default_metric()
    if metric not in spec.metrics:
        return "acc"  # acc_norm requested for a task that only reports acc
    return metric


def data_files(task: str, data_dir: Path) -> dict[str, Path]:
    """The local files for a task: {'eval': ..., 'train': ... (may be absent on disk)}."""
    spec = TASKS.get(task)
    return {
        "eval": data_dir / "eval" / f"{task}_{spec.eval_split}.jsonl",
        "train": data_dir / "train" / f"{task}_train.jsonl",
    }


def check_data_files(tasks: Iterable[str], data_dir: Path | None, need_train: bool = False) -> None:
    """Fail fast, before any model is loaded, on a missing local data file."""
    if data_dir is None:
        return
    if not data_dir.is_dir():
        raise DietConfigError(f"data dir {str(data_dir)!r} does not exist (set data.dir or DIET_DATA_DIR)")
    for task in tasks:
        files = data_files(task, data_dir)
        wanted = ["eval", "train"] if need_train else ["eval"]
        for kind in wanted:
            if not files[kind].is_file():
                raise DietConfigError(
                    f"missing {kind} data for task {task!r}: expected file {str(files[kind])!r} "
                    f"(layout: <data.dir>/eval/<task>_<split>.jsonl, <data.dir>/train/<task>_train.jsonl)"
                )


@functools.lru_cache(maxsize=None)
def _official_config(task: str) -> dict[str, Any]:
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(lm_eval.tasks.__file__).parent / TASKS.get(task).yaml
    return load_yaml(str(path), resolve_func=True)


def task_config(task: str, data_dir: Path | None, with_train: bool = True) -> dict[str, Any]:
    """The official config; offline, only the data source and split keys are overridden."""
    config = copy.deepcopy(_official_config(task))
    if data_dir is None:
        return config
    spec = TASKS.get(task)
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

    Each file includes the official YAML and overrides only the data source, so stock lm-eval
    scores exactly the documents this framework scores (used by the identity test; handy for users).
    """
    import lm_eval.tasks
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    official_root = Path(lm_eval.tasks.__file__).parent
    for task in tasks:
        offline = task_config(task, data_dir, with_train=False)
        overrides = {key: offline[key] for key in
                     ("dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split")}
        document = {"include": str(official_root / TASKS.get(task).yaml), "task": task, **overrides}
        (directory / f"{task}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return directory
