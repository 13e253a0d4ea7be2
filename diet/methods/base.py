"""The method interface and registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch

from diet.bind import bind
from diet.errors import DietConfigError
from diet.methods.inputs import NoInputs, calibrates, read_section_inputs, section_keys
from diet.models.loaders import LoadedModel
from diet.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")


@dataclass
class PruningContext:
    """What a method works on besides its inputs (diet.methods.inputs): the model, where the data is, how to
    compute (never part of a cell's identity), the stage timer, and the notes it leaves for the record. It holds
    no run config: a method's options arrive typed in `select(ctx, inputs)`."""

    loaded: LoadedModel
    data_dir: Any
    timer: Callable[[str], Any]        # context manager factory: with timer("profile"): ...
    notes: dict[str, Any] = field(default_factory=dict)  # facts for the record (cache hits, ...)
    batch_size: int = 8                # calibration sequences per forward pass (calib.batch_size)


@dataclass
class MaskSelection:
    """A method's answer: what to remove, plus what it wants recorded. Applied by the shared pruner
    (diet.dims.apply), one dimension (diet.dims) after the other in pruning order."""

    keep: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # dimension -> per-layer masks, True = keep
    # dimension -> per-layer compensation its pruner adds after the removal (FLAP: the MLP down_proj bias)
    bias: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)
    per_task: dict[str, "MaskSelection"] | None = None    # evaluate each task with its own selection (oracle)
    # a method that rewrites the model itself while selecting (SliceGPT rotates and slices as it calibrates):
    # dimension -> the parameters {"total", "non_embedding"} its rewrite removed (negative where it added some)
    rewritten: dict[str, dict[str, int]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def kept(self, dimension: str) -> list[torch.Tensor] | None:
        """The per-layer masks of one dimension, None where it is not pruned."""
        return self.keep.get(dimension)


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own (conf/method/<name>.yaml holds only its name)."""


class Method:
    name: ClassVar[str] = "base"
    # the method's own options (conf/method/<name>.yaml), a dataclass: its fields and defaults are the only ones
    Options: ClassVar[type] = NoOptions
    # everything `select` receives, a frozen dataclass of the shared input types (diet.methods.inputs) plus
    # `options` (an Options instance); built once from the run config by diet.methods.inputs.build_inputs
    Inputs: ClassVar[type] = NoInputs
    prunes: ClassVar[bool] = True
    # the `dims` values (diet.dims.choice) this method can select; others fail in validation
    dims: ClassVar[tuple[str, ...]] = ("mlp",)
    # whether calib.source (pooled task samples or a text file) feeds this method; DIET is per task
    calib_source: ClassVar[bool] = False
    # generic-text calibration of the reference implementation: (windows, tokens per window), the
    # default of calib.windows / calib.window_length when calib.source is a text source
    reference_calib: ClassVar[tuple[int, int]] = (128, 128)
    # bumped when the method's scoring changes, so new cells never reuse an old record of the same config
    version: ClassVar[int] = 1
    # where its rows go in tables (lower first, then by name) and whether it is a baseline DIET is compared with
    table_rank: ClassVar[int] = 100
    baseline: ClassVar[bool] = True
    # where its `sparsity` is a knob other than what DIET's removes, what tables match with DIET's budget
    # (diet.analysis.tables.BUDGET_READINGS): "actual", the fraction of the pruned dimension removed (LLM-Pruner: a
    # ratio inside its layer range), or "non_embedding", the non-embedding parameters removed (SliceGPT: a hidden
    # width, with shortcut matrices added); None: the same `sparsity`
    compared_at: ClassVar[str | None] = None
    # evaluates every task with that task's own profile (oracle): profiled tasks must be the evaluated ones
    per_task_profiles: ClassVar[bool] = False
    # whether the run's `seed` can change this method's result (a calibration draw, random channels): the
    # seed then reaches its inputs and so its identity; an unseeded method's cells at every seed are one cell
    # (tests/test_identity.py holds the two statements equal)
    seeded: ClassVar[bool] = True

    @classmethod
    def calibrates(cls) -> bool:
        """Whether the method profiles calibration data (its inputs hold a calibration plan)."""
        return calibrates(cls.Inputs)

    @classmethod
    def options(cls, section: Mapping[str, Any]) -> Any:
        """conf/method/<name>.yaml's own options bound to `Options` (the keys its shared inputs take, such as
        DIET's `vote`, are bound by their types: diet.methods.inputs.METHOD_SECTION); wrong types fail."""
        return bind(cls.Options, section, "method", ignore=("name", *section_keys(cls)))

    @classmethod
    def check(cls, section: Mapping[str, Any]) -> None:
        """Validate the method's section before any model is loaded: every key is one of its options or of its
        shared inputs (a key of another method's, say `method.vote` with FLAP, fails naming the allowed ones)."""
        allowed = [f.name for f in dataclasses.fields(cls.Options)] + list(section_keys(cls))
        unknown = sorted(set(section) - set(allowed) - {"name"})
        if unknown:
            raise DietConfigError(f"method.{unknown[0]} is not an option of method {cls.name!r}: allowed "
                                  f"{', '.join(f'method.{key}' for key in allowed) or 'none'}")
        cls.options(section)
        read_section_inputs(cls, section)

    # why the parameter solver (sparsity_of=params) cannot model what this method removes; None where it can
    params_target_refusal: ClassVar[str | None] = None

    @classmethod
    def check_inputs(cls, inputs: Any) -> None:
        """Refuse inputs the method cannot honour (a combination its section alone does not show), before any
        model is loaded; default: a parameter target where `params_target_refusal` says why it cannot be met."""
        target = getattr(inputs, "target", None)
        if cls.params_target_refusal and target is not None and target.of != "dim":
            raise DietConfigError(f"method={cls.name} with sparsity_of=params: {cls.params_target_refusal}; run it "
                                  f"at sparsity_of=dim and read the removed parameter fractions from its record")

    def select(self, ctx: PruningContext, inputs: Any) -> MaskSelection:
        raise NotImplementedError
