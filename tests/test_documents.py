"""Evaluated documents: seeded random samples (the default with a limit), first-N, the full split."""

from __future__ import annotations

import pytest

from conftest import compose_config
from diet.config.identity import config_hash, effective_config
from diet.config.validate import document_selection
from diet.eval.documents import DocumentSelection
from diet.errors import DietConfigError
from diet.run.pipeline import run_cell

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=6", "wandb.mode=disabled"]


def run(tmp_path, *overrides):
    return run_cell(compose_config([*TINY, f"results_dir={tmp_path / 'records'}", *overrides]))[0]


def test_random_sample_is_seeded_sorted_and_per_task():
    sample = DocumentSelection(limit=50, docs="random", seed=0)
    ids = sample.indices("hellaswag", 10042)
    assert ids == sorted(ids) and len(set(ids)) == 50 and max(ids) < 10042
    assert ids == DocumentSelection(50, "random", 0).indices("hellaswag", 10042)  # reproducible
    assert ids != DocumentSelection(50, "random", 1).indices("hellaswag", 10042)  # the seed matters
    assert ids != sample.indices("boolq", 10042)  # tasks draw independently
    assert max(ids) > 3243  # not confined to HellaSwag's ActivityNet head, as the first 50 would be
    assert sample.indices("rte", 50) is None and sample.indices("rte", 30) is None  # whole split
    assert DocumentSelection(50, "first").indices("hellaswag", 10042) is None  # lm-eval's own limit
    assert DocumentSelection(None).label() == "all" and sample.label() == "random50s0"


@pytest.mark.parametrize(("option", "value", "match"), [("eval.docs", "shuffled", "eval.docs='shuffled'"),
                                                         ("eval.docs_seed", "abc", "eval.docs_seed='abc'")])
def test_bad_document_options_fail_fast(option, value, match):
    with pytest.raises(DietConfigError, match=match):
        document_selection(compose_config([f"{option}={value}", "eval.limit=5"]))


def identity(*overrides):
    cfg = compose_config(["method=dense", *overrides])  # a later method=... override wins
    return effective_config(cfg, ["boolq"]), config_hash(effective_config(cfg, ["boolq"]))


def test_identity_names_a_random_sample_and_keeps_old_cells():
    first, first_hash = identity("eval.limit=200", "eval.docs=first")
    assert "docs" not in first["eval"]  # the identity first-N cells had before eval.docs existed
    random_cell, random_hash = identity("eval.limit=200")
    assert random_cell["eval"]["docs"] == {"random_seed": 0} and random_hash != first_hash
    assert identity("eval.limit=200", "eval.docs_seed=1")[1] != random_hash
    full, full_hash = identity()
    assert "docs" not in full["eval"] and identity("eval.docs=first")[1] == full_hash  # all documents: docs moot
    # the calibration seed is part of the inputs of the methods it can change; dense at any seed is one cell
    assert identity("eval.limit=200", "seed=3")[1] == random_hash
    assert identity("eval.limit=200", "seed=3")[0]["method"]["inputs"] == {}
    diet_seeds = {identity("eval.limit=200", "method=diet", f"seed={seed}")[1] for seed in (0, 3)}
    assert len(diet_seeds) == 2


def test_two_methods_score_the_same_random_documents(tmp_path, isolated_cache):
    dense = run(tmp_path, "method=dense", "eval.limit=7")
    pruned = run(tmp_path, "method=diet", "sparsity=0.25", "eval.limit=7", "seed=1")
    assert pruned["eval"]["documents"] == dense["eval"]["documents"] == "random7s0"
    for task in ("arc_easy", "rte"):
        assert dense["tasks"][task]["doc_ids"] == pruned["tasks"][task]["doc_ids"]  # calibration seed: no effect
        assert dense["tasks"][task]["docs_sha256"] == pruned["tasks"][task]["docs_sha256"]
        assert len(dense["tasks"][task]["outcomes"]) == dense["tasks"][task]["n"] == 7
        assert dense["tasks"][task]["doc_ids"] != list(range(7))
    assert dense["tasks"]["rte"]["split_docs"] == 277
    other = run(tmp_path, "method=dense", "eval.limit=7", "eval.docs_seed=5")
    assert other["tasks"]["rte"]["doc_ids"] != dense["tasks"]["rte"]["doc_ids"]


def test_a_sample_scores_each_document_as_the_full_split_does(tmp_path, isolated_cache):
    """Per document, the outcome on a random sample equals the outcome of that document in a full-split
    run: the sample changes which documents are scored, never how."""
    sample = run(tmp_path, "method=dense", "tasks=rte", "eval.limit=40")["tasks"]["rte"]
    full = run(tmp_path, "method=dense", "tasks=rte")["tasks"]["rte"]
    assert full["n"] == 277 and "doc_ids" not in full
    assert sample["outcomes"] == "".join(full["outcomes"][i] for i in sample["doc_ids"])
    first = run(tmp_path, "method=dense", "tasks=rte", "eval.limit=40", "eval.docs=first")["tasks"]["rte"]
    assert "doc_ids" not in first and first["outcomes"] == full["outcomes"][:40]
