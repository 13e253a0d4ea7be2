"""experiments.check_shared_docs: two records of one model on different documents agree on the shared ones."""

from __future__ import annotations

from test_tables import PAPER7, make_record, same, write

from experiments.check_shared_docs import main


def with_ids(record: dict, task: str, ids: list[int], outcomes: str) -> dict:
    record["tasks"][task].update(doc_ids=ids, outcomes=outcomes, docs_sha256="d")
    return record


def test_shared_documents_must_agree(tmp_path, capsys):
    full = make_record("dense", 0.0, same(0.5), limit=None, outcomes={t: "0110" for t in PAPER7})
    sample = with_ids(make_record("dense", 0.0, {"rte": (0.5, 0.1)}, limit=2, documents="random2s0"),
                      "rte", [3, 1], "01")
    paths = [write(tmp_path, full), write(tmp_path, sample)]
    assert main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "| rte | 4 | 2 | 2 | 0 |" in out and "1 task(s): 0 with" in out

    with_ids(sample, "rte", [3, 1], "11")  # document 3 scored 0 on the full split
    assert main([str(paths[0]), str(write(tmp_path, sample, suffix="__b"))]) == 1
    assert "| rte | 4 | 2 | 2 | 1 |" in capsys.readouterr().out


def test_records_of_different_models_are_refused(tmp_path, capsys):
    dense = write(tmp_path, make_record("dense", 0.0, same(0.5), outcomes={t: "01" for t in PAPER7}))
    diet = write(tmp_path, make_record("diet", 0.2, same(0.4), outcomes={t: "01" for t in PAPER7},
                                       mask={"mask_hash": "x", "num_tasks": 7}))
    assert main([str(dense), str(diet)]) == 2
    assert "not the same pruned model" in capsys.readouterr().out
