"""experiments.check_rerun: a stored cell re-scored on a subset of its documents matches per document, and a
changed stored outcome is caught and named."""

from __future__ import annotations

import json

from conftest import compose_config
from diet.run.pipeline import run_cell
from diet.run.recheck import document_subset, record_documents
from experiments import check_rerun

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=6", "eval.limit=12", "wandb.mode=disabled",
        "sparsity=0.2"]


def test_rerun_matches_each_method_and_catches_a_changed_outcome(tmp_path, isolated_cache, capsys):
    records = tmp_path / "records"
    for method in ("dense", "diet"):
        run_cell(compose_config([*TINY, f"method={method}", f"results_dir={records}"]))
    assert check_rerun.main([str(records), "--docs", "5"]) == 0
    table = capsys.readouterr().out
    assert table.count("| identical | same |") == 2 and "10 |" in table  # 5 documents x 2 tasks per record

    path = next(records.glob("*__diet__*.json"))
    record = json.loads(path.read_text())
    entry = record["tasks"]["rte"]
    docs = document_subset({"rte": record_documents(entry)}, 5, 0)["rte"]
    ids = entry.get("doc_ids") or list(range(len(entry["outcomes"])))
    flip = ids.index(docs[2])
    entry["outcomes"] = entry["outcomes"][:flip] + "10"[int(entry["outcomes"][flip])] + entry["outcomes"][flip + 1:]
    path.write_text(json.dumps(record))
    assert check_rerun.main([str(records), "--docs", "5", "--method", "diet"]) == 1
    assert f"rte: 1 differ ([{docs[2]}])" in capsys.readouterr().out


def test_subset_is_seeded_and_within_the_stored_documents():
    stored = {"rte": {i: "1" for i in range(3, 40, 2)}}
    first = document_subset(stored, 6, 0)["rte"]
    assert first == document_subset(stored, 6, 0)["rte"] and len(first) == 6 and set(first) <= set(stored["rte"])
    assert first != document_subset(stored, 6, 1)["rte"]
    assert document_subset(stored, 100, 0)["rte"] == tuple(sorted(stored["rte"]))
