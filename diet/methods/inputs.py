"""What a method's `select` receives: one typed, frozen object per method (`Method.Inputs`), built once from the
run config (diet.run.cell.resolve), instead of the config itself.

A method declares its inputs as a dataclass whose fields are the shared types below (what to remove, the
calibration plan, the mask rule, the merge rule, the profile statistic, the seed) plus `options`, its own
options of conf/method/<name>.yaml (`Method.Options`). `build_inputs` fills every field from the config by its
type. The inputs are hashed whole into the cell's identity (`identity_of`, diet.config.identity), so what a
method receives is exactly what identifies its result: FLAP gets the per-layer floor, not the mask scope it
ignores, and two FLAP cells differing only in `mask.scope` are one cell. How the work is computed (batch
sizes, threads, device) never reaches the inputs: it travels in the PruningContext.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from diet.calib.generic_text import layout_of
from diet.calib.sources import TASKS_SOURCE, calib_source, source_file, window_plan
from diet.dims.choice import cfg_dims
from diet.io import sha256_file


@dataclass(frozen=True)
class Target:
    """What to remove: `sparsity` of the dimensions `dims` names (diet.dims.choice), a fraction of each pruned
    dimension (`of` = "dim") or of the non-embedding parameters (`of` = "params"). The pipeline hands the
    method the per-dimension fraction solved for the model (`with_dim_sparsity`), so a method always reads
    `sparsity` as a fraction of each pruned dimension."""

    sparsity: float
    dims: str
    of: str = "dim"


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


@dataclass(frozen=True)
class GenericText:
    """Calibration on seeded windows of a text file (calib.source=c4 or a path): the baselines' protocol.
    Identified by the file's content, not its path (one file on two machines is one cell)."""

    file: Path
    windows: int
    window_length: int
    seed: int
    add_bos_token: bool
    exclude_bos: bool

    def identity(self) -> dict[str, Any]:
        return {"file_sha256": sha256_file(self.file), "layout": layout_of(self.file), "windows": self.windows,
                "window_length": self.window_length, "seed": self.seed, "add_bos_token": self.add_bos_token,
                "exclude_bos": self.exclude_bos}


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
                           exclude_bos=exclude)
    windows, length = window_plan(cfg, method.reference_calib)
    return GenericText(file=path, windows=windows, window_length=length, seed=cfg["seed"],
                       add_bos_token=cfg["model"]["add_bos_token"], exclude_bos=exclude)


# field type -> how it is read from the run config; `method`: the Method class
BUILDERS: dict[Any, Callable[[Mapping[str, Any], Any, list[str]], Any]] = {
    Target: lambda cfg, method, tasks: Target(sparsity=float(cfg["sparsity"]), dims=cfg_dims(cfg),
                                              of=cfg.get("sparsity_of") or "dim"),
    Calibration: _calibration,
    TaskSamples: _calibration,  # a method without calib_source always gets the task samples
    MaskRule: lambda cfg, method, tasks: MaskRule(cfg["mask"]["scope"], cfg["mask"]["min_keep_fraction"]),
    LayerFloor: lambda cfg, method, tasks: LayerFloor(cfg["mask"]["min_keep_fraction"]),
    MergeRule: lambda cfg, method, tasks: MergeRule(cfg["merge"], cfg["vote"]["threshold"], cfg["vote"]["exact"]),
    ProfileStatistic: lambda cfg, method, tasks: ProfileStatistic(cfg["profile"]["stat"]),
    Seed: lambda cfg, method, tasks: Seed(cfg["seed"]),
}


CALIBRATIONS = (Calibration, TaskSamples)


def calibrates(inputs_type: type) -> bool:
    """Whether a method with these inputs profiles calibration data (and so has profiled tasks)."""
    return any(hint in CALIBRATIONS for hint in typing.get_type_hints(inputs_type).values())


def build_inputs(method: Any, cfg: Mapping[str, Any], calib_tasks: list[str]) -> Any:
    """`method.Inputs` filled from `cfg`: each field by its type (BUILDERS); a field named `options` is the
    method's own options (conf/method/<name>.yaml), which a method with options must receive (they are
    hashed with its inputs)."""
    hints = typing.get_type_hints(method.Inputs)
    if dataclasses.fields(method.Options) and "options" not in hints:
        raise TypeError(f"{method.__name__}.Inputs has no `options` field: its options "
                        f"{[f.name for f in dataclasses.fields(method.Options)]} would not be part of its identity")
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


def with_dim_sparsity(inputs: Any, sparsity: float) -> Any:
    """`inputs` with every Target's sparsity replaced by the per-dimension fraction solved for the model
    (sparsity_of=params; diet.dims.accounting.solve_dim_sparsity)."""
    changes = {item.name: dataclasses.replace(getattr(inputs, item.name), sparsity=sparsity, of="dim")
               for item in dataclasses.fields(inputs) if isinstance(getattr(inputs, item.name), Target)}
    return dataclasses.replace(inputs, **changes) if changes else inputs


def identity_of(value: Any) -> Any:
    """The JSON form of inputs that enters a cell's identity: dataclasses field by field (a type may define
    `identity()` instead, e.g. a file by its content), tuples as lists."""
    if hasattr(value, "identity") and callable(value.identity):
        return value.identity()
    if dataclasses.is_dataclass(value):
        return {item.name: identity_of(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [identity_of(item) for item in value]
    if isinstance(value, Path):
        raise TypeError(f"a path cannot identify a result ({value}): give its type an identity() by content")
    return value
