"""experiments.plan: the cells a sweep would run, the done ones marked, estimates from finished records."""

from __future__ import annotations

import sys

import pytest

from conftest import compose_config
from diet.run.cell import resolve
from diet.run.pipeline import run_cell
from experiments.plan import main, sweep_cells
from diet.run.plan import plan_cells

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4", "wandb.mode=disabled"]


def test_plan_lists_the_cells_marks_done_ones_and_estimates_from_records(tmp_path, isolated_cache):
    results = f"results_dir={tmp_path / 'records'}"
    sweep = [*TINY, results, "method=dense,diet", "sparsity=0.2,0.4"]
    cells = sweep_cells(sweep)
    assert [c for c, _ in cells] == [["method=dense", "sparsity=0.2"], ["method=dense", "sparsity=0.4"],
                                     ["method=diet", "sparsity=0.2"], ["method=diet", "sparsity=0.4"]]
    plan = plan_cells(cells, tmp_path / "records", "cpu")
    assert [cell.done for cell in plan.cells] == [None] * 4
    assert plan.cells[1].same_as == "method=dense sparsity=0.2"  # dense ignores the sparsity: one cell
    assert len(plan.todo) == 3 and all(cell.documents == 8 for cell in plan.cells)
    assert plan.total_estimate_s() == (0, 3)  # nothing measured yet: no guess

    dense, dense_path = run_cell(compose_config([*TINY, results, "method=dense"]))
    diet, _ = run_cell(compose_config([*TINY, results, "method=diet", "sparsity=0.2"]))
    plan = plan_cells(sweep_cells(sweep), tmp_path / "records", "cpu")
    assert plan.cells[0].done == dense_path and plan.cells[2].done is not None
    [todo] = plan.todo
    assert todo.overrides == ["method=diet", "sparsity=0.4"]
    timings = diet["timings"]
    expected = sum(v for k, v in timings.items() if k != "evaluate") + timings["evaluate"] / 8 * 8
    # a sum of len(timings) float64 stage times, in whatever order: each addition rounds once (relative eps)
    assert todo.estimate_s == pytest.approx(expected, rel=len(timings) * sys.float_info.epsilon, abs=0)
    assert "1 cpu record(s) of tiny_gemma2/diet" in todo.basis
    assert plan_cells(sweep_cells(sweep), tmp_path / "records", "cuda").todo[0].estimate_s is None  # other device


def test_plan_of_paper_main_and_bad_cells(capsys, tmp_path):
    assert main(["experiment=paper_main", f"results_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    # 2 models x 9 methods x 5 sparsities; dense is one cell per model at any sparsity
    assert "90 cells, 82 distinct: 0 done, 82 to run" in out
    assert "no finished cuda record of gemma2_2b/diet: run one cell, then plan again" in out
    assert main(["method=dense,diet", "sparsity=1.5", f"results_dir={tmp_path}"]) == 2
    assert "sparsity=1.5" in capsys.readouterr().err


def test_perplexity_cells_are_not_estimated_from_accuracy_records():
    from diet.run.plan import cost_basis, work_kind

    def record(tasks, evaluate):
        return {"timings": {"profile": 10.0, "evaluate": evaluate}, "model": {"name": "m", "device": "cpu"},
                "method": "diet",
                "tasks": {t: {"n": 10, "metric": "word_perplexity" if t == "wikitext" else "acc"} for t in tasks}}

    basis = cost_basis([record(["arc_easy", "rte"], 20.0), record(["wikitext"], 500.0)])
    assert basis[("m", "diet", False, "cpu", "accuracy")] == [(10.0, 1.0)]
    assert basis[("m", "diet", False, "cpu", "perplexity")] == [(10.0, 50.0)]
    assert work_kind(["arc_easy", "wikitext"]) == "perplexity" and work_kind(["boolq"]) == "accuracy"


def test_a_method_without_records_is_estimated_from_the_same_models_other_methods_of_its_kind():
    from diet.run.plan import cost_basis, measured_cost

    def record(method, tasks, evaluate):
        return {"timings": {"load_model": 5.0, "evaluate": evaluate}, "model": {"name": "m", "device": "cpu"},
                "method": method,
                "tasks": {t: {"n": 10, "metric": "word_perplexity" if t == "wikitext" else "acc"} for t in tasks}}

    basis = cost_basis([record("dense", ["wikitext"], 300.0), record("diet", ["arc_easy"], 20.0)])
    own, why = measured_cost(basis, "m", "diet", False, "cpu", "accuracy")
    assert own == [(5.0, 2.0)] and why == "1 cpu record(s) of m/diet"
    borrowed, why = measured_cost(basis, "m", "diet", False, "cpu", "perplexity")  # only dense has a perplexity record
    assert borrowed == [(5.0, 30.0)] and "estimated from 1 of m/dense" in why
    assert measured_cost(basis, "other", "diet", False, "cpu", "perplexity")[0] == []  # another model: nothing to go by


def test_committed_study_cells_keep_their_identity():
    """Today's config of the primary comparison still finds the committed records (dense; DIET and FLAP on C4
    at seeds 0-2), so no finished cell would rerun."""
    from conftest import REPO_ROOT, compose_config
    from diet.run.records import find_existing

    records = REPO_ROOT / "results" / "records"
    cells = [["method=dense"]] + [[f"seed={s}", "method=diet"] for s in (0, 1, 2)] + \
        [[f"seed={s}", "method=flap", "calib.source=c4"] for s in (0, 1, 2)]
    for overrides in cells:
        cfg = compose_config(["experiment=fair_study_local", *overrides])
        cfg_hash = resolve(cfg).config_hash
        assert find_existing(records, cfg["method"]["name"], "gemma3_270m", cfg_hash) is not None, overrides


def test_every_committed_record_has_the_identity_its_config_computes_today():
    """After the one-off migration (experiments/migrate_identity.py) every committed record is identified by
    its method's inputs; today's code computes that identity from its stored config (a record of an earlier
    method version excepted: superseded, it keeps the version it was made by), and its file bears the hash."""
    import json

    from conftest import REPO_ROOT
    from diet.methods import METHODS

    migrated = set(json.loads((REPO_ROOT / "results" / "migrations" / "identity_v2.json").read_text()).values())
    checked = 0
    for path in sorted((REPO_ROOT / "results" / "records").glob("*.json")):
        record = json.loads(path.read_text())
        assert record["config_hash"] in path.name, path.name
        # a record the migration rewrote keeps its old identity; one written since has only today's
        assert ("config_hash_v1" in record) == (record["config_hash"] in migrated), path.name
        if record["effective_config"]["method"]["version"] != METHODS.get(record["method"]).version:
            continue
        cell = resolve(record["config"])
        assert (cell.config_hash, cell.effective) == (record["config_hash"], record["effective_config"]), path.name
        checked += 1
    assert checked > 100
