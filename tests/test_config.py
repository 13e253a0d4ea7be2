"""Config validation on the REAL Hydra configs (every bad value is named with what is allowed), the
fast failure of the command line, and what the config hash does and does not depend on."""

from __future__ import annotations

import copy
import functools
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from diet.config.identity import config_hash, effective_config

from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.run.cell import resolve

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
PAPER7 = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def hydra_compose(*overrides: str) -> dict[str, Any]:
    """The resolved run config exactly as `python -m experiments.run <overrides>` builds it."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@functools.lru_cache(maxsize=None)
def _base(method: str) -> dict[str, Any]:
    return hydra_compose(f"method={method}", "model=tiny_gemma2", f"data.dir={DATA_DIR}")


def compose_cfg(*overrides: str, method: str = "diet") -> dict[str, Any]:
    """The real composed config (cached per method), then value overrides typed by Hydra's own
    command-line parser (`sparsity=abc` is the string 'abc', `method.vote.exact=1` the int 1). Composing
    takes ~0.1-0.3 s, so each distinct config is not recomposed; test_overrides_match_hydra checks
    that this gives what Hydra itself gives."""
    cfg = copy.deepcopy(_base(method))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        *parents, leaf = override.key_or_group.split(".")
        node = cfg
        for parent in parents:
            node = node[parent]
        assert override.is_add() or leaf in node, f"{override.key_or_group} is not in the config"
        node[leaf] = override.value()
    return cfg


def test_overrides_match_hydra():
    overrides = ("sparsity=abc", "tasks=[boolq,rte]", "method.vote.exact=1", "calib.with_answer=no", "eval.limit=null",
                 "+task_sets.mine=[rte]", "sparsity=nan")
    composed = hydra_compose("method=diet", "model=tiny_gemma2", f"data.dir={DATA_DIR}", *overrides[:-1])
    assert compose_cfg(*overrides[:-1]) == composed
    assert composed["sparsity"] == "abc" and composed["method"]["vote"]["exact"] == 1 and composed["calib"]["with_answer"] == "no"
    assert math.isnan(compose_cfg("sparsity=nan")["sparsity"])
    assert compose_cfg("sparsity=0.3", method="dense") == hydra_compose(
        "method=dense", "model=tiny_gemma2", f"data.dir={DATA_DIR}", "sparsity=0.3")


def test_real_config_is_valid():
    cfg = compose_cfg()
    assert cfg["method"] == {"name": "diet", "profile": {"stat": "mean_abs"},
                             "mask": {"scope": "layer", "min_keep_fraction": 0.05}, "merge": "vote",
                             "vote": {"threshold": 0.5, "exact": True}}
    assert cfg["model"]["name"] == "tiny_gemma2"
    facts = validate(cfg)
    assert facts.tasks == PAPER7
    assert facts.data_dir == DATA_DIR.resolve()
    assert facts.method.name == "diet"


# --------------------------------------------------------------------------- bad values

BAD_OVERRIDES = [
    (["sparsity=1.0"], r"^sparsity=1\.0 is outside the allowed range \[0\.0, 1\.0\)$"),
    (["sparsity=-0.1"], r"^sparsity=-0\.1 is outside the allowed range \[0\.0, 1\.0\)$"),
    (["sparsity=abc"], r"^sparsity='abc' is not a number: allowed \[0\.0, 1\.0\)$"),
    (["sparsity=true"], r"^sparsity=True is not a number: allowed \[0\.0, 1\.0\)$"),
    (["sparsity=nan"], r"^sparsity=nan is not a number: allowed \[0\.0, 1\.0\)$"),
    (["method.vote.threshold=0"], r"^method\.vote\.threshold=0 is outside the allowed range \(0\.0, 1\.0\]$"),
    (["method.vote.threshold=1.5"], r"^method\.vote\.threshold=1\.5 is outside the allowed range \(0\.0, 1\.0\]$"),
    (["method.mask.min_keep_fraction=1.5"], r"^method\.mask\.min_keep_fraction=1\.5 is outside the allowed range \[0\.0, 1\.0\]$"),
    (["calib.n=0"], r"^calib\.n=0 is not allowed: use an integer >= 1$"),
    (["calib.n=2.5"], r"^calib\.n=2\.5 is not allowed: use an integer >= 1$"),
    (["calib.batch_size=0"], r"^calib\.batch_size=0 is not allowed: use an integer >= 1$"),
    (["calib.max_length=-5"], r"^calib\.max_length=-5 is not allowed: use an integer >= 1$"),
    (["eval.limit=0"], r"^eval\.limit=0 is not allowed: use an integer >= 1 or null$"),
    (["eval.limit=ten"], r"^eval\.limit='ten' is not allowed: use an integer >= 1 or null$"),
    (["eval.batch_size=0"], r"^eval\.batch_size=0 is not allowed: use an integer >= 1$"),
    (["eval.max_length=0"], r"^eval\.max_length=0 is not allowed: use an integer >= 1 or null$"),
    # flags: 'no' from the command line is a (truthy) string, not false
    (["calib.with_answer=no"], r"^calib\.with_answer='no' is not allowed: use true or false$"),
    (["method.vote.exact=1"], r"^method\.vote\.exact=1 is not allowed: use true or false$"),
    (["model.add_bos_token=no"], r"^model\.add_bos_token='no' is not allowed: use true or false$"),
    (["seed=abc"], r"^seed='abc' is not allowed: use an integer$"),
    (["tasks=boolqq"], r"^unknown task 'boolqq': lm-eval knows no .*; nearest: boolq\b.*task sets: .*\bpaper7\b"),
    (["tasks=[boolqq,rte]"], r"^unknown task 'boolqq': lm-eval knows no task, group or tag of that name; nearest: boolq\b"),
    (["tasks=paper8"], r"^unknown task 'paper8': .*; nearest: paper7\b"),
    (["tasks=[]"], r"^tasks is empty: name a task set \(e\.g\. paper7\) or a list of tasks$"),
    (["tasks=[boolq,rte,boolq]"], r"^tasks lists a task twice: \['boolq', 'rte', 'boolq'\]$"),
    (["method.profile.stat=mean"], r"^unknown method\.profile\.stat 'mean': did you mean 'mean_sq'\? available: l2, mean_abs, mean_sq$"),
    (["method.profile.stat=max"], r"^unknown method\.profile\.stat 'max': available: l2, mean_abs, mean_sq$"),
    (["method.mask.scope=globl"], r"^unknown method\.mask\.scope 'globl': did you mean 'global'\? available: global, layer$"),
    (["method.merge=votes"], r"^unknown method\.merge 'votes': did you mean 'vote'\? available: intersection, mean, union, vote$"),
    (["wandb.mode=offlne"], r"^unknown wandb\.mode 'offlne': did you mean 'offline'\? available: disabled, offline, online$"),
    (["eval.metric=f1"], r"^eval\.metric='f1' is not allowed: use one of auto, acc, acc_norm$"),
    (["dims=attn"], r"^unknown dims 'attn': available: heads, hidden, kv_groups, mlp, mlp\+heads$"),
    (["model.source=hub"], r"^unknown model source 'hub': available: gguf_package, gguf_wheel_file, pretrained, tiny_random$"),
    (["calib.exclude=[boolqq]"], r"^unknown task 'boolqq': .*nearest: boolq\b"),
    (["tasks=[arc_easy,rte]", "calib.exclude=[boolq]"],
     r"^calib\.exclude=\['boolq'\] names \['boolq'\], which are not profiled anyway: the profiled tasks are "
     r"\['arc_easy', 'rte'\]$"),
    (["tasks=[rte]", "calib.exclude=[rte]"], r"^calib\.exclude=\['rte'\] leaves no task to profile \(profiled tasks: \['rte'\]\)$"),
    (["calib.tasks=paper8"], r"^unknown task 'paper8': .*; nearest: paper7\b"),
    (["data.dir=/nonexistent/diet-data"],
     r"^data dir '/nonexistent/diet-data' does not exist \(set data\.dir or DIET_DATA_DIR\)$"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES, ids=[o[0] for o, _ in BAD_OVERRIDES])
def test_bad_value_is_named(overrides, message):
    cfg = compose_cfg(*overrides)
    with pytest.raises(DietConfigError, match=message):
        validate(cfg)


def test_unknown_method_suggests_near_miss():
    from diet.methods import METHODS

    available = ", ".join(METHODS.names())
    assert {"dense", "diet"} <= set(METHODS.names())
    cfg = compose_cfg()
    cfg["method"]["name"] = "dieet"  # Hydra itself rejects method=dieet: no such config group file
    with pytest.raises(DietConfigError, match=rf"^unknown method 'dieet': did you mean 'diet'\? available: {re.escape(available)}$"):
        validate(cfg)
    cfg["method"]["name"] = "zzz"
    with pytest.raises(DietConfigError, match=rf"^unknown method 'zzz': available: {re.escape(available)}$"):
        validate(cfg)


def test_unknown_task_set_from_custom_sets():
    cfg = compose_cfg("tasks=mine", "+task_sets.mine=[boolq,rte]")
    assert validate(cfg).tasks == ["boolq", "rte"]
    cfg = compose_cfg("tasks=mien", "+task_sets.mine=[boolq,rte]")
    with pytest.raises(DietConfigError, match=r"^unknown task 'mien': .*; nearest: mine\b"):
        validate(cfg)
    cfg = compose_cfg("tasks=mine", "+task_sets.mine=[boolq,rtee]")
    with pytest.raises(DietConfigError, match=r"^unknown task 'rtee': .*; nearest: rte\b"):
        validate(cfg)


def make_data_dir(root: Path, files: list[str]) -> Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return root.resolve()


def test_missing_train_file_names_the_path(tmp_path):
    data = make_data_dir(tmp_path / "data", ["eval/arc_easy_test.jsonl", "eval/rte_validation.jsonl",
                                             "train/arc_easy_train.jsonl"])
    cfg = compose_cfg("tasks=[arc_easy,rte]", f"data.dir={data}")
    expected = str(data / "train" / "rte_train.jsonl")
    with pytest.raises(DietConfigError, match="^missing train data for task 'rte': expected file " + re.escape(repr(expected))):
        validate(cfg)
    # dense needs no calibration data: the same folder is fine for it
    dense = compose_cfg("tasks=[arc_easy,rte]", f"data.dir={data}", method="dense")
    assert validate(dense).tasks == ["arc_easy", "rte"]


def test_missing_eval_file_names_the_path(tmp_path):
    data = make_data_dir(tmp_path / "data", ["eval/arc_easy_validation.jsonl"])  # wrong split name
    cfg = compose_cfg("tasks=arc_easy", f"data.dir={data}", method="dense")
    expected = str(data / "eval" / "arc_easy_test.jsonl")
    with pytest.raises(
        DietConfigError,
        match="^missing eval data for task 'arc_easy': expected file " + re.escape(repr(expected))
        + re.escape(" (layout: <data.dir>/eval/<task>_<split>.jsonl, <data.dir>/train/<task>_train.jsonl)") + "$",
    ):
        validate(cfg)


def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("DIET_DATA_DIR", "/nonexistent/from-env")
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=["model=tiny_gemma2"]), resolve=True)
    assert cfg["data"]["dir"] == "/nonexistent/from-env"
    with pytest.raises(DietConfigError, match=r"^data dir '/nonexistent/from-env' does not exist"):
        validate(cfg)


def test_dense_ignores_pruning_options():
    cfg = compose_cfg("sparsity=1.5", "calib.n=0", method="dense")
    assert validate(cfg).method.name == "dense"


@pytest.mark.parametrize(("method", "override", "message"), [
    ("flap", "+method.vote.threshold=0.7", r"^method\.vote is not an option of method 'flap': allowed "
                                           r"method\.allocation, method\.bias, method\.min_keep_fraction$"),
    ("dense", "+method.merge=mean", r"^method\.merge is not an option of method 'dense': allowed none$"),
    ("wanda_sp", "+method.profile.stat=l2", r"^method\.profile is not an option of method 'wanda_sp': allowed none$"),
    ("diet", "+method.vote.rule=mean", r"^method\.vote\.rule is not an option: allowed method\.vote\.threshold, "
                                       r"method\.vote\.exact \(the merge rule is method\.merge\)$"),
    ("diet", "+method.vote.treshold=0.3", r"^method\.vote\.treshold is not an option: allowed method\.vote\.rule, "),
    ("flap", "method.min_keep_fraction=1.5", r"^method\.min_keep_fraction=1\.5 is outside the allowed range"),
])
def test_a_methods_section_takes_only_its_own_protocol(method, override, message):
    """DIET's vote is DIET's: another method given it fails naming what it takes, instead of ignoring it."""
    with pytest.raises(DietConfigError, match=message):
        validate(hydra_compose("model=tiny_gemma2", f"data.dir={DATA_DIR}", f"method={method}", override))


# --------------------------------------------------------------------------- the command line

def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIET_DATA_DIR": str(DATA_DIR), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_unknown_model_lists_options(tmp_path):
    result = run_cli("model=gemma3_27Om", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Could not find 'model/gemma3_27Om'" in output
    assert "Available options in 'model':" in output
    for option in ("custom", "gemma2_2b", "gemma2_9b", "gemma3_270m", "smollm2_135m", "tiny_gemma2"):
        assert re.search(rf"^\s+{option}$", output, flags=re.MULTILINE), option


def test_cli_bad_sparsity_exits_2(tmp_path):
    result = run_cli("method=diet", "sparsity=1.5", "model=tiny_gemma2", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "configuration error: sparsity=1.5 is outside the allowed range [0.0, 1.0)" in output
    assert "load_model" not in output  # failed before any model was loaded


@pytest.mark.parametrize("method", ["diet", "dense"])
def test_cli_missing_calib_source_exits_2_whatever_the_method(method, tmp_path):
    """DIET and dense never read calib.source, but a typo'd path is a mistake in any cell of a sweep."""
    missing = tmp_path / "nonexistent.txt"
    result = run_cli(f"method={method}", f"calib.source={missing}", "model=tiny_gemma2", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"calib.source='{missing}': no such file" in output
    assert "load_model" not in output  # failed before any model was loaded


def test_cli_cuda_device_that_is_not_there_exits_2(tmp_path):
    """cuda:99: not there without a GPU, nor on any real node (the message differs, the exit code does not)."""
    result = run_cli("model.device=cuda:99", "model=tiny_gemma2", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "configuration error: model.device='cuda:99'" in output and "load_model" not in output


# --------------------------------------------------------------------------- config identity

def cell_hash(*overrides: str, method: str = "diet") -> str:
    cfg = compose_cfg(*overrides, method=method)
    return resolve(cfg).config_hash


def test_hash_format_and_determinism():
    digest = cell_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert cell_hash() == digest


def test_dense_hash_ignores_sparsity():
    assert cell_hash("sparsity=0.2", method="dense") == cell_hash("sparsity=0.4", method="dense")
    assert cell_hash("calib.n=10", "calib.exclude_bos=true", method="dense") == cell_hash(method="dense")


def test_diet_hash_depends_on_pruning_options():
    base = cell_hash("sparsity=0.2")
    assert cell_hash("sparsity=0.4") != base
    assert cell_hash("sparsity=0.2", "calib.n=50") != base
    assert cell_hash("sparsity=0.2", "method.merge=union") != base
    assert cell_hash("sparsity=0.2", "method.profile.stat=l2") != base
    assert cell_hash("sparsity=0.2", "method.vote.threshold=0.7") != base
    assert cell_hash("sparsity=0.2", method="dense") != base


def test_hash_ignores_locations_and_tracking(tmp_path):
    for method in ("diet", "dense"):
        base = cell_hash(method=method)
        assert cell_hash("results_dir=/somewhere/else", method=method) == base
        assert cell_hash("wandb.mode=disabled", method=method) == base
        assert cell_hash("wandb.project=other", "force=true", method=method) == base
        assert cell_hash("eval.batch_size=32", "model.device=cuda", method=method) == base
        # a different folder holding the same offline data is the same cell
        data = make_data_dir(tmp_path / method, [f"{kind}/{task}_{split}.jsonl" for task, split in
                                                 (("boolq", "validation"), ("rte", "validation"),
                                                  ("hellaswag", "validation"), ("winogrande", "validation"),
                                                  ("arc_easy", "test"), ("arc_challenge", "test"),
                                                  ("openbookqa", "test")) for kind in ("eval",)]
                             + [f"train/{task}_train.jsonl" for task in PAPER7])
        assert cell_hash(f"data.dir={data}", method=method) == base


def test_hash_depends_on_what_every_cell_uses():
    base = cell_hash(method="dense")
    # the seed changes a cell only where it can change the result: dense and magnitude are unseeded
    assert cell_hash("seed=1", method="dense") == base
    assert cell_hash("seed=1", method="magnitude") == cell_hash(method="magnitude")
    assert cell_hash("seed=1", method="random") != cell_hash(method="random")
    assert cell_hash("seed=1", method="diet") != cell_hash(method="diet")
    assert cell_hash("tasks=quick", method="dense") != base
    assert cell_hash("eval.limit=10", method="dense") != base
    assert cell_hash("model.add_bos_token=false", method="dense") != base


# --------------------------------------------------------------------------- profiled tasks (calib.tasks / exclude)


def test_profiled_tasks_default_subset_and_leave_one_out():
    assert validate(compose_cfg()).calib_tasks == PAPER7
    assert validate(compose_cfg("calib.exclude=[boolq]")).calib_tasks == PAPER7[1:]
    assert validate(compose_cfg("calib.exclude=rte")).calib_tasks == [t for t in PAPER7 if t != "rte"]
    transfer = validate(compose_cfg("tasks=[arc_easy,openbookqa]", "calib.tasks=[boolq,rte]"))
    assert transfer.tasks == ["arc_easy", "openbookqa"] and transfer.calib_tasks == ["boolq", "rte"]
    assert validate(compose_cfg("calib.exclude=[boolq]", method="dense")).calib_tasks == []  # no profiling


def test_oracle_needs_every_evaluated_task_profiled():
    with pytest.raises(DietConfigError, match="^method 'diet_oracle' evaluates each task with its own profile"):
        validate(compose_cfg("calib.exclude=[boolq]", method="diet_oracle"))


def test_profiled_tasks_enter_the_hash_only_when_they_differ():
    base = cell_hash()
    assert cell_hash("calib.tasks=paper7") == base == cell_hash(f"calib.tasks=[{','.join(PAPER7)}]")
    left_out = cell_hash("calib.exclude=[boolq]")
    assert left_out != base and left_out != cell_hash("calib.exclude=[rte]")
    assert cell_hash("calib.tasks=[rte,boolq]") != cell_hash("calib.tasks=[boolq,rte]") != base  # listed order, as tasks
    assert cell_hash("calib.exclude=[boolq]", method="dense") == cell_hash(method="dense")
    assert cell_hash("calib.exclude=[boolq]", method="random") == cell_hash(method="random")


# --------------------------------------------------------------------------- experiment files


def sweep_cells(experiment: str, *extra: str) -> list[list[str]]:
    """The override lists of every cell of conf/experiment/<experiment>.yaml (its sweeper params)."""
    import itertools

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}", *extra],
                      return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(cell) for cell in itertools.product(*axes)]


EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))
# every experiment as written, and each one that is not CPU-only (*_local) on this CPU (conf/target/local.yaml)
TARGETED = [(name, None) for name in EXPERIMENTS] + [(name, "local") for name in EXPERIMENTS
                                                      if not name.endswith("_local")]


@pytest.mark.parametrize("experiment, target", TARGETED)
def test_every_experiment_cell_is_valid(experiment, target):
    extra = [f"target={target}"] if target else []
    cells = sweep_cells(experiment, *extra)
    assert cells, f"{experiment} sweeps nothing"
    if target == "local":  # the same cells on the embedded model, a random 200 documents per task
        for cell in cells:
            cfg = hydra_compose(f"experiment={experiment}", *extra, *cell, f"data.dir={DATA_DIR}")
            assert cfg["model"]["name"] == "gemma3_270m" and cfg["eval"]["limit"] == 200
            assert cfg["eval"]["docs"] == "random"
        validate(cfg)
        return  # the cells' distinctness is the experiment's own, checked without a target
    hashes = set()
    for cell in cells:
        cfg = hydra_compose(f"experiment={experiment}", *extra, *cell, f"data.dir={DATA_DIR}")
        hashes.add(resolve(cfg).config_hash)
    # every cell is its own result, except where a method ignores the option swept: dense ignores the
    # sparsity, unseeded methods the seed, methods without generic calibration calib.source
    from diet.methods import METHODS

    def ignored(cell: list[str], option: str) -> bool:
        name = next((o.split("=", 1)[1] for o in cell if o.startswith("method=")), None)
        method = METHODS.get(name) if name else None
        return method is not None and (
            (option.startswith("sparsity=") and not method.prunes)
            or (option.startswith("seed=") and not method.seeded)
            or (option.startswith("calib.source=") and not method.calib_source)
            or (option.startswith("calib.exclude=") and not method.calibrates()))

    distinct = {tuple(o for o in cell if not ignored(cell, o)) for cell in cells}
    assert len(hashes) == len(distinct)


