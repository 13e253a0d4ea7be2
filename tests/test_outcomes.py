"""Per-document outcomes (diet.eval.evaluate.document_outcomes) and the paired difference built on them."""

from __future__ import annotations

import math
import random

import pytest

from diet.eval.evaluate import document_outcomes
from diet.analysis.stats import paired_difference


def samples(values, metric="acc", ids=None):
    ids = range(len(values)) if ids is None else ids
    return [{"doc_id": i, metric: v, "doc_hash": f"h{i}"} for i, v in zip(ids, values)]


def test_outcomes_are_in_doc_id_order_with_a_digest_of_the_documents():
    shuffled = list(reversed(samples([1.0, 0.0, 0.0, 1.0])))  # lm-eval may log documents out of order
    out = document_outcomes(shuffled, "acc")
    assert out["outcomes"] == "1001"
    assert out["docs_sha256"] == document_outcomes(samples([0, 0, 1, 1]), "acc")["docs_sha256"]  # same docs
    other_docs = [dict(s, doc_hash="x" + s["doc_hash"]) for s in shuffled]
    assert document_outcomes(other_docs, "acc")["docs_sha256"] != out["docs_sha256"]


@pytest.mark.parametrize("bad", [samples([1, 0.5, 0]), samples([1, 0], "f1")])
def test_no_outcomes_where_they_cannot_be_paired(bad):
    """A non-0/1 metric or a missing metric (a perplexity): no outcomes, so the tables stay unpaired; the
    documents are still identified."""
    out = document_outcomes(bad, "acc")
    assert "outcomes" not in out and len(out["docs_sha256"]) == 64


def test_a_random_sample_of_documents_keeps_its_doc_ids():
    """Documents 0, 2, 3 of a 10-document split (eval.docs=random): outcomes in doc_id order, the ids beside
    them, so the sample can be matched against a full-split run; contiguous ids 0..n-1 need no list."""
    out = document_outcomes(list(reversed(samples([1, 0, 1], ids=[0, 2, 3]))), "acc", n_docs=10)
    assert out["outcomes"] == "101" and out["doc_ids"] == [0, 2, 3] and out["split_docs"] == 10
    assert "doc_ids" not in document_outcomes(samples([1, 0, 1]), "acc")


def test_paired_difference_matches_the_textbook_formula():
    rng = random.Random(0)
    a = "".join(rng.choice("01") for _ in range(300))
    b = "".join(x if rng.random() < 0.8 else rng.choice("01") for x in a)  # correlated, as two prunings are
    d = [int(x) - int(y) for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1))
    diff, se = paired_difference(a, b)
    assert diff == pytest.approx(a.count("1") / 300 - b.count("1") / 300)
    assert se == pytest.approx(sd / math.sqrt(300))
    p, q = a.count("1") / 300, b.count("1") / 300
    unpaired = math.sqrt(p * (1 - p) / 299 + q * (1 - q) / 299)
    assert se < 0.75 * unpaired  # why pairing matters: correlated runs have a much smaller se


def test_paired_difference_edge_cases():
    assert paired_difference("1111", "1111") == (0.0, 0.0)
    diff, se = paired_difference("1", "0")
    assert diff == 1.0 and math.isnan(se)
    with pytest.raises(ValueError, match="same documents: 3 vs 2"):
        paired_difference("101", "10")
