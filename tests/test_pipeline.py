"""End to end on the tiny Gemma-2 through the real Hydra configs: records, resume, caching, sparsity 0."""

from __future__ import annotations

import json

import pytest

from conftest import compose_config
from diet.run.pipeline import run_cell
from diet.run.records import iter_records

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=6", "calib.n=6", "wandb.mode=disabled"]


def run(tmp_path, *overrides):
    return run_cell(compose_config([*TINY, f"results_dir={tmp_path / 'records'}", *overrides]))


def test_diet_record_reports_what_it_did(tmp_path, isolated_cache):
    record, path = run(tmp_path, "method=diet", "sparsity=0.25")
    assert path.exists() and json.loads(path.read_text())["config_hash"] == record["config_hash"]
    assert record["sparsity"]["actual"] == pytest.approx(0.25)  # 128 channels/layer -> 96 kept exactly
    assert record["mask"]["kept_per_layer"] == [96, 96]
    removed = 2 * 32 * 3 * 64  # layers x channels x (gate, up, down) x hidden
    assert record["parameters"]["before"]["total"] - record["parameters"]["after"]["total"] == removed
    assert set(record["tasks"]) == {"arc_easy", "rte"} and all(m["n"] == 6 for m in record["tasks"].values())
    assert record["average"]["score"] == pytest.approx(sum(m["score"] for m in record["tasks"].values()) / 2)
    assert record["eval"]["bos_prepended"] is True and record["eval"]["num_fewshot"] == 0
    assert set(record["timings"]) >= {"load_model", "profile", "mask", "prune", "evaluate"}
    assert record["versions"]["lm_eval"] == "0.4.13" and record["seed"] == 0
    assert record["notes"] == {"profiles_cached": 0, "profiles_computed": 2}
    for task, metrics in record["tasks"].items():  # per-document outcomes of the headline metric
        outcomes = metrics["outcomes"]
        assert len(outcomes) == 6 and set(outcomes) <= {"0", "1"} and len(metrics["docs_sha256"]) == 64
        assert outcomes.count("1") / 6 == pytest.approx(metrics["score"]), task


def test_rerun_skips_finished_cell_and_force_keeps_both(tmp_path, isolated_cache):
    first, path = run(tmp_path, "method=dense")
    again, same_path = run(tmp_path, "method=dense")
    assert again is None and same_path == path
    forced, forced_path = run(tmp_path, "method=dense", "force=true")
    assert forced_path != path and path.exists() and forced_path.exists()
    assert forced["tasks"] == first["tasks"]  # deterministic
    assert len(list(iter_records(tmp_path / "records"))) == 2


def test_second_run_reuses_cached_profiles(tmp_path, isolated_cache):
    first, _ = run(tmp_path, "method=diet", "sparsity=0.25")
    second, _ = run(tmp_path, "method=diet", "sparsity=0.5", "method.vote.threshold=1.0")
    assert second["notes"] == {"profiles_cached": 2, "profiles_computed": 0}
    assert second["sparsity"]["actual"] == pytest.approx(0.5)


def test_sparsity_zero_gives_dense_metrics_exactly(tmp_path, isolated_cache):
    dense, _ = run(tmp_path, "method=dense")
    pruned, _ = run(tmp_path, "method=diet", "sparsity=0.0")
    assert pruned["sparsity"]["actual"] == 0.0
    assert pruned["tasks"] == dense["tasks"]


def test_same_seed_same_mask_and_metrics(tmp_path, isolated_cache):
    first, _ = run(tmp_path, "method=diet", "sparsity=0.3")
    second, _ = run(tmp_path, "method=diet", "sparsity=0.3", "force=true")
    assert first["mask"]["mask_hash"] == second["mask"]["mask_hash"]
    assert first["tasks"] == second["tasks"]
    other_seed, _ = run(tmp_path, "method=diet", "sparsity=0.3", "seed=1")
    assert other_seed["mask"]["mask_hash"] != first["mask"]["mask_hash"]  # other calibration draw


def test_leave_one_task_out_profiles_only_the_rest(tmp_path, isolated_cache):
    record, _ = run(tmp_path, "method=diet", "sparsity=0.25", "calib.exclude=[rte]")
    assert record["calib_tasks"] == ["arc_easy"] and set(record["tasks"]) == {"arc_easy", "rte"}
    assert record["notes"] == {"profiles_cached": 0, "profiles_computed": 1}
    assert record["mask"]["num_tasks"] == 1  # one task mask voted: arc_easy's
    assert record["effective_config"]["method"]["inputs"]["calibration"]["tasks"] == ["arc_easy"]
    # the single-task mask is arc_easy's own: the same as profiling arc_easy alone for any evaluation
    transfer, _ = run(tmp_path, "method=diet", "sparsity=0.25", "calib.tasks=[arc_easy]", "tasks=[rte]")
    assert transfer["mask"]["mask_hash"] == record["mask"]["mask_hash"]
    assert transfer["notes"] == {"profiles_cached": 1, "profiles_computed": 0}


def test_every_committed_record_matches_the_record_schema():
    """diet.run.record_schema declares what run_cell writes (run_cell refuses to write a record that does
    not match); every committed record conforms, and a broken one is caught."""
    import copy
    import json

    from conftest import REPO_ROOT
    from diet.run.record_schema import problems

    paths = sorted((REPO_ROOT / "results" / "records").glob("*.json"))
    for path in paths:
        assert problems(json.loads(path.read_text())) == [], path.name
    if paths:
        broken = json.loads(paths[0].read_text())
        task = next(iter(broken["tasks"]))
        wrong = copy.deepcopy(broken)
        del wrong["config_hash"]
        wrong["tasks"][task]["score"] = "0.5"
        assert problems(wrong) == ["config_hash: missing", f"tasks.{task}.score: str '0.5' is not float | int"]
