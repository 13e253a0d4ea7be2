"""A cell's identity covers everything its result depends on (diet.config.identity).

Two runs with one identity share one record (the second is skipped as done), so an option that changes
a result without changing the identity is a silent wrong result, and one that cannot change it but enters the
identity reruns a finished cell. The identity holds a method's inputs whole: these tests perturb every field
of every method's inputs and every option they are built from, hold the runtime options out, and run a
method written here against the contracts alone.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import compose_config
from diet.config.identity import config_hash, effective_config, identity
from diet.config.runtime import Runtime
from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.io import sha256_file
from diet.methods import METHODS
from diet.methods.base import MaskSelection, Method
from diet.methods.inputs import Target, build_inputs
from diet.models.adapters import adapter_for
from diet.run.cell import resolve
from diet.run.pipeline import run_cell, select_cell
from diet.select import masks

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "calib.windows=4",
        "calib.window_length=16", "wandb.mode=disabled"]
# a different valid value for every option a method may read (strings: another registered name)
ALTERNATIVES: dict[str, tuple[Any, ...]] = {
    "method.profile.stat": ("mean_sq", "l2"), "method.mask.scope": ("global", "layer"), "method.merge": ("mean", "vote"),
    "dims": ("heads", "mlp"), "calib.source": ("c4", "tasks"), "model.name": ("other",),
    "method.allocation": ("layer", "global"), "sparsity_of": ("params", "dim"),
    "method.taylor": ("vectorize", "param_first"), "method.final_orientation": ("pca", "random"),
    "method.embedding_mean": ("keep", "subtract")}


def _get(cfg: dict, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    return node


def _set(cfg: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def perturbed(cfg: dict, path: str) -> dict:
    """`cfg` with the option at `path` set to a different valid value."""
    value, out = _get(cfg, path), copy.deepcopy(cfg)
    if path in ALTERNATIVES:
        new = next(v for v in ALTERNATIVES[path] if v != value)
    elif isinstance(value, bool):
        new = not value
    elif isinstance(value, int):
        new = value + 1
    elif isinstance(value, float):
        new = value / 2 if value else 0.25
    elif value is None and path in ("calib.windows", "calib.window_length"):
        new = 8
    else:
        raise AssertionError(f"no alternative value for {path}={value!r}: add one to ALTERNATIVES")
    _set(out, path, new)
    return out


def cells() -> list[list[str]]:
    """Every registered method, with each calibration source it takes and each dims it offers."""
    out = []
    for name in METHODS.names():
        method = METHODS.get(name)
        for source in (["tasks", "c4"] if method.calib_source else ["tasks"]):
            for dims in method.dims:
                out.append([f"method={name}", f"calib.source={source}", f"dims={dims}"])
    return out


class RecordingView(Mapping):
    """The run config, recording the path of every option read through it (to learn what a method's inputs
    are built from)."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "", reads: set[str] | None = None) -> None:
        self._data, self._prefix = data, prefix
        self.reads: set[str] = set() if reads is None else reads

    def __getitem__(self, key: str) -> Any:
        value, path = self._data[key], f"{self._prefix}{key}"
        if isinstance(value, Mapping):
            return RecordingView(value, f"{path}.", self.reads)
        self.reads.add(path)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One profile cache for all cells of this module: the profiles of one tiny model and its tasks are
    computed once, not per method."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("overrides", cells(), ids=lambda o: " ".join(v.split("=")[1] for v in o))
def test_every_option_a_methods_inputs_come_from_changes_its_identity(overrides, tmp_path, shared_cache,
                                                                        monkeypatch):
    monkeypatch.setenv("DIET_CACHE", str(shared_cache))
    cfg = compose_config([*TINY, f"results_dir={tmp_path}", "sparsity=0.5", *overrides])
    cell = resolve(cfg)
    select_cell(cell)  # the method selects from exactly these inputs
    view = RecordingView(cfg)
    build_inputs(cell.method, view, cell.calib_tasks)  # as resolve builds them
    if cell.method.prunes:
        assert "sparsity" in view.reads  # the view really recorded what the method receives
    for path in sorted(view.reads - {"data.dir"}):  # data.dir: the named file enters by its content
        other = effective_config(perturbed(cfg, path), cell.tasks)  # unvalidated: FLAP refuses dims=heads
        assert config_hash(other) != cell.config_hash, f"{path} received but not identified"


def leaf_paths(value: Any, prefix: str = "") -> list[str]:
    if dataclasses.is_dataclass(value):
        return [path for item in dataclasses.fields(value)
                for path in leaf_paths(getattr(value, item.name), f"{prefix}{item.name}.")]
    return [prefix.rstrip(".")]


