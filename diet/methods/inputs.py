"""What a method's `select` receives: one typed, frozen object per method (`Method.Inputs`), built once from the
run config, instead of the config itself.

A method declares its inputs as a dataclass whose fields are the shared types below (what to remove, the
calibration plan, the mask rule, the merge rule, the profile statistic) plus `options`, its own options of
conf/method/<name>.yaml (`Method.Options`). `build_inputs` fills every field from the config by its type, and
the config is read through a `ConfigView` while it does, so the pipeline checks that everything a method
receives is part of the cell's identity (diet.config.identity.check_reads) before the model is profiled.
A method never sees a field it did not declare: FLAP gets the per-layer floor, not the mask scope it ignores.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from diet.dims.choice import cfg_dims
from diet.calib.sources import TASKS_SOURCE, calib_source, source_file, window_plan


@dataclass(frozen=True)
class Target:
    """What to remove: `sparsity` of each pruned dimension (with sparsity_of=params the per-dimension fraction
    solved for the model), of the dimensions `dims` names (diet.dims.choice)."""

    sparsity: float
    dims: str


@dataclass(frozen=True)
class TaskSamples:
    """Calibration on `n` train samples of each profiled task (DIET's protocol; calib.source=tasks)."""

    tasks: tuple[str, ...]    # the profiled tasks (calib.tasks minus calib.exclude), in order
    n: int
    with_answer: bool
    max_length: int
    seed: int
    add_bos_token: bool
    exclude_bos: bool         # profile.exclude_bos: position 0 left out of every statistic
    batch_size: int = field(default=8, compare=False)  # computation only: how many samples per forward


@dataclass(frozen=True)
class GenericText:
    """Calibration on seeded windows of a text file (calib.source=c4 or a path): the baselines' protocol."""

    file: Path
    windows: int
    window_length: int
    seed: int
    add_bos_token: bool
    exclude_bos: bool
    batch_size: int = field(default=8, compare=False)


Calibration = Union[TaskSamples, GenericText]


@dataclass(frozen=True)
class MaskRule:
    """How one score vector becomes a keep-mask: `scope` layer (top-k per layer) or global (across layers,
    with the per-layer floor `min_keep_fraction`)."""

    scope: str
    min_keep_fraction: float


@dataclass(frozen=True)
class LayerFloor:
    """The per-layer floor of a cross-layer allocation (mask.min_keep_fraction), for methods with their own
    allocation rule (FLAP)."""

    min_keep_fraction: float


@dataclass(frozen=True)
class MergeRule:
    """DIET's merge of the task masks: `rule` (vote, mean, union, intersection), the vote threshold, and
    whether exactly the target count is kept."""

    rule: str
    threshold: float
    exact: bool


@dataclass(frozen=True)
class ProfileStatistic:
    """The per-unit activation statistic units are scored by (profile.stat: mean_abs, mean_sq, l2)."""

    stat: str


@dataclass(frozen=True)
class Seed:
    """The run's seed, for methods whose draw is not a calibration (random)."""

    value: int


@dataclass(frozen=True)
class NoInputs:
    """A method that selects nothing (dense)."""


def _calibration(cfg: Mapping[str, Any], method: Any, calib_tasks: list[str]) -> Calibration:
    calib, exclude = cfg["calib"], bool((cfg.get("profile") or {}).get("exclude_bos", False))
    path = source_file(cfg) if method.calib_source and calib_source(cfg) != TASKS_SOURCE else None
    if path is None:
        return TaskSamples(tasks=tuple(calib_tasks), n=calib["n"], with_answer=calib["with_answer"],
                           max_length=calib["max_length"], seed=cfg["seed"], add_bos_token=cfg["model"]["add_bos_token"],
                           exclude_bos=exclude, batch_size=calib["batch_size"])
    windows, length = window_plan(cfg, method.reference_calib)
    return GenericText(file=path, windows=windows, window_length=length, seed=cfg["seed"],
                       add_bos_token=cfg["model"]["add_bos_token"], exclude_bos=exclude, batch_size=calib["batch_size"])


# field type -> how it is read from the (sparsity-resolved) run config; `method`: the Method class
BUILDERS: dict[Any, Callable[[Mapping[str, Any], Any, list[str]], Any]] = {
    Target: lambda cfg, method, tasks: Target(sparsity=float(cfg["sparsity"]), dims=cfg_dims(cfg)),
    Calibration: _calibration,
    TaskSamples: _calibration,  # a method without calib_source always gets the task samples
    MaskRule: lambda cfg, method, tasks: MaskRule(cfg["mask"]["scope"], cfg["mask"]["min_keep_fraction"]),
    LayerFloor: lambda cfg, method, tasks: LayerFloor(cfg["mask"]["min_keep_fraction"]),
    MergeRule: lambda cfg, method, tasks: MergeRule(cfg["merge"], cfg["vote"]["threshold"], cfg["vote"]["exact"]),
    ProfileStatistic: lambda cfg, method, tasks: ProfileStatistic(cfg["profile"]["stat"]),
    Seed: lambda cfg, method, tasks: Seed(cfg["seed"]),
}


def build_inputs(method: Any, cfg: Mapping[str, Any], calib_tasks: list[str]) -> Any:
    """`method.Inputs` filled from `cfg` (a ConfigView, so every read is recorded): each field by its type
    (BUILDERS); a field named `options` is the method's own options (conf/method/<name>.yaml)."""
    hints = typing.get_type_hints(method.Inputs)
    values = {}
    for item in dataclasses.fields(method.Inputs):
        if item.name == "options":
            values["options"] = method.options(cfg["method"])
            continue
        builder = BUILDERS.get(hints[item.name])
        if builder is None:
            raise TypeError(f"{method.Inputs.__name__}.{item.name}: no builder for {hints[item.name]!r}; the "
                            f"types a method can receive are {[getattr(t, '__name__', str(t)) for t in BUILDERS]}")
        values[item.name] = builder(cfg, method, calib_tasks)
    return method.Inputs(**values)
