"""The method interface and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from diet.models.loaders import LoadedModel
from diet.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")

# Config sections every run depends on; a method adds the ones its result depends on.
BASE_SECTIONS = ("model", "tasks", "eval", "seed", "data_mode")


@dataclass
class PruningContext:
    """Everything a method may use to choose its mask."""

    loaded: LoadedModel
    cfg: dict[str, Any]                # the validated, resolved run config
    tasks: list[str]
    data_dir: Any
    timer: Callable[[str], Any]        # context manager factory: with timer("profile"): ...
    notes: dict[str, Any] = field(default_factory=dict)  # facts for the record (cache hits, ...)
    calib_tasks: list[str] = field(default_factory=list)  # tasks profiled (calib.tasks/exclude); [] = tasks

    def __post_init__(self) -> None:
        if not self.calib_tasks:
            self.calib_tasks = list(self.tasks)


@dataclass
class MaskSelection:
    """A method's answer: what to remove, plus what it wants recorded. Applied by the shared pruner."""

    mlp_keep: list[torch.Tensor] | None = None            # per layer, True = keep the MLP channel
    mlp_bias: list[torch.Tensor | None] | None = None     # per layer down_proj bias added after slicing (FLAP)
    drop_layers: list[int] | None = None                  # whole decoder layers removed (ShortGPT)
    head_keep: list[torch.Tensor] | None = None           # per layer, per query head, True = keep (GQA rule)
    hidden_keep: torch.Tensor | None = None               # one mask over the residual-stream dims, True = keep
    per_task: dict[str, "MaskSelection"] | None = None    # evaluate each task with its own selection (oracle)
    stats: dict[str, Any] = field(default_factory=dict)


class Method:
    name: ClassVar[str] = "base"
    # config sections (besides BASE_SECTIONS) that change this method's result
    uses: ClassVar[tuple[str, ...]] = ()
    prunes: ClassVar[bool] = True
    # the `dims` values (diet.dims.DIMS) this method can select; others fail in validation
    dims: ClassVar[tuple[str, ...]] = ("mlp",)
    # whether calib.source (pooled task samples or a text file) feeds this method; DIET is per task
    calib_source: ClassVar[bool] = False
    # generic-text calibration of the reference implementation: (windows, tokens per window), the
    # default of calib.windows / calib.window_length when calib.source is a text source
    reference_calib: ClassVar[tuple[int, int]] = (128, 128)
    # bumped when the method's scoring changes, so new cells never reuse an old record of the same
    # config (enters the identity only when > 1: cells of version-1 methods keep their hashes)
    version: ClassVar[int] = 1
    # evaluates every task with that task's own profile (oracle): profiled tasks must be the evaluated ones
    per_task_profiles: ClassVar[bool] = False
    # whether the run's `seed` can change this method's result (a calibration draw, random channels);
    # an unseeded method's cells at every seed are one cell (its identity records seed 0)
    seeded: ClassVar[bool] = True

    @classmethod
    def check(cls, options: dict[str, Any]) -> None:
        """Validate the method's own options (conf/method/<name>.yaml) before any model is loaded."""

    def select(self, ctx: PruningContext) -> MaskSelection:
        raise NotImplementedError