# a text field of an input -> the option it comes from (its alternative values: ALTERNATIVES)
FIELD_OPTIONS = {"stat": "method.profile.stat", "scope": "method.mask.scope", "rule": "method.merge", "dims": "dims",
                 "of": "sparsity_of",
                 "allocation": "method.allocation", "taylor": "method.taylor",
                 "final_orientation": "method.final_orientation", "embedding_mean": "method.embedding_mean"}


def method_choice(name: str) -> list[str]:
    """The overrides that run method `name` at its first `dims` value (SliceGPT offers only hidden)."""
    return [f"method={name}", f"dims={METHODS.get(name).dims[0]}"]


def replaced(value: Any, path: str, tmp_path) -> Any:
    """`value` (inputs) with the field at `path` set to another valid value."""
    head, _, rest = path.partition(".")
    current = getattr(value, head)
    if rest:
        return dataclasses.replace(value, **{head: replaced(current, rest, tmp_path)})
    if isinstance(current, Path):  # a file enters by its content, read when the cell is resolved (`sha256`)
        other = tmp_path / "other.txt"
        other.write_text(current.read_text()[:-1])
        return dataclasses.replace(value, file=other, sha256=sha256_file(other))
    if head == "sha256":
        new: Any = "0" * 64
    elif isinstance(current, bool):
        new = not current
    elif isinstance(current, (int, float)):
        new = current + 1 if isinstance(current, int) else current / 2
    elif isinstance(current, tuple):
        new = current[::-1] if len(current) > 1 else (*current, "other")
    else:
        new = next(v for v in ALTERNATIVES[FIELD_OPTIONS[head]] if v != current)
    return dataclasses.replace(value, **{head: new})


@pytest.mark.parametrize("source", ["tasks", "c4"])
@pytest.mark.parametrize("name", METHODS.names())
def test_perturbing_any_field_of_a_methods_inputs_changes_the_identity(name, source, tmp_path):
    """What a method receives is what is hashed: every field of every method's inputs, whatever its type."""
    cfg = compose_config([*TINY, *method_choice(name), f"calib.source={source}"])
    cell = resolve(cfg)
    paths = leaf_paths(cell.inputs)
    assert (paths == []) == (name == "dense")
    for path in paths:
        other = identity(cfg, cell.tasks, cell.method, replaced(cell.inputs, path, tmp_path), cell.checked.recovery)
        assert config_hash(other) != cell.config_hash, f"{name}: {path}"


RUNTIME_OVERRIDES = ["eval.batch_size=3", "eval.backend=stock", "eval.by_task=true", "calib.batch_size=3",
                     "threads=1", "model.device=auto", "results_dir=elsewhere", "wandb.mode=disabled",
                     "save_model=true", "force=true", "export.pad=true"]


@pytest.mark.parametrize("name", METHODS.names())
def test_how_a_result_is_computed_never_changes_its_identity(name):
    base = resolve(compose_config([*TINY, *method_choice(name)]))
    changed: set[str] = set()
    for override in [*RUNTIME_OVERRIDES, "eval.by_task=true eval.chunk_docs=2"]:
        if override == "save_model=true" and METHODS.get(name).per_task_profiles:
            continue  # an oracle saves no single model (refused in validation)
        cell = resolve(compose_config([*TINY, *method_choice(name), *override.split()]))
        assert cell.config_hash == base.config_hash, override
        changed |= {f.name for f in dataclasses.fields(cell.runtime)
                    if getattr(cell.runtime, f.name) != getattr(base.runtime, f.name)}
    # every runtime option was perturbed above and reached the cell's Runtime (read from where its field says);
    # a method that prunes nothing binds no calibration section (its calibration batch size is never used)
    unused = set() if METHODS.get(name).prunes else {"calib_batch_size"}
    assert changed == {f.name for f in dataclasses.fields(Runtime)} - unused


def test_an_option_a_method_does_not_receive_never_splits_its_cells():
    def cell_hash(*overrides: str) -> str:
        return resolve(compose_config([*TINY, *overrides])).config_hash

    assert cell_hash("method=diet", "method.mask.scope=global") != cell_hash("method=diet", "method.mask.scope=layer")
    assert cell_hash("method=flap", "calib.source=c4", "calib.n=7") == cell_hash("method=flap", "calib.source=c4")
    assert cell_hash("method=dense", "sparsity=0.5", "seed=3") == cell_hash("method=dense")
    assert cell_hash("method=magnitude", "seed=3") == cell_hash("method=magnitude")
    assert cell_hash("method=diet", "calib.source=c4") == cell_hash("method=diet")  # DIET profiles its tasks


@pytest.mark.parametrize("name", METHODS.names())
def test_a_method_is_seeded_exactly_when_its_inputs_hold_the_seed(name):
    cfg = compose_config([*TINY, *method_choice(name), "seed=7"])
    received = 7 in [getattr(getattr(resolve(cfg).inputs, f.name), key, None) for f in
                     dataclasses.fields(resolve(cfg).inputs) for key in ("seed", "value")]
    assert METHODS.get(name).seeded == received


