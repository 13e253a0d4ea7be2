"""The terminal table (experiments.show, experiments.run): every score with its se, and a warning where
two rows' averages are within noise of each other."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from diet.io import atomic_write_json
from diet.run.records import SCHEMA_VERSION
from diet.analysis.report import format_table

TASKS = ["boolq", "rte"]


def outcomes(count: int, ones: int, seed: int) -> str:
    """`ones` of `count` documents right, in a seeded order."""
    bits = ["1"] * ones + ["0"] * (count - ones)
    random.Random(seed).shuffle(bits)
    return "".join(bits)


def make_record(method: str, sparsity: float, scores: dict[str, float], n: int = 50,
                with_outcomes: bool = False, seed: int = 0) -> dict:
    tasks = {}
    for task, score in scores.items():
        se = math.sqrt(score * (1 - score) / (n - 1))  # lm-eval's stderr of a mean of 0/1 outcomes
        tasks[task] = {"metric": "acc", "score": score, "score_stderr": se, "acc": score, "acc_stderr": se, "n": n}
        if with_outcomes:
            tasks[task] |= {"outcomes": outcomes(n, round(score * n), seed), "docs_sha256": f"docs-{task}"}
    return {
        "method": method,
        "sparsity": {"target": sparsity, "actual": sparsity},
        "parameters": {"after": {"total": 1000}},
        "tasks": tasks,
        "average": {"score": sum(scores.values()) / len(scores), "n_tasks": len(scores), "tasks": list(scores)},
        "model": {"name": "tiny"}, "eval": {"limit": n}, "finished_at": "2026-01-01T00:00:00+00:00",
        "schema": SCHEMA_VERSION,
    }


def test_every_score_and_the_average_carry_their_se():
    record = make_record("dense", 0.0, {"boolq": 0.6, "rte": 0.5})
    lines = format_table([record]).splitlines()
    header, row = lines[0], lines[2]
    assert "boolq (acc)" in header and "average" in header
    boolq_se, rte_se = math.sqrt(0.24 / 49), math.sqrt(0.25 / 49)
    assert f"60.0 ± {100 * boolq_se:.1f}" in row and f"50.0 ± {100 * rte_se:.1f}" in row  # 7.0 and 7.1
    average_se = math.sqrt(boolq_se ** 2 + rte_se ** 2) / 2
    assert f"55.0 ± {100 * average_se:.1f}" in row  # 5.0: sqrt(sum se_t^2) / T
    assert lines[-1] == "docs per task: boolq=50, rte=50"
    assert not [line for line in lines if line.startswith("note:")]  # one row: nothing to compare


def test_warning_when_two_averages_are_within_noise():
    dense = make_record("dense", 0.0, {"boolq": 0.60, "rte": 0.50})
    diet = make_record("diet", 0.2, {"boolq": 0.62, "rte": 0.52})
    notes = [line for line in format_table([dense, diet]).splitlines() if line.startswith("note:")]
    se = math.sqrt(sum(s * (1 - s) / 49 for s in (0.6, 0.5, 0.62, 0.52))) / 2  # unpaired, sqrt(se_a^2 + se_b^2)
    assert notes == [f"note: diet @0.2 and dense differ by +2.0 ± {100 * se:.1f} points of average (< 2 se, "
                     "unpaired): not a significant difference"]


def test_no_warning_for_a_significant_difference():
    dense = make_record("dense", 0.0, {"boolq": 0.80, "rte": 0.80}, n=400)
    random_row = make_record("random", 0.5, {"boolq": 0.50, "rte": 0.50}, n=400)  # 30 points, se ~3
    table = format_table([dense, random_row])
    assert "± " in table and "note:" not in table


def flip_wrong_to_right(record: dict, task: str, count: int) -> dict:
    """The record with `count` more documents of `task` right (the first wrong ones), score to match."""
    metrics = record["tasks"][task]
    bits = list(metrics["outcomes"])
    for index in [i for i, bit in enumerate(bits) if bit == "0"][:count]:
        bits[index] = "1"
    metrics["outcomes"] = "".join(bits)
    metrics["score"] = metrics["acc"] = bits.count("1") / len(bits)
    record["average"]["score"] = sum(m["score"] for m in record["tasks"].values()) / len(record["tasks"])
    return record


@pytest.mark.parametrize(("flipped", "with_outcomes", "warns"), [
    (4, True, False),   # paired: +4.0 points of average, se 1.9 (the other documents agree): significant
    (4, False, True),   # the same scores unpaired: se ~7 points, so within noise
    (1, True, True),    # paired: +1.0 ± 1.0, within noise
])
def test_paired_se_where_both_records_hold_the_same_documents(flipped, with_outcomes, warns):
    dense = make_record("dense", 0.0, {"boolq": 0.60, "rte": 0.50}, with_outcomes=True)
    diet = flip_wrong_to_right(make_record("diet", 0.2, {"boolq": 0.60, "rte": 0.50}, with_outcomes=True),
                               "boolq", flipped)
    if not with_outcomes:
        for record in (dense, diet):
            for metrics in record["tasks"].values():
                del metrics["outcomes"], metrics["docs_sha256"]
    notes = [line for line in format_table([dense, diet]).splitlines() if line.startswith("note:")]
    assert len(notes) == int(warns), notes
    if warns:
        assert f"differ by +{flipped:.1f} ± " in notes[0]
        assert ("paired per document" if with_outcomes else "unpaired") in notes[0]


def test_show_prints_the_se_and_the_warning(tmp_path):
    atomic_write_json(tmp_path / "dense.json", make_record("dense", 0.0, {"boolq": 0.60, "rte": 0.50}))
    atomic_write_json(tmp_path / "diet.json", make_record("diet", 0.2, {"boolq": 0.62, "rte": 0.52}))
    result = subprocess.run([sys.executable, "-m", "experiments.show", str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "62.0 ± 6.9" in lines[3] and "57.0 ± 5.0" in lines[3]  # diet: boolq, average sqrt(6.9^2 + 7.1^2) / 2
    assert any(line.startswith("note: diet @0.2 and dense differ by +2.0") for line in lines)
    assert lines[-1] == "docs per task: boolq=50, rte=50"


@pytest.mark.parametrize("stderr", [None, "N/A"])
def test_missing_se_prints_the_score_alone(stderr):
    record = make_record("dense", 0.0, {"boolq": 0.6, "rte": 0.5})
    record["tasks"]["boolq"]["score_stderr"] = stderr
    row = format_table([record]).splitlines()[2]
    assert "| 60.0 " in row.replace("  ", " ")


def test_many_rows_within_noise_share_one_line():
    dense = make_record("dense", 0.0, {"boolq": 0.60, "rte": 0.50})
    others = [make_record("diet", s, {"boolq": 0.60 - s / 10, "rte": 0.50}) for s in (0.1, 0.2, 0.3, 0.4)]
    notes = [line for line in format_table([dense, *others]).splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: 4 rows differ from dense by less than 2 se of average "
                                                   "(unpaired), not significant differences: diet @0.1 -0.5 ± ")
