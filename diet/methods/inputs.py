"""What a method's `select` receives: one typed, frozen object per method (`Method.Inputs`), built once from the
run config (diet.run.cell.resolve), instead of the config itself.

A method declares its inputs as a dataclass whose fields are the shared types below (what to remove, the
calibration plan, the mask rule, the merge rule, the profile statistic, the seed) plus `options`, its own
options of conf/method/<name>.yaml (`Method.Options`). `build_inputs` fills every field by its type: the run-wide
ones (Target, the calibration plan, Seed) from the top-level config (`BUILDERS`), the method's own protocol
(MaskRule, LayerFloor, MergeRule, ProfileStatistic) from the method's section (`METHOD_SECTION`: DIET's
`method.vote.threshold`, FLAP's `method.min_keep_fraction`), so a key sits in the YAML of the method that reads
it and nowhere else. The inputs are hashed whole into the cell's identity (`identity_of`,
diet.config.identity), so what a method receives is exactly what identifies its result. How the work is
computed (batch sizes, threads, device) never reaches the inputs: it travels in the PruningContext.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from diet.bind import bind
from diet.calib.generic_text import layout_of
from diet.calib.profiler import STATS
from diet.calib.sources import TASKS_SOURCE, calib_source, source_file, window_plan
from diet.checks import FLAG, in_range, one_of
from diet.dims.choice import cfg_dims
from diet.errors import DietConfigError
from diet.io import content_sha256
from diet.select.masks import MERGES, SCOPES


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
    exclude_bos: bool         # calib.exclude_bos: position 0 left out of every statistic


@dataclass(frozen=True)
class GenericText:
    """Calibration on seeded windows of a text file (calib.source=c4 or a path): the baselines' protocol.
    Identified by the file's content, not its path (one file on two machines is one cell)."""

    file: Path
    sha256: str               # the file's content as it was when the cell was resolved: read once per run
    windows: int
    window_length: int
    seed: int
    add_bos_token: bool
    exclude_bos: bool

    def identity(self) -> dict[str, Any]:
        return {"file_sha256": self.sha256, "layout": layout_of(self.file), "windows": self.windows,
                "window_length": self.window_length, "seed": self.seed, "add_bos_token": self.add_bos_token,
                "exclude_bos": self.exclude_bos}


Calibration = Union[TaskSamples, GenericText]


# The method's own protocol, read from its section of the config (conf/method/<name>.yaml); each class's defaults
# are the ones that file writes (tests/test_config.py holds them equal), its field checks name what is allowed.

@dataclass(frozen=True)
class MaskRule:
    """How one score vector becomes a keep-mask (method.mask): `scope` layer (top-k per layer) or global (across
    layers, normalised scores, with the per-layer floor `min_keep_fraction`)."""

    scope: str = field(default="layer", metadata=one_of(SCOPES.names))
    min_keep_fraction: float = field(default=0.05, metadata=in_range(0.0, 1.0, False, False))


@dataclass(frozen=True)
class LayerFloor:
    """The per-layer floor of a cross-layer allocation (method.min_keep_fraction), for methods with their own
    allocation rule (FLAP)."""

    min_keep_fraction: float = field(default=0.05, metadata=in_range(0.0, 1.0, False, False))


@dataclass(frozen=True)
class MergeRule:
    """DIET's merge of the task masks: `rule` (method.merge: vote, mean, union, intersection), the vote threshold
    and whether exactly the target count is kept (method.vote.threshold, method.vote.exact)."""

    rule: str = field(default="vote", metadata=one_of(MERGES.names, label="method.merge"))
    threshold: float = field(default=0.5, metadata=in_range(0.0, 1.0, True, False))
    exact: bool = field(default=True, metadata=FLAG)


@dataclass(frozen=True)
class ProfileStatistic:
    """The per-unit activation statistic units are scored by (method.profile.stat: mean_abs, mean_sq, l2)."""

    stat: str = field(default="mean_abs", metadata=one_of(STATS.names))


@dataclass(frozen=True)
class Seed:
    """The run's seed, for methods whose draw is not a calibration (random)."""

    value: int


@dataclass(frozen=True)
class NoInputs:
    """A method that selects nothing (dense)."""


def _calibration(cfg: Mapping[str, Any], method: Any, calib_tasks: list[str]) -> Calibration:
    calib = cfg["calib"]
    exclude = bool(calib.get("exclude_bos", False))
    path = source_file(cfg) if method.calib_source and calib_source(cfg) != TASKS_SOURCE else None
    if path is None:
        return TaskSamples(tasks=tuple(calib_tasks), n=calib["n"], with_answer=calib["with_answer"],
                           max_length=calib["max_length"], seed=cfg["seed"], add_bos_token=cfg["model"]["add_bos_token"],
                           exclude_bos=exclude)
    windows, length = window_plan(cfg, method.reference_calib)
    return GenericText(file=path, sha256=content_sha256(path), windows=windows, window_length=length, seed=cfg["seed"],
                       add_bos_token=cfg["model"]["add_bos_token"], exclude_bos=exclude)