def test_exclude_bos_enters_the_identity_only_when_set():
    def hashes(extra):
        out = {}
        for method in ("dense", "diet", "flap", "wanda_sp"):
            cfg = hydra_compose("model=tiny_gemma2", "tasks=[arc_easy,rte]", f"method={method}", *extra)
            out[method] = config_hash(effective_config(cfg, ["arc_easy", "rte"]))
        return out

    default, explicit, excluded = hashes([]), hashes(["calib.exclude_bos=false"]), hashes(["calib.exclude_bos=true"])
    assert default == explicit  # the default keeps every existing cell's hash
    assert excluded["dense"] == default["dense"]  # dense profiles nothing
    assert all(excluded[m] != default[m] for m in ("diet", "flap", "wanda_sp"))
    with pytest.raises(DietConfigError, match="calib.exclude_bos='no' is not allowed"):
        validate(hydra_compose("model=tiny_gemma2", "tasks=[arc_easy]", f"data.dir={DATA_DIR}", "method=diet",
                               "calib.exclude_bos=no"))


# --------------------------------------------------------------------------- typed options (diet.bind)


def test_every_shipped_method_yaml_binds_and_writes_its_classes_defaults():
    """conf/method/<name>.yaml holds each key the method takes (its Options, its shared inputs such as DIET's
    vote) at the default its class states, so the file users read is what a run gets without overrides."""
    import dataclasses

    import yaml

    from diet.methods import METHODS
    from diet.methods.inputs import read_section_inputs, section_keys

    def defaults(instance):
        return {f.name: getattr(type(instance)(), f.name) for f in dataclasses.fields(instance)}

    for path in sorted((REPO_ROOT / "conf" / "method").glob("*.yaml")):
        section = yaml.safe_load(path.read_text())
        method = METHODS.get(section["name"])
        method.check(section)  # raises on an unknown key or a wrong value
        options = method.options(section)
        assert vars(options) == defaults(options), path.name
        for name, value in read_section_inputs(method, section).items():
            assert vars(value) == defaults(value), f"{path.name}: {name}"
        option_names = [f.name for f in dataclasses.fields(method.Options)]
        assert set(section) - {"name"} == set(option_names) | set(section_keys(method)), path.name


