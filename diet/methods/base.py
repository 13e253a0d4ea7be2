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


@dataclass
class MaskSelection:
    """A method's answer: per-layer MLP keep-masks plus what it wants recorded."""

    mlp_keep: list[torch.Tensor] | None
    stats: dict[str, Any] = field(default_factory=dict)


class Method:
    name: ClassVar[str] = "base"
    # config sections (besides BASE_SECTIONS) that change this method's result
    uses: ClassVar[tuple[str, ...]] = ()
    prunes: ClassVar[bool] = True

    def select(self, ctx: PruningContext) -> MaskSelection:
        raise NotImplementedError