# field type -> how it is read from the run config; `method`: the Method class
BUILDERS: dict[Any, Callable[[Mapping[str, Any], Any, list[str]], Any]] = {
    Target: lambda cfg, method, tasks: Target(sparsity=float(cfg["sparsity"]), dims=cfg_dims(cfg),
                                              of=cfg.get("sparsity_of") or "dim"),
    Calibration: _calibration,
    TaskSamples: _calibration,  # a method without calib_source always gets the task samples
    Seed: lambda cfg, method, tasks: Seed(cfg["seed"]),
}


def _merge_rule(section: Mapping[str, Any]) -> MergeRule:
    vote = section.get("vote") or {}
    if "rule" in vote:  # a field of MergeRule, but written as method.merge
        raise DietConfigError("method.vote.rule is not an option: allowed method.vote.threshold, "
                              "method.vote.exact (the merge rule is method.merge)")
    return bind(MergeRule, {**vote, **({"rule": section["merge"]} if "merge" in section else {})}, "method.vote")


@dataclass(frozen=True)
class SectionInput:
    """An input type read from the method's own section: the keys it takes there and how it binds them."""

    keys: tuple[str, ...]
    read: Callable[[Mapping[str, Any]], Any]


# field type -> its keys in the method's section (conf/method/<name>.yaml) and how they bind; a key absent there
# takes the type's default
METHOD_SECTION: dict[type, SectionInput] = {
    MaskRule: SectionInput(("mask",), lambda section: bind(MaskRule, section.get("mask") or {}, "method.mask")),
    LayerFloor: SectionInput(("min_keep_fraction",), lambda section: bind(
        LayerFloor, {key: section[key] for key in ("min_keep_fraction",) if key in section}, "method")),
    MergeRule: SectionInput(("merge", "vote"), _merge_rule),
    ProfileStatistic: SectionInput(("profile",), lambda section: bind(
        ProfileStatistic, section.get("profile") or {}, "method.profile")),
}


def section_keys(method: Any) -> tuple[str, ...]:
    """The keys of the method's section its shared input types take (the rest are its own Options)."""
    hints = typing.get_type_hints(method.Inputs)
    return tuple(key for item in dataclasses.fields(method.Inputs) if hints[item.name] in METHOD_SECTION
                 for key in METHOD_SECTION[hints[item.name]].keys)


CALIBRATIONS = (Calibration, TaskSamples)


def calibrates(inputs_type: type) -> bool:
    """Whether a method with these inputs profiles calibration data (and so has profiled tasks)."""
    return any(hint in CALIBRATIONS for hint in typing.get_type_hints(inputs_type).values())


def read_section_inputs(method: Any, section: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a method reads from its own section, by field name (binding checks every value)."""
    hints = typing.get_type_hints(method.Inputs)
    return {item.name: METHOD_SECTION[hints[item.name]].read(section) for item in dataclasses.fields(method.Inputs)
            if hints[item.name] in METHOD_SECTION}


def build_inputs(method: Any, cfg: Mapping[str, Any], calib_tasks: list[str]) -> Any:
    """`method.Inputs` filled from `cfg`: each field by its type (BUILDERS from the run config, METHOD_SECTION
    from the method's section); a field named `options` is the method's own options (conf/method/<name>.yaml),
    which a method with options must receive (they are hashed with its inputs)."""
    hints = typing.get_type_hints(method.Inputs)
    if dataclasses.fields(method.Options) and "options" not in hints:
        raise TypeError(f"{method.__name__}.Inputs has no `options` field: its options "
                        f"{[f.name for f in dataclasses.fields(method.Options)]} would not be part of its identity")
    values = read_section_inputs(method, cfg["method"])
    for item in dataclasses.fields(method.Inputs):
        kind = hints[item.name]
        if item.name == "options":
            values["options"] = method.options(cfg["method"])
        elif kind in METHOD_SECTION:
            continue
        elif kind in BUILDERS:
            values[item.name] = BUILDERS[kind](cfg, method, calib_tasks)
        else:
            known = [getattr(t, "__name__", str(t)) for t in (*BUILDERS, *METHOD_SECTION)]
            raise TypeError(f"{method.Inputs.__name__}.{item.name}: no builder for {kind!r}; the types a method "
                            f"can receive are {known}")
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
