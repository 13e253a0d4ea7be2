"""A cell's identity covers everything its result depends on (diet.config.identity).

Two runs with one identity share one record (the second is skipped as done), so an option that changes
a result without changing the identity is a silent wrong result. These tests drive every registered
method through selection on a tiny model and perturb every option its inputs were built from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT, compose_config
from diet.config.identity import COMPUTATION_ONLY, ConfigView, check_reads, config_hash, effective_config, unidentified
from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.methods import METHODS
from diet.methods.base import MaskSelection, Method
from diet.methods.inputs import MergeRule, Target, build_inputs
from diet.run.cell import resolve
from diet.run.pipeline import select_cell

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "calib.windows=4",
        "calib.window_length=16", "wandb.mode=disabled"]
# a different valid value for every option a method may read (strings: another registered name)
ALTERNATIVES: dict[str, tuple[Any, ...]] = {
    "profile.stat": ("mean_sq", "l2"), "mask.scope": ("global", "layer"), "merge": ("mean", "vote"),
    "dims": ("heads", "mlp"), "calib.source": ("c4", "tasks"), "model.name": ("other",),
    "method.allocation": ("layer", "global"), "sparsity_of": ("params", "dim")}


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


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One profile cache for all cells of this module: the profiles of one tiny model and its tasks are
    computed once, not per method (what the methods read does not depend on a cache hit)."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("overrides", cells(), ids=lambda o: " ".join(v.split("=")[1] for v in o))
def test_every_option_a_method_reads_changes_its_identity(overrides, tmp_path, shared_cache, monkeypatch):
    monkeypatch.setenv("DIET_CACHE", str(shared_cache))
    cfg = compose_config([*TINY, f"results_dir={tmp_path}", "sparsity=0.5", *overrides])
    cell = resolve(cfg)
    select_cell(cell)  # runs check_reads on what building the inputs read: an unidentified read fails here
    view = ConfigView(cfg)
    build_inputs(cell.method, view, cell.calib_tasks)  # as select_cell builds them
    reads = view.reads
    if METHODS.get(cfg["method"]["name"]).prunes:
        assert "sparsity" in reads  # the view really recorded what the method receives
    for path in sorted(reads - COMPUTATION_ONLY - {"data.dir"}):
        other = perturbed(cfg, path)
        assert config_hash(effective_config(other, cell.tasks)) != cell.config_hash, f"{path} read but not identified"


def test_any_method_option_changes_the_identity():
    for path in sorted((REPO_ROOT / "conf" / "method").glob("*.yaml")):
        options = yaml.safe_load(path.read_text())
        cfg = compose_config([*TINY, f"method={path.stem}"])
        base = config_hash(effective_config(cfg, ["arc_easy", "rte"]))
        for key in sorted(set(options) - {"name"}):
            other = perturbed(cfg, f"method.{key}")
            assert config_hash(effective_config(other, ["arc_easy", "rte"])) != base, f"{path.name}: {key}"


@dataclass(frozen=True)
class _MergeInputs:
    target: Target
    merge: MergeRule


class _ReadsMerge(Method):
    """A method that receives DIET's merge rule without declaring its sections in `uses`: the bug the guard
    exists for (two cells differing only in `merge` would share one record)."""

    name = "reads_merge"
    uses = ("sparsity", "dims")
    Inputs = _MergeInputs

    def select(self, ctx, inputs):
        raise AssertionError("select must not run: the inputs are checked first")


def test_an_input_outside_the_identity_is_refused_before_profiling(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setitem(METHODS._items, "reads_merge", _ReadsMerge)
    cfg = compose_config([*TINY, f"results_dir={tmp_path}"])
    cfg["method"] = {"name": "reads_merge"}
    with pytest.raises(DietConfigError, match=r"read \['merge', 'vote.exact', 'vote.threshold'\].*_ReadsMerge.uses"):
        select_cell(resolve(cfg))
    monkeypatch.setattr(_ReadsMerge, "uses", ("sparsity", "dims", "merge", "vote"))
    monkeypatch.setattr(_ReadsMerge, "select", lambda self, ctx, inputs: MaskSelection())
    assert select_cell(resolve(cfg)).inputs.merge == MergeRule("vote", 0.5, True)  # declared: accepted


def test_the_view_records_nested_paths_and_unidentified_names_them():
    cfg = {"calib": {"n": 4, "batch_size": 2}, "seed": 3, "sparsity": 0.2}
    view = ConfigView(cfg)
    assert view["calib"]["n"] == 4 and view.get("seed") == 3 and dict(view["calib"]) == cfg["calib"]
    assert view.reads == {"calib.n", "calib.batch_size", "seed"}
    seeded, unseeded = METHODS.get("random"), METHODS.get("magnitude")
    effective = {"calib": {"n": 4}, "seed": 0, "sparsity": 0.2}
    assert unidentified({"calib.n", "calib.batch_size", "sparsity"}, effective, seeded) == []  # batch size: how
    assert unidentified({"seed"}, effective, unseeded) == ["seed"]  # recorded at seed 0: a read is a bug
    assert unidentified({"mask.scope"}, effective, seeded) == ["mask.scope"]
    with pytest.raises(DietConfigError, match="mask.scope"):
        check_reads({"mask.scope"}, effective, seeded)


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
