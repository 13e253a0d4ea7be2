"""eval.chunk_docs: a task scored N documents at a time, each chunk kept as it finishes, gives the summary
the task scored at once gives (per document exactly; aggregates up to summation order), and an interrupted
cell resumes at its next chunk."""

from __future__ import annotations

import math
import statistics

import pytest

from conftest import compose_config
from diet.config.identity import config_hash, effective_config
from diet.errors import DietConfigError
from diet.eval import evaluate as evaluation
from diet.eval.chunks import aggregate_rows, mean_aggregated
from diet.eval.tasks import build_tasks
from diet.run.pipeline import run_cell
from diet.run.task_results import PARTIAL_DIR

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=6", "eval.limit=12", "wandb.mode=disabled",
        "method=diet", "sparsity=0.2", "eval.by_task=true"]
# a mean of n values in [0, 1] and its standard error, summed in another order: a few ulps of the result
SUM_ORDER_TOL = 64 * 2.0 ** -52


def run(tmp_path, *overrides):
    return run_cell(compose_config([*TINY, f"results_dir={tmp_path / 'records'}", *overrides]))[0]


def assert_same_summary(chunked: dict, whole: dict) -> None:
    """Every document's outcome, the documents, their count and ids identical; every aggregate equal up to
    the order its terms were summed in."""
    for key in ("outcomes", "docs_sha256", "n", "metric", "split_docs", "doc_ids"):
        assert chunked.get(key) == whole.get(key), key
    numbers = {key for key, value in whole.items() if isinstance(value, float)}
    assert numbers and numbers == {key for key, value in chunked.items() if isinstance(value, float)}
    for key in numbers:
        assert chunked[key] == pytest.approx(whole[key], rel=SUM_ORDER_TOL, abs=SUM_ORDER_TOL), key


def counting_harness(monkeypatch, interrupt_on_call: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Record (task, documents) of every chunk scored; raise KeyboardInterrupt (a session's end) on one call."""
    original, calls = evaluation.run_harness, []

    def run_harness(model, tokenizer, tasks, data_dir, settings, *args, **kwargs):
        calls.append((tasks[0], tuple(settings.only_docs[tasks[0]])))
        if len(calls) == interrupt_on_call:
            raise KeyboardInterrupt
        return original(model, tokenizer, tasks, data_dir, settings, *args, **kwargs)

    monkeypatch.setattr(evaluation, "run_harness", run_harness)
    return calls


def test_chunk_docs_is_not_part_of_the_identity_needs_by_task_and_must_be_positive():
    tasks = ["arc_easy", "rte"]
    assert config_hash(effective_config(compose_config([*TINY, "eval.chunk_docs=5"]), tasks)) == \
        config_hash(effective_config(compose_config(TINY), tasks))
    with pytest.raises(DietConfigError, match="eval.chunk_docs=5 .*eval.by_task=true"):
        run_cell(compose_config([*TINY, "eval.by_task=false", "eval.chunk_docs=5"]))
    with pytest.raises(DietConfigError, match="eval.chunk_docs"):
        run_cell(compose_config([*TINY, "eval.chunk_docs=0"]))


def test_chunks_score_every_document_as_the_task_at_once(tmp_path, isolated_cache, monkeypatch):
    whole = run(tmp_path / "whole")
    calls = counting_harness(monkeypatch)
    chunked = run(tmp_path / "chunked", "eval.chunk_docs=5")
    assert [len(ids) for _, ids in calls] == [5, 5, 2, 5, 5, 2]  # 12 random documents per task, 5 at a time
    for task in ("arc_easy", "rte"):
        assert sorted(i for t, ids in calls if t == task for i in ids) == whole["tasks"][task]["doc_ids"]
        assert_same_summary(chunked["tasks"][task], whole["tasks"][task])
    assert chunked["eval"]["chunk_docs"] == 5 and "chunk_docs" not in whole["eval"]


def test_a_full_split_in_chunks_equals_the_full_split_at_once(tmp_path, isolated_cache):
    whole = run(tmp_path / "whole", "tasks=rte", "eval.limit=null", "method=dense")["tasks"]["rte"]
    chunked = run(tmp_path / "chunked", "tasks=rte", "eval.limit=null", "method=dense",
                  "eval.chunk_docs=100")["tasks"]["rte"]
    assert whole["n"] == 277 and "doc_ids" not in chunked
    assert_same_summary(chunked, whole)


def test_an_interrupted_task_resumes_at_its_next_chunk(tmp_path, isolated_cache, monkeypatch):
    counting_harness(monkeypatch, interrupt_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "eval.chunk_docs=5")
    records = tmp_path / "records"
    assert not list(records.glob("*.json"))  # no record of a half-evaluated cell
    assert [path.stem for path in (records / PARTIAL_DIR).glob("*/*.json")] == ["arc_easy.docs0-5"]
    calls = counting_harness(monkeypatch)
    resumed = run(tmp_path, "eval.chunk_docs=5")
    assert [(task, len(ids)) for task, ids in calls] == [("arc_easy", 5), ("arc_easy", 2),
                                                         ("rte", 5), ("rte", 5), ("rte", 2)]
    assert set(resumed["eval"]["reused_tasks"]) == {"arc_easy.docs0-5"}
    assert not any((records / PARTIAL_DIR).iterdir())  # gone with the written record
    fresh = run(tmp_path / "fresh", "eval.chunk_docs=5")
    for task in ("arc_easy", "rte"):
        assert_same_summary(resumed["tasks"][task], fresh["tasks"][task])


class MeanTask:
    """A task whose metrics lm-eval aggregates by mean (what chunking requires)."""

    def aggregation(self):
        from lm_eval.api.metrics import mean

        return {"acc": mean, "acc_norm": mean}


def test_aggregation_of_rows_is_the_textbook_mean_and_standard_error():
    acc = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    acc_norm = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    rows = [{"doc_id": i, "doc_hash": f"h{i}", "acc": a, "acc_norm": b} for i, (a, b) in enumerate(zip(acc, acc_norm))]
    results = aggregate_rows(MeanTask(), "hellaswag", rows)
    metrics = results["results"]["hellaswag"]
    for name, values in (("acc", acc), ("acc_norm", acc_norm)):
        assert metrics[f"{name},none"] == pytest.approx(sum(values) / len(values), rel=SUM_ORDER_TOL)
        assert metrics[f"{name}_stderr,none"] == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)),
                                                                rel=SUM_ORDER_TOL)
    assert results["n-samples"]["hellaswag"]["effective"] == 7
    summary = evaluation.summarize(results, ["hellaswag"], "acc_norm")["hellaswag"]
    assert summary["outcomes"] == "0011111" and summary["score"] == pytest.approx(5 / 7)


def test_only_mean_aggregated_tasks_are_chunked(offline_data):
    built = build_tasks(["arc_easy", "wikitext"], offline_data, with_train=False)
    assert mean_aggregated(built["arc_easy"])
    assert not mean_aggregated(built["wikitext"])  # word/byte-weighted perplexities: scored at once