@dataclass(frozen=True)
class KeepFirstOptions:
    first: bool = True  # keep the first channels of each layer (else the last)


@dataclass(frozen=True)
class KeepFirstInputs:
    target: Target
    options: KeepFirstOptions


class KeepFirst(Method):
    """A method written in a test, against the contracts only: its inputs, its options, its select."""

    name = "keep_first"
    seeded = False
    Options = KeepFirstOptions
    Inputs = KeepFirstInputs

    def select(self, ctx, inputs: KeepFirstInputs) -> MaskSelection:
        keep = []
        for width in adapter_for(ctx.loaded.model).mlp_widths():
            mask = torch.zeros(width, dtype=torch.bool)
            mask[:masks.keep_count(width, inputs.target.sparsity)] = True
            keep.append(mask if inputs.options.first else mask.flip(0))
        return MaskSelection(keep={"mlp": keep}, stats=masks.mask_stats({}, keep))


def test_a_method_defined_in_a_test_runs_end_to_end(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setitem(METHODS._items, "keep_first", KeepFirst)
    options = yaml.safe_load("name: keep_first\nfirst: true  # keep the first channels\n")  # its conf/method YAML
    cfg = compose_config([*TINY, f"results_dir={tmp_path}", "sparsity=0.25"])
    cfg["method"] = options
    record, _ = run_cell(cfg)
    assert record["method"] == "keep_first" and record["sparsity"]["actual"] == 0.25
    assert record["effective_config"]["method"] == {"name": "keep_first", "version": 1, "inputs": {
        "target": {"sparsity": 0.25, "dims": "mlp", "of": "dim"}, "options": {"first": True}}}
    cfg["method"] = {**options, "first": False}
    assert resolve(cfg).config_hash != record["config_hash"]
    with pytest.raises(DietConfigError, match="method.firts"):
        resolve({**cfg, "method": {"name": "keep_first", "firts": True}})


def test_a_method_whose_options_would_not_be_hashed_is_refused():
    class Forgetful(KeepFirst):
        Inputs = dataclass(frozen=True)(type("ForgetfulInputs", (), {"__annotations__": {"target": Target}}))

    with pytest.raises(TypeError, match="no `options` field"):
        build_inputs(Forgetful, compose_config([*TINY, "sparsity=0.25"]), [])


def _hash(overrides: list[str]) -> str:
    cfg = compose_config(overrides)
    return resolve(cfg).config_hash


def test_dtype_auto_is_resolved_before_hashing(monkeypatch):
    """A Gemma-2-shaped `dtype: auto, device: auto` cell is bfloat16 on a GPU and float32 on the CPU: two cells,
    never one record for both. Written-out dtypes keep their old hash."""
    import torch

    cell = ["model=tiny_gemma2", "model.dtype=auto", "model.device=auto", "method=diet", "tasks=[arc_easy]"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu = _hash(cell)
    assert on_cpu == _hash([*cell[:1], "model.dtype=float32", *cell[2:]])  # auto on the CPU is float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = _hash(cell)
    assert on_gpu != on_cpu and on_gpu == _hash([*cell[:1], "model.dtype=bfloat16", *cell[2:]])
    cfg = compose_config(cell)
    assert effective_config(cfg, validate(cfg).tasks)["model"]["dtype"] == "bfloat16"


def test_a_cuda_device_that_is_not_there_stops_in_preflight(tmp_path, monkeypatch):
    import torch

    from diet.run.pipeline import run_cell

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    import diet.models

    monkeypatch.setattr(diet.models, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    cfg = compose_config(["model=tiny_gemma2", "model.device=cuda", "tasks=[arc_easy]", "eval.limit=2",
                          f"results_dir={tmp_path / 'records'}", "wandb.mode=disabled"])
    with pytest.raises(DietConfigError, match="model.device='cuda' but torch .* sees no CUDA device"):
        run_cell(cfg)
    assert compose_config(["target=gpu", "model=gemma2_2b"])["model"]["device"] == "cuda"


def test_a_file_an_identity_names_is_read_once_per_content(tmp_path, monkeypatch):
    """Every cell of a sweep hashes the same calibration text and task files: read once, read again when the
    file on disk changes (a stale digest would give an edited file the old file's cells)."""
    import os

    import diet.io

    reads = []
    real = diet.io.sha256_file
    monkeypatch.setattr(diet.io, "sha256_file", lambda path: reads.append(path) or real(path))
    text = tmp_path / "text.txt"
    text.write_text("one\n")
    first = diet.io.content_sha256(text)
    assert diet.io.content_sha256(tmp_path / "." / "text.txt") == first and len(reads) == 1
    text.write_text("two\n")  # same size: only the modification time tells the content changed
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 1_000_000))
    assert diet.io.content_sha256(text) == diet.io.sha256_bytes(b"two\n") != first and len(reads) == 2