@pytest.mark.parametrize("overrides, message", [
    (["method=flap", "+method.alocation=layer"], r"^method\.alocation is not an option of method 'flap': allowed "
                                                 r"method\.allocation, method\.bias, method\.min_keep_fraction$"),
    (["method=flap", "method.bias=1"], r"^method\.bias=1 is not allowed: use true or false$"),
    (["method=diet", "+method.bias=true"], r"^method\.bias is not an option of method 'diet': allowed "
                                           r"method\.profile, method\.mask, method\.merge, method\.vote$"),
    (["+export.padd=true"], r"^export\.padd is not an option: allowed export\.pad, export\.wandb_artifact$"),
    (["+calib.window=8"], r"^calib\.window is not an option: allowed calib\.n, calib\.tasks, .*calib\.exclude_bos$"),
    (["export.wandb_artifact=yes"], r"^export\.wandb_artifact='yes' is not allowed: use true or false$"),
])
def test_typed_sections_name_the_bad_key_and_what_is_allowed(overrides, message):
    with pytest.raises(DietConfigError, match=message):
        validate(hydra_compose("model=tiny_gemma2", f"data.dir={DATA_DIR}", *overrides))


def test_typed_sections_state_the_defaults_conf_config_yaml_writes():
    import dataclasses

    import yaml

    from diet.config.sections import SECTIONS

    written = yaml.safe_load((REPO_ROOT / "conf" / "config.yaml").read_text())
    interpolated = {("data", "dir"), ("wandb", "dir")}  # ${oc.env:...}: the class holds the fallback
    for name, options_type in SECTIONS.items():
        fields = dataclasses.fields(options_type)
        assert [f.name for f in fields] == list(written[name]), name  # same options, same order
        for f in fields:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if (name, f.name) not in interpolated:
                assert default == written[name][f.name], f"{name}.{f.name}"


def test_a_stored_config_without_eval_docs_meant_the_first_documents():
    from diet.config.sections import eval_options

    assert eval_options({"eval": {"limit": 200}}).docs == "first"
    assert eval_options({"eval": {"limit": 200, "docs": "random"}}).docs == "random"
    assert eval_options(compose_cfg("eval.limit=200")).docs == "random"  # today's default


def test_a_method_that_prunes_nothing_reads_no_pruning_section():
    from diet.config.sections import run_options

    options = run_options(compose_cfg("calib.n=0", method="dense"), prunes=False)
    assert options.calib is None and options.eval.limit is None
    with pytest.raises(DietConfigError, match=r"^calib\.window is not an option"):
        run_options(compose_cfg("+calib.window=8", method="dense"), prunes=False)  # names are still checked
