"""Tables and figures from records: exact cells, ordering, statistics, and byte-for-byte regeneration.

Records are written by hand (make_record: the fields diet.run.pipeline.run_cell writes that the tables
read), so every expected number can be worked out on paper; one test runs the real pipeline on the
tiny random Gemma-2 to check that real records fit the same schema.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, compose_config
from diet.analysis.blocks import DEFAULTS
from diet.io import stable_hash
from diet.run.records import SCHEMA_VERSION
from diet.analysis.frame import load_frame, load_records
from diet.analysis.frame import CHANCE
from diet.analysis.stats import clearly_above_chance, difference, mean_se, votes_needed
from diet.analysis.render import to_markdown
from diet.analysis.tables import build_tables
from experiments.tables import regenerate

PAPER7 = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
# the inputs each method receives (diet/methods/*.py `Inputs`), by field name
INPUTS = {"diet": ("target", "calibration", "profile", "mask", "merge"),
          "diet_oracle": ("target", "calibration", "profile", "mask"),
          "activation_pooled": ("target", "calibration", "profile", "mask"), "wanda_sp": ("target", "calibration"),
          "flap": ("target", "calibration", "floor", "options"), "shortgpt": ("target", "calibration"),
          "random": ("target", "seed"), "magnitude": ("target",), "llm_pruner": ("target", "calibration", "options"),
          "slicegpt": ("target", "calibration", "options")}
# each method's own options at their conf/method defaults, as its identity holds them
OPTIONS = {"flap": {"allocation": "global", "bias": True},
           "llm_pruner": {"taylor": "param_first", "skip_first": 0.125, "skip_last": 0.0625},
           "slicegpt": {"final_orientation": "random", "round_interval": 8, "embedding_mean": "subtract"}}
CALIB_SOURCE = ("activation_pooled", "wanda_sp", "flap", "shortgpt", "llm_pruner", "slicegpt")  # calib.source chooses their text


def make_record(method: str, sparsity: float, scores: dict[str, tuple[float, float]], *, model: str = "m",
                limit: int | None = 100, threshold: float = 0.5, calib_n: int = 100, stat: str = "mean_abs",
                scope: str = "layer", merge: str = "vote", group: str | None = None, n: int = 100,
                finished_at: str = "2026-01-01T00:00:00+00:00", mask: dict[str, Any] | None = None,
                config_hash: str | None = None, profiled: list[str] | None = None, dims: str | None = None,
                sparsity_of: str | None = None,
                params_removed: float | None = None, task_sets: dict[str, list[str]] | None = None,
                outcomes: dict[str, str] | None = None, docs: str = "d", seed: int = 0,
                calib_source: str | None = None, documents: str | None = None,
                exclude_bos: bool = False, method_options: dict[str, Any] | None = None,
                actual: float | None = None, recover: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schema-1 record as run_cell writes it, reduced to what tables, figures and W&B read."""
    metric = {"wikitext": "word_perplexity"}  # what the record of each task is reported by
    tasks = {task: {"acc": s, "acc_stderr": se, "metric": metric.get(task, "acc"), "n": n, "score": s,
                    "score_stderr": se} for task, (s, se) in scores.items()}
    for task, values in (outcomes or {}).items():  # per-document outcomes; `docs` stands for their digest
        tasks[task].update(outcomes=values, docs_sha256=docs)
    sparsity = sparsity if method != "dense" else 0.0
    own = {"profile": {"stat": stat}, "mask": {"scope": scope}, "merge": merge, "vote": {"threshold": threshold}}
    config = {"method": {"name": method, **{key: own[key] for key in INPUTS.get(method, ()) if key in own},
                         **(method_options or {})},
              "model": {"name": model}, "tasks": list(scores), "sparsity": sparsity,
              "eval": {"limit": limit}, "seed": seed, "calib": {"n": calib_n},
              "wandb": {"mode": "disabled", "group": group}, "task_sets": task_sets or {}}
    if "merge" in INPUTS.get(method, ()):
        config["method"]["vote"] = own["vote"]
    if calib_source is not None:
        config["calib"]["source"] = calib_source
    if exclude_bos:
        config["calib"]["exclude_bos"] = True
    # default: an equal-parameter-budget dims comparison (experiment=ablation_dims_local)
    sparsity_of = sparsity_of or ("params" if dims else "dim")
    if dims is not None:
        config.update(dims=dims, sparsity_of=sparsity_of)
    evaluation = dict(config["eval"])
    if documents and documents.startswith("random"):  # a random sample is its own cell (diet.config.identity)
        evaluation["docs"] = {"random_seed": 0}
    generic = calib_source is not None and calib_source != "tasks" and method in CALIB_SOURCE
    built = {  # as diet.methods.inputs builds them, in their identity form
        "target": {"sparsity": sparsity, "dims": dims or "mlp", "of": sparsity_of},
        "calibration": ({"file_sha256": "f", "layout": "documents", "windows": 128, "window_length": 128,
                         "seed": seed, "add_bos_token": True, "exclude_bos": exclude_bos} if generic else
                        {"tasks": list(profiled if profiled is not None else scores), "n": calib_n,
                         "with_answer": True, "max_length": 512, "seed": seed, "add_bos_token": True,
                         "exclude_bos": exclude_bos}),
        "profile": {"stat": stat}, "mask": {"scope": scope, "min_keep_fraction": 0.05},
        "floor": {"min_keep_fraction": 0.05}, "merge": {"rule": merge, "threshold": threshold, "exact": True},
        "seed": {"value": seed}, "options": {**OPTIONS.get(method, {}), **(method_options or {})},
    }
    effective = {"model": {"name": model}, "tasks": list(scores), "eval": evaluation, "data_mode": "offline",
                 "method": {"name": method, "version": 1,
                            "inputs": {name: built[name] for name in INPUTS.get(method, ())
                                       + (("options",) if method_options else ())}}}
    if recover is not None:  # recovery options in their identity form (diet.recover.options)
        effective["recover"] = recover
    mean = sum(s for s, _ in scores.values()) / len(scores)
    return {
        "schema": SCHEMA_VERSION, "config_hash": config_hash or stable_hash(effective), "method": method,
        "tasks": tasks, "average": {"score": mean, "tasks": list(scores), "n_tasks": len(scores)},
        "sparsity": {"target": sparsity, "actual": sparsity if actual is None else actual, "dims": "mlp"},
        "parameters": {"before": {"total": 1000}, "after": {"total": round(1000 * (1 - sparsity))},
                       "removed_fraction_non_embedding": sparsity if params_removed is None else params_removed,
                       "removed_fraction_total": (sparsity if params_removed is None else params_removed) / 2},
        "mask": mask, "model": {"name": model},
        "eval": {"limit": limit, "num_fewshot": 0, **({"documents": documents} if documents else {})},
        "config": config, "effective_config": effective, "code": {"diet": "0.1.0", "commit": None, "dirty": None},
        "started_at": finished_at, "finished_at": finished_at,
    }


def write(folder: Path, record: dict[str, Any], suffix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['model']['name']}__{record['method']}__{record['config_hash']}__v0.1.0{suffix}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
    return path


def same(score: float, se: float = 0.02) -> dict[str, tuple[float, float]]:
    return {task: (score, se) for task in PAPER7}


def tables_by_name(folder: Path) -> dict[str, Any]:
    return {table.name: table for table in build_tables(load_frame(folder))}


def figures_by_name(folder: Path) -> dict[str, Any]:
    from diet.analysis.blocks import blocks_from_frame
    from diet.analysis.plots import build_figures
    return dict(build_figures(blocks_from_frame(load_frame(folder)), {r["config_hash"]: r for r in load_records(folder)}))


def md_rows(text: str) -> list[list[str]]:
    """Cells of a markdown table (header first, the :--- line dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|:")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


# --------------------------------------------------------------------------- loading


def test_newest_record_of_a_cell_wins(tmp_path):
    records = tmp_path / "records"
    old = make_record("diet", 0.2, same(0.40), finished_at="2026-01-02T00:00:00+00:00")
    new = make_record("diet", 0.2, same(0.45), finished_at="2026-01-03T00:00:00+00:00")
    assert old["config_hash"] == new["config_hash"]
    write(records, new, suffix="__a")  # file name order is not time order
    write(records, old, suffix="__b")
    # same second: the __rerunN file (written later) wins, by file name
    tie_first = make_record("dense", 0.0, same(0.50), finished_at="2026-01-05T00:00:00+00:00")
    tie_rerun = make_record("dense", 0.0, same(0.55), finished_at="2026-01-05T00:00:00+00:00")
    write(records, tie_first)
    write(records, tie_rerun, suffix="__rerun1")
    frame = load_frame(records)
    assert len(frame) == 2 * len(PAPER7)
    assert set(frame.loc[frame.method == "diet", "score"]) == {0.45}
    assert set(frame.loc[frame.method == "dense", "score"]) == {0.55}
    assert list(frame.columns[:5]) == ["model", "method", "sparsity", "sparsity_actual", "limit"]
    row = frame.iloc[0]
    assert {"threshold", "calib_n", "stat", "scope", "merge", "task", "metric", "stderr", "n", "config_hash",
            "finished_at", "group"} <= set(frame.columns)
    assert row["task"] in PAPER7


def test_options_a_method_ignores_are_none(tmp_path):
    write(tmp_path, make_record("dense", 0.0, same(0.5)))
    write(tmp_path, make_record("wanda_sp", 0.2, same(0.4), calib_n=50))
    frame = load_frame(tmp_path).drop_duplicates("method").set_index("method")
    assert frame.loc["dense", ["threshold", "calib_n", "stat", "scope", "merge"]].isna().all()
    assert frame.loc["wanda_sp", "calib_n"] == 50 and frame.loc["wanda_sp", "threshold"] is None
    assert frame.loc["dense", "limit"] == 100 and isinstance(frame.loc["dense", "limit"], int)


def test_one_model_evaluated_on_disjoint_tasks_is_one_row(tmp_path):
    """A perplexity record beside the 7-task record of the same model is one run (one table row, one seed);
    records whose tasks overlap, or of different masks, stay apart."""
    from diet.analysis.blocks import blocks_from_frame

    write(tmp_path, make_record("dense", 0.0, same(0.5), limit=None))
    write(tmp_path, make_record("dense", 0.0, {"wikitext": (31.0, math.nan)}, limit=None))
    mask = mask_stats([4, 3], PAPER7)
    write(tmp_path, make_record("diet", 0.2, same(0.45), limit=None, mask=mask))
    # the perplexity record of the mask profiled on the seven tasks: its own label reads "profiled=<7 tasks>"
    write(tmp_path, make_record("diet", 0.2, {"wikitext": (60.0, math.nan)}, limit=None, mask=mask,
                                 profiled=list(PAPER7)))
    other_mask = {**mask, "mask_hash": "y" * 64}
    write(tmp_path, make_record("diet", 0.2, {"wikitext": (65.0, math.nan)}, limit=None, mask=other_mask,
                                 config_hash="other-mask"))
    write(tmp_path, make_record("flap", 0.2, same(0.40), limit=None))
    write(tmp_path, make_record("flap", 0.2, {"boolq": (0.41, 0.02), "wikitext": (70.0, math.nan)}, limit=None))
    [block] = blocks_from_frame(load_frame(tmp_path))
    by_method: dict[str, list] = {}
    for run in block.runs:
        by_method.setdefault(run["method"], []).append(run)
    [dense] = by_method["dense"]
    assert set(dense["tasks"]) == {*PAPER7, "wikitext"} and dense["n_tasks"] == 8
    assert dense["config_hash"] == "+".join(sorted(dense["config_hashes"])) and len(dense["config_hashes"]) == 2
    diet_tasks = sorted(sorted(run["tasks"]) for run in by_method["diet"])
    assert diet_tasks == [sorted([*PAPER7, "wikitext"]), ["wikitext"]]  # another mask: another run
    [diet] = [run for run in by_method["diet"] if len(run["tasks"]) == 8]
    assert diet["profiled"] == "all" and diet["variant"] == ""  # labelled as its 7-task record
    assert sorted(len(run["tasks"]) for run in by_method["flap"]) == [2, 7]  # boolq twice: kept apart
    rows = md_rows(to_markdown(tables_by_name(tmp_path)["main__m__limitall"]))
    header, dense_row = rows[0], rows[1]
    assert dense_row[header.index("wikitext (n=100)")] == "31.00"
    assert dense_row[header.index("boolq (n=100)")] == "50.0 ± 2.0"


def test_missing_or_empty_folder_gives_no_tables(tmp_path):
    assert load_records(tmp_path / "nope") == [] and build_tables(load_frame(tmp_path)) == []


def test_table_defaults_match_conf():
    conf = yaml.safe_load((REPO_ROOT / "conf" / "config.yaml").read_text())
    diet = yaml.safe_load((REPO_ROOT / "conf" / "method" / "diet.yaml").read_text())
    assert DEFAULTS == {"threshold": diet["vote"]["threshold"], "calib_n": conf["calib"]["n"],
                        "stat": diet["profile"]["stat"], "scope": diet["mask"]["scope"], "merge": diet["merge"],
                        "profiled": "all", "dims": conf["dims"], "sparsity_of": conf["sparsity_of"],
                        "calib_source": conf["calib"]["source"], "exclude_bos": conf["calib"]["exclude_bos"],
                        "recover": next(entry["recover"] for entry in conf["defaults"]
                                        if isinstance(entry, dict) and "recover" in entry)}
    assert conf["calib"]["tasks"] is None and conf["calib"]["exclude"] == []  # = "all": the evaluated tasks


# --------------------------------------------------------------------------- statistics


def test_statistics_by_hand():
    mean, se = mean_se([0.6, 0.4], [0.03, 0.04])
    assert mean == pytest.approx(0.5) and se == pytest.approx(0.025)  # sqrt(.03^2 + .04^2) / 2
    assert not clearly_above_chance(CHANCE["winogrande"], 0.75, 0.125)  # exactly 2 se above 0.5: not "clearly"
    assert clearly_above_chance(CHANCE["winogrande"], 0.76, 0.125) and not clearly_above_chance(None, 0.99, 0.0)
    assert not clearly_above_chance(CHANCE["rte"], 0.58, 0.03)  # RTE's chance is its majority label, 0.527
    assert difference(0.5, 0.03, 0.4, 0.04) == (pytest.approx(0.1), pytest.approx(0.05), False)  # 0.1 = 2 se
    assert difference(0.52, 0.03, 0.4, 0.04)[2] is True
    assert [votes_needed(t, 7) for t in (0.142857, 0.285714, 0.428571, 0.571428, 0.714285, 0.857142, 1.0)] \
        == [1, 2, 3, 4, 5, 6, 7]
    assert votes_needed(0.5, 7) == 4 and votes_needed(0.5, 2) == 1


# --------------------------------------------------------------------------- main table


@pytest.fixture
def paper(tmp_path) -> Path:
    """Dense and several methods at 0.2 / 0.4, plus a threshold ablation at 0.2 (one model, limit 100)."""
    records = tmp_path / "records"
    dense = {"boolq": (0.55, 0.03), "rte": (0.60, 0.03), "hellaswag": (0.26, 0.01), "winogrande": (0.50, 0.05),
             "arc_easy": (0.60, 0.04), "arc_challenge": (0.30, 0.04), "openbookqa": (0.32, 0.02)}
    write(records, make_record("dense", 0.0, dense, group="paper_main"))
    write(records, make_record("diet", 0.2, same(0.50, 0.02), group="paper_main"))
    write(records, make_record("wanda_sp", 0.2, same(0.44, 0.02), group="paper_main"))
    write(records, make_record("random", 0.2, same(0.30, 0.02), group="paper_main"))
    write(records, make_record("zeta_new", 0.2, same(0.30, 0.02), group="paper_main"))
    write(records, make_record("alpha_new", 0.2, same(0.30, 0.02), group="paper_main"))
    write(records, make_record("flap", 0.4, same(0.35, 0.02), group="paper_main"))
    write(records, make_record("diet", 0.4, same(0.36, 0.02), group="paper_main"))
    write(records, make_record("diet_oracle", 0.2, same(0.52, 0.02), group="paper_main"))
    for threshold in (0.142857, 1.0):  # ablation runs: not in the main table (a default-settings run exists)
        write(records, make_record("diet", 0.2, same(0.40, 0.02), threshold=threshold, group="ablation_threshold"))
    return records


def test_main_table_rows_order_and_cells(paper):
    table = tables_by_name(paper)["main__m__limit100"]
    text = to_markdown(table)
    rows = md_rows(text)
    header, body = rows[0], rows[1:]
    assert header == ["method", "sparsity", "actual", "non_embedding", "total", "boolq (n=100)", "rte (n=100)", "hellaswag (n=100)",
                      "winogrande (n=100)", "arc_easy (n=100)", "arc_challenge (n=100)", "openbookqa (n=100)",
                      "average", "avg_above_chance"]
    # dense on top, then sparsity ascending, METHOD_ORDER, then unknown methods alphabetically
    assert [(r[0], r[1]) for r in body] == [
        ("dense", "0.00"), ("diet", "0.20"), ("diet_oracle", "0.20"), ("wanda_sp", "0.20"), ("random", "0.20"),
        ("alpha_new", "0.20"), ("zeta_new", "0.20"), ("diet", "0.40"), ("flap", "0.40")]
    dense = body[0]
    # what each row removed, three ways (make_record: the non-embedding fraction = sparsity, all = half of it)
    assert body[1][2:5] == ["0.200", "0.200", "0.100"] and dense[2:5] == ["0.000", "0.000", "0.000"]
    assert dense[5:12] == ["55.0 ± 3.0", "60.0 ± 3.0", "26.0 ± 1.0", "50.0 ± 5.0", "60.0 ± 4.0", "30.0 ± 4.0",
                           "32.0 ± 2.0"]
    # average over 7 tasks: 3.13/7 = 44.71 points; se = sqrt(sum se^2)/7 = sqrt(0.0079)/7
    assert dense[12] == f"44.7 ± {100 * math.sqrt(0.0079) / 7:.1f}" == "44.7 ± 1.3"
    # clearly above chance: rte (7.3 > 6 over its 52.7), arc_easy (35 > 8), openbookqa (7 > 4); not boolq
    # (-7.2 below its 62.2), hellaswag (1 < 2), winogrande (0), arc_challenge (5 < 8) -> mean of 60, 60, 32
    assert dense[13] == f"50.7 ± {math.sqrt(29) / 3:.1f}" == "50.7 ± 1.8"
    assert body[1][12] == f"50.0 ± {100 * math.sqrt(7 * 0.02 ** 2) / 7:.1f}" == "50.0 ± 0.8"
    assert body[1][13] == f"50.0 ± {100 * math.sqrt(3 * 0.02 ** 2) / 3:.1f}" == "50.0 ± 1.2"
    assert "avg_above_chance averages rte, arc_easy, openbookqa" in text
    assert table.group == "paper_main"


def test_main_table_csv_is_numeric(paper, tmp_path):
    regenerate(paper, tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "tables" / "main__m__limit100.csv")
    dense = frame.iloc[0]
    assert dense["method"] == "dense" and dense["boolq"] == 55.0 and dense["boolq_se"] == 3.0
    assert dense["boolq_n"] == 100 and dense["average"] == pytest.approx(313 / 7, abs=1e-4)
    assert dense["avg_above_chance_se"] == pytest.approx(math.sqrt(29) / 3, abs=1e-4)
    assert "variant" not in frame  # every row at the default settings
    assert len(frame) == 9 and frame["config_hash"].notna().all()


def test_main_table_without_default_run_shows_labelled_variants(tmp_path):
    write(tmp_path, make_record("diet", 0.25, same(0.5), calib_n=6))
    write(tmp_path, make_record("diet", 0.25, same(0.5), calib_n=6, threshold=1.0))
    data = tables_by_name(tmp_path)["main__m__limit100"].data
    assert list(data["variant"]) == ["calib.n=6", "method.vote.threshold=1, calib.n=6"]
    assert data["avg_above_chance"].isna().all()  # no dense run: nothing to call "above chance"


def test_tables_are_per_model_and_limit(tmp_path):
    write(tmp_path, make_record("dense", 0.0, same(0.5), model="a", limit=None))
    write(tmp_path, make_record("dense", 0.0, same(0.5), model="a", limit=50))
    write(tmp_path, make_record("dense", 0.0, same(0.5), model="b", limit=50))
    assert sorted(tables_by_name(tmp_path)) == ["main__a__limit50", "main__a__limitall", "main__b__limit50"]


# --------------------------------------------------------------------------- differences and ablations


def test_differences_to_best_baseline_flag_only_clear_gaps(paper):
    data = tables_by_name(paper)["differences__m__limit100"].data.set_index(["method", "sparsity"])
    se = 100 * math.sqrt(2 * (math.sqrt(7 * 0.02 ** 2) / 7) ** 2)  # both averages have se 0.756 points
    diet = data.loc[("diet", 0.2)]
    assert diet["vs_avg"] == "wanda_sp"  # best non-DIET baseline at 0.2 (random, alpha_new, zeta_new lower)
    assert diet["avg_diff"] == pytest.approx(6.0) and diet["avg_diff_se"] == pytest.approx(se)
    assert diet["avg_significant"] is True  # 6.0 > 2 x 1.07
    oracle = data.loc[("diet_oracle", 0.2)]
    assert oracle["avg_diff"] == pytest.approx(8.0) and oracle["avg_significant"] is True
    assert data.loc[("random", 0.2), "avg_diff"] == pytest.approx(-14.0)
    assert ("wanda_sp", 0.2) not in data.index  # the reference itself
    at_04 = data.loc[("diet", 0.4)]
    assert at_04["vs_avg"] == "flap" and at_04["avg_diff"] == pytest.approx(1.0)
    assert at_04["avg_significant"] is False  # 1.0 < 2 x 1.07: within the noise
    assert ("dense", 0.0) not in data.index


def outcome_record(method: str, outcomes: dict[str, str] | None, docs: str = "d", **scores_of) -> dict[str, Any]:
    """A record whose per-task scores are those of its outcomes (se as lm-eval: sample sd / sqrt(n))."""
    source = outcomes or scores_of["like"]
    scores = {}
    for task, values in source.items():
        p, n = values.count("1") / len(values), len(values)
        scores[task] = (p, math.sqrt(p * (1 - p) * n / (n - 1) / n))
    return make_record(method, 0.0 if method == "dense" else 0.2, scores, outcomes=outcomes, docs=docs, n=len(
        next(iter(source.values()))))


def test_differences_are_paired_where_both_records_hold_outcomes_of_the_same_documents(tmp_path):
    base = "1101001110" * 20  # 200 documents
    flap = {task: base for task in PAPER7}
    diet = {task: base[:-10] + "1111111111" for task in PAPER7}  # the same answers, plus 4 more right
    write(tmp_path, outcome_record("dense", {task: "1" * 200 for task in PAPER7}))
    write(tmp_path, outcome_record("flap", flap))
    write(tmp_path, outcome_record("diet", diet))
    row = tables_by_name(tmp_path)["differences__m__limit100"].data.set_index("method").loc["diet"]
    d = [int(x) - int(y) for x, y in zip(diet["boolq"], base)]
    sd = math.sqrt(sum((v - 0.02) ** 2 for v in d) / 199)
    assert row["vs_avg"] == "flap" and row["avg_paired"] is True
    assert row["avg_diff"] == pytest.approx(2.0) and row["avg_diff_se"] == pytest.approx(100 * sd / math.sqrt(200) / math.sqrt(7))
    assert row["avg_significant"] is True  # 2.0 points, paired se 0.38: far beyond the noise
    for case, (flap_outcomes, docs) in {"no outcomes": (None, "d"), "other documents": (flap, "other")}.items():
        folder = tmp_path / case.replace(" ", "_")
        write(folder, outcome_record("flap", flap_outcomes, docs, like=flap))
        write(folder, outcome_record("diet", diet))
        row = tables_by_name(folder)["differences__m__limit100"].data.set_index("method").loc["diet"]
        assert row["avg_paired"] is False, case
        assert row["avg_diff"] == pytest.approx(2.0) and row["avg_significant"] is False, case  # unpaired se 1.8


def test_threshold_ablation_shows_votes_needed(paper):
    table = tables_by_name(paper)["ablation_threshold__m__limit100"]
    data = table.data
    assert list(data["method.vote.threshold"]) == [0.142857, 0.5, 1.0]
    assert list(data["k"]) == [1, 4, 7]
    assert list(data["average"]) == pytest.approx([40.0, 50.0, 40.0])
    assert "k = ceil(threshold x T) votes of T = 7 tasks keep a channel" in table.notes
    assert "ablation_calib_n__m__limit100" not in tables_by_name(paper)  # calib.n never varied


def test_generic_ablation_groups_runs_that_differ_in_one_option(tmp_path):
    for merge, score in (("vote", 0.5), ("mean", 0.48), ("union", 0.45)):
        write(tmp_path, make_record("diet", 0.2, same(score), merge=merge))
    write(tmp_path, make_record("diet", 0.4, same(0.3), merge="mean"))  # alone at 0.4: no comparison
    for stat in ("mean_abs", "l2"):
        write(tmp_path, make_record("diet_oracle", 0.2, same(0.5), stat=stat))
    tables = tables_by_name(tmp_path)
    merge = tables["ablation_merge__m__limit100"].data
    assert list(merge["method.merge"]) == ["mean", "union", "vote"] and set(merge["sparsity"]) == {0.2}
    stat = tables["ablation_stat__m__limit100"].data
    assert list(stat["method"]) == ["diet_oracle", "diet_oracle"] and list(stat["method.profile.stat"]) == ["l2", "mean_abs"]
    assert "ablation_scope__m__limit100" not in tables


def test_bos_exclusion_is_a_variant_of_its_own_and_absent_means_counted(tmp_path):
    write(tmp_path, make_record("dense", 0.0, same(0.5)))
    for method in ("diet", "flap"):
        write(tmp_path, make_record(method, 0.2, same(0.45)))  # no profile_exclude_bos: BOS counted
        write(tmp_path, make_record(method, 0.2, same(0.40), exclude_bos=True))
    frame = load_frame(tmp_path).drop_duplicates("config_hash")
    assert frame.loc[frame["method"] == "dense", "exclude_bos"].isna().all()  # dense profiles nothing
    assert sorted(frame.loc[frame["method"] == "diet", "exclude_bos"]) == [False, True]
    tables = tables_by_name(tmp_path)
    bos = tables["ablation_exclude_bos__m__limit100"].data
    assert list(bos["method"]) == ["diet", "diet", "flap", "flap"]
    assert list(bos["calib.exclude_bos"]) == [False, True, False, True]
    main = tables["main__m__limit100"].data  # the default runs, not the BOS variants
    assert sorted(main["average"].dropna().round(1)) == [45.0, 45.0, 50.0]


def test_a_method_option_off_its_default_is_a_variant_not_another_seed(tmp_path):
    defaults = {"allocation": "global", "bias": True}  # conf/method/flap.yaml
    for seed, score in ((0, 0.40), (1, 0.42)):
        write(tmp_path, make_record("flap", 0.2, same(score), seed=seed, method_options=defaults))
    write(tmp_path, make_record("flap", 0.2, same(0.30), method_options={**defaults, "bias": False}))
    frame = load_frame(tmp_path).drop_duplicates("config_hash")
    assert sorted(frame["method_options"], key=str) == [None, None, "method.bias=False"]
    tables = tables_by_name(tmp_path)
    seeds = tables["seeds__m__limit100"].data
    by_variant = dict(zip(seeds["variant"].fillna(""), seeds["seeds"]))
    assert by_variant == {"": 2, "method.bias=False": 1}  # the variant is not pooled with the seeds
    main = tables["main__m__limit100"].data
    assert list(main["average"].round(1)) == [40.0]  # seed 0 at the defaults only


def test_profiled_tasks_ablation_labels_leave_one_out_and_transfer(tmp_path):
    tasks = list(same(0.5))
    write(tmp_path, make_record("dense", 0.0, same(0.5)))
    write(tmp_path, make_record("diet", 0.2, same(0.45)))
    write(tmp_path, make_record("diet", 0.2, same(0.44), profiled=tasks[1:]))
    write(tmp_path, make_record("diet", 0.2, same(0.43), profiled=tasks[:2]))
    tables = tables_by_name(tmp_path)
    data = tables["ablation_profiled__m__limit100"].data
    assert list(data["profiled"]) == ["all", f"all but {tasks[0]}", "+".join(tasks[:2])]
    assert list(data["average"]) == pytest.approx([45.0, 44.0, 43.0])
    main = tables["main__m__limit100"].data
    assert list(main["method"]) == ["dense", "diet"] and "variant" not in main  # variants stay out of main


def test_profiled_label_names_a_task_set_with_exactly_those_tasks(tmp_path):
    """A subset evaluated at a larger limit with the mask of all seven: labelled by the set's name."""
    subset = {task: (0.5, 0.01) for task in PAPER7[2:5]}
    sets = {"paper7": list(PAPER7), "reversed": list(reversed(PAPER7)), "first2": list(PAPER7[:2])}
    write(tmp_path, make_record("dense", 0.0, subset, task_sets=sets))
    write(tmp_path, make_record("diet", 0.2, subset, profiled=list(PAPER7), task_sets=sets))
    write(tmp_path, make_record("diet", 0.2, subset, profiled=list(PAPER7[:2]) + [PAPER7[3]], task_sets=sets))
    main = tables_by_name(tmp_path)["main__m__limit100"].data
    # a set matches only in its exact order ("reversed" does not), as the record lists the tasks profiled
    assert list(main["variant"]) == ["", f"profiled={PAPER7[0]}+{PAPER7[1]}+{PAPER7[3]}", "profiled=paper7"]


# --------------------------------------------------------------------------- files, figures, the command


def mask_stats(kept: list[int], tasks: list[str]) -> dict[str, Any]:
    pairs = {f"{a}|{b}": 0.5 + 0.02 * i for i, (a, b) in
             enumerate((a, b) for j, a in enumerate(tasks) for b in tasks[j + 1:])}
    return {"kept_per_layer": kept, "jaccard": pairs, "num_tasks": len(tasks), "mask_hash": "x" * 64}


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_regeneration_is_byte_for_byte_reproducible(paper, tmp_path):
    write(paper, make_record("diet", 0.4, same(0.36), threshold=1.0, mask=mask_stats([40, 30, 20], PAPER7)))
    write(paper, make_record("diet", 0.3, same(0.40), mask=mask_stats([60, 50, 40], PAPER7)))
    regenerate(paper, tmp_path / "one")
    regenerate(paper, tmp_path / "two")
    one, two = file_bytes(tmp_path / "one"), file_bytes(tmp_path / "two")
    assert one == two
    assert sorted(one) == [
        "figures/avg_vs_sparsity__m__limit100.png", "figures/jaccard__m__limit100__s0.30.png",
        "figures/kept_per_layer__m__limit100.png", "figures/threshold__m__limit100.png",
        *(f"tables/{name}.{ext}" for name in ("ablation_threshold__m__limit100", "differences__m__limit100",
                                              "main__m__limit100") for ext in ("csv", "md", "tex"))]
    assert one["figures/kept_per_layer__m__limit100.png"].startswith(b"\x89PNG")
    assert b"Software" not in one["figures/kept_per_layer__m__limit100.png"]
    tex = one["tables/main__m__limit100.tex"].decode()
    assert r"55.0 $\pm$ 3.0" in tex and r"arc\_easy (n=100)" in tex and "\\begin{tabular}" in tex


def test_regeneration_removes_stale_outputs(paper, tmp_path):
    (tmp_path / "out" / "tables").mkdir(parents=True)
    stale = tmp_path / "out" / "tables" / "main__gone__limit1.md"
    stale.write_text("old")
    keep = tmp_path / "out" / "tables" / "README.txt"
    keep.write_text("not a table")
    regenerate(paper, tmp_path / "out")
    assert not stale.exists() and keep.exists()


def test_command_writes_tables_and_figures(paper, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.tables", f"results_dir={paper}", f"out_dir={out}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["figures/avg_vs_sparsity__m__limit100.png", "figures/threshold__m__limit100.png",
                       *(f"tables/{name}.{ext}" for name in ("ablation_threshold__m__limit100",
                                                             "differences__m__limit100", "main__m__limit100")
                         for ext in ("csv", "md", "tex"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "records"]  # no Hydra outputs/ or .hydra
    assert regenerate(paper, tmp_path / "again")[1] and file_bytes(out) == file_bytes(tmp_path / "again")


def test_tables_go_to_wandb_one_run_per_group(paper, monkeypatch, tmp_path):
    from diet.run.tracking import log_tables

    logged: list[tuple[str, list[str]]] = []

    class Run:
        def __init__(self, group):
            self.group, self.dir = group, str(tmp_path / group)

        def log(self, data):
            logged.append((self.group, sorted(data)))

        def finish(self):
            pass

    fake = types.SimpleNamespace(init=lambda **kw: Run(kw["group"]), Table=lambda dataframe: dataframe)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tables = build_tables(load_frame(paper))
    cfg = {"mode": "offline", "project": "diet", "entity": None, "dir": str(tmp_path / "wandb")}
    assert log_tables(tables, {**cfg, "mode": "disabled"}) == []
    log_tables(tables, cfg)
    assert logged == [("ablation_threshold", ["ablation_threshold__m__limit100"]),
                      ("paper_main", ["differences__m__limit100", "main__m__limit100"])]


def test_real_records_fit_the_tables(tmp_path, isolated_cache):
    """A DIET cell through the real pipeline (tiny random Gemma-2): the tables read what run_cell writes."""
    from diet.run.pipeline import run_cell

    tiny = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "eval.limit=6", "calib.n=6", "wandb.mode=disabled",
            f"results_dir={tmp_path / 'records'}"]
    diet, _ = run_cell(compose_config([*tiny, "method=diet", "sparsity=0.25"]))
    # dense made by hand (a dense run adds ~15 s; its record has no mask, as make_record's)
    dense = make_record("dense", 0.0, {"arc_easy": (0.5, 0.2), "rte": (0.5, 0.2)}, model="tiny_gemma2", limit=6,
                        n=6)
    assert diet["eval"]["documents"] == "random6s0"  # a limit draws a random sample by default
    dense["eval"]["documents"] = diet["eval"]["documents"]  # same documents: one block
    write(tmp_path / "records", dense)
    tables, paths = regenerate(tmp_path / "records", tmp_path / "out")
    data = {t.name: t for t in tables}["main__tiny_gemma2__random6"].data
    assert list(data["method"]) == ["dense", "diet"] and list(data["variant"]) == ["", "calib.n=6"]
    assert data["rte"].iloc[1] == pytest.approx(100 * diet["tasks"]["rte"]["score"])
    assert data["rte_se"].iloc[1] == pytest.approx(100 * diet["tasks"]["rte"]["score_stderr"])
    assert data["arc_easy_n"].tolist() == [6, 6]
    assert data["average"].iloc[1] == pytest.approx(100 * diet["average"]["score"])
    names = sorted(p.name for p in paths)
    assert "kept_per_layer__tiny_gemma2__random6.png" in names and "jaccard__tiny_gemma2__random6__s0.25.png" in names


def test_committed_tables_are_regenerated_exactly(tmp_path):
    """results/tables and results/figures must be exactly what the committed records give.

    With records in results/records, regenerating into a tmp dir must reproduce the committed files
    byte for byte (run `make tables` after adding records). Without records, no table or figure may be
    committed, and regenerating must produce none: an empty folder gives an empty paper, never a stale one.
    (PNG bytes depend on the pinned matplotlib/freetype: regenerate after upgrading them.)
    """
    records = REPO_ROOT / "results" / "records"
    committed = {kind: file_bytes(REPO_ROOT / "results" / kind) if (REPO_ROOT / "results" / kind).is_dir() else {}
                 for kind in ("tables", "figures")}
    regenerate(records, tmp_path / "out")
    fresh = {kind: file_bytes(tmp_path / "out" / kind) if (tmp_path / "out" / kind).is_dir() else {}
             for kind in ("tables", "figures")}
    if not load_records(records):
        assert fresh == {"tables": {}, "figures": {}} and committed == fresh
    else:
        assert fresh == committed


def test_terminal_table_lists_tasks_in_paper_order():
    from diet.analysis.report import format_table

    record = make_record("dense", 0.0, same(0.5))
    record["tasks"] = dict(sorted(record["tasks"].items()))  # as stored: json sort_keys
    for task in record["tasks"]:
        record["tasks"][task]["metric"] = "acc"
    header = format_table([record]).splitlines()[0]
    positions = [header.index(f" {task} (") for task in PAPER7]
    assert positions == sorted(positions)
    assert format_table([record]).splitlines()[-1] == "docs per task: " + ", ".join(f"{t}=100" for t in PAPER7)


def test_leave_one_out_table_pairs_each_left_out_task_with_the_all_profiled_run(tmp_path):
    write(tmp_path, make_record("dense", 0.0, same(0.6)))
    write(tmp_path, make_record("diet", 0.2, same(0.5)))
    for i, task in enumerate(PAPER7[:2]):
        scores = same(0.5) | {task: (0.40 - 0.05 * i, 0.02)}
        write(tmp_path, make_record("diet", 0.2, scores, profiled=[t for t in PAPER7 if t != task]))
    write(tmp_path, make_record("diet", 0.4, same(0.3), profiled=PAPER7[1:]))  # no all-profiled run at 0.4
    table = tables_by_name(tmp_path)["loo__m__limit100"]
    data = table.data
    assert list(data["left_out"]) == PAPER7[:2] and set(data["sparsity"]) == {0.2}
    assert list(data["left_out_score"]) == pytest.approx([40.0, 35.0])
    assert list(data["all_profiled"]) == pytest.approx([50.0, 50.0]) and list(data["dense"]) == pytest.approx([60.0, 60.0])
    assert list(data["diff"]) == pytest.approx([-10.0, -15.0])
    assert list(data["diff_se"]) == pytest.approx([2 * 2 ** 0.5] * 2)
    assert list(data["significant"]) == [True, True]  # 10 > 2 x 2.83
    markdown = to_markdown(table)
    assert "40.0 ± 2.0" in markdown and "-10.0 ± 2.8" in markdown


def test_dims_ablation_table_and_figure_at_an_equal_parameter_budget(tmp_path):
    write(tmp_path, make_record("dense", 0.0, same(0.5)))
    write(tmp_path, make_record("diet", 0.2, same(0.45)))  # default: 20% of the MLP channels
    for dims, score, removed in (("mlp", 0.44, 0.20), ("heads", 0.40, 0.176), ("hidden", 0.30, 0.20)):
        write(tmp_path, make_record("diet", 0.2, same(score), dims=dims, params_removed=removed))
    tables = tables_by_name(tmp_path)
    data = tables["ablation_dims__m__limit100"].data
    assert list(data["dims"]) == ["heads", "hidden", "mlp"]
    assert list(data["non_embedding"]) == pytest.approx([0.176, 0.20, 0.20])
    assert list(data["total"]) == pytest.approx([0.088, 0.10, 0.10])  # every ablation row: three denominators
    assert list(data["average"]) == pytest.approx([40.0, 30.0, 44.0])
    assert "fixed: " in tables["ablation_dims__m__limit100"].notes[2] and "sparsity_of=params" in tables[
        "ablation_dims__m__limit100"].notes[2]
    assert list(tables["main__m__limit100"].data["method"]) == ["dense", "diet"]  # dims variants stay out
    ax = figures_by_name(tmp_path)["dims__m__limit100"].axes[0]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["mlp", "heads", "hidden"]
    assert "20% of non-embedding params" in ax.get_title()


def test_oracle_gap_scores_and_the_share_of_the_gap_closed(tmp_path):
    """experiments.oracle_gap (scores only): each row minus default DIET, paired per document; closed = the
    row's average difference over the oracle's."""
    from experiments.oracle_gap import report

    two = ["arc_easy", "rte"]
    base = "0" * 50 + "1" * 50

    def outcomes(extra_right: int) -> dict[str, str]:  # extra_right more documents answered right than base
        return {task: "1" * extra_right + base[extra_right:] for task in two}

    def scores(extra_right: int) -> dict[str, tuple[float, float]]:
        return {task: ((50 + extra_right) / 100, 0.05) for task in two}

    write(tmp_path, make_record("diet", 0.2, scores(0), outcomes=outcomes(0)))
    write(tmp_path, make_record("diet_oracle", 0.2, scores(10), outcomes=outcomes(10)))
    write(tmp_path, make_record("diet", 0.2, scores(5), outcomes=outcomes(5), merge="mean"))
    write(tmp_path, make_record("diet", 0.2, scores(2), outcomes=outcomes(2), scope="global"))
    write(tmp_path, make_record("diet", 0.2, scores(8), outcomes=outcomes(8), merge="union", actual=0.04))
    write(tmp_path, make_record("diet", 0.4, scores(9), outcomes=outcomes(9)))  # another sparsity: not compared
    write(tmp_path, make_record("diet", 0.2, scores(9), outcomes=outcomes(9), merge="mean", scope="global"))  # two
    # a method option off its default makes another variant, not the default run's ablation
    write(tmp_path, make_record("diet", 0.2, scores(7), outcomes=outcomes(7), stat="l2",
                                method_options={"some_option": 1}))
    text = report(tmp_path, "first100", 0.2, 0, overlaps=False)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| diet")}
    assert set(rows) == {"diet_oracle", "diet (merge=mean)", "diet (scope=global)", "diet (merge=union)"}  # one option
    assert rows["diet (scope=global)"].endswith("| 20% |") and "| 0.200 |" in rows["diet (scope=global)"]
    # the union removes 4% only: its +8 points close no share of the gap at 20%
    assert "| 0.040 |" in rows["diet (merge=union)"] and rows["diet (merge=union)"].endswith("| – (other sparsity) |")
    # 10 of 100 documents flip to right on both tasks: +10.0 points, paired se sqrt(0.09 / 99) * 100 / sqrt(2)
    assert "+10.0 ± 2.1" in rows["diet_oracle"] and rows["diet (merge=mean)"].endswith("| 50% |")


def perplexity_record(method: str, value: float, seed: int = 0, calib_source: str | None = None) -> dict[str, Any]:
    """A WikiText-only record as run_cell writes it: the perplexity as its score, no se, no accuracy average."""
    record = make_record(method, 0.2, {"wikitext": (value, math.nan)}, limit=None, seed=seed, n=62,
                         calib_source=calib_source)
    entry = record["tasks"]["wikitext"]
    for key in ("acc", "acc_stderr"):
        del entry[key]
    entry.update(metric="word_perplexity", word_perplexity=value, score_stderr=None)
    record["average"] = {"score": None, "tasks": [], "n_tasks": 0}
    return record


def test_a_perplexity_only_block_shows_perplexities_as_they_are_and_their_spread_over_seeds(tmp_path):
    """WikiText cells: the main table gives the perplexity unscaled (not x100), with no accuracy average;
    the seeds table gives the mean over seeds and the sd across them (ddof=1), the only uncertainty."""
    write(tmp_path, perplexity_record("dense", 30.123))
    for seed, value in enumerate((40.0, 41.0, 45.0)):
        write(tmp_path, perplexity_record("diet", value, seed=seed))
    tables = tables_by_name(tmp_path)
    assert set(tables) == {"main__m__limitall", "seeds__m__limitall"}
    main = tables["main__m__limitall"]
    assert "average" not in main.data and "avg_above_chance" not in main.data
    rows = {row[0]: row for row in md_rows(to_markdown(main))[1:]}
    assert rows["dense"][-1] == "30.12" and rows["diet"][-1] == "40.00"  # the lowest seed, as it is
    assert any("lower is better" in note for note in main.notes)
    seeds = tables["seeds__m__limitall"].data.set_index("method")
    values = [40.0, 41.0, 45.0]
    mean = sum(values) / 3
    assert seeds.loc["diet", "wikitext"] == pytest.approx(mean)
    assert seeds.loc["diet", "wikitext_sd_seeds"] == pytest.approx(
        math.sqrt(sum((v - mean) ** 2 for v in values) / 2))
    assert seeds.loc["diet", "seeds"] == 3 and "average" not in seeds
    # the figures skip what has no accuracy average (this block once raised KeyError: 'average')
    assert not any(name.startswith("avg_vs_sparsity") for name in figures_by_name(tmp_path))


def test_ablation_rows_are_read_against_the_default_run_of_their_group_paired_per_document(tmp_path):
    """minus_default = row minus the run at the option's default with all else equal (same seed), paired
    where both hold outcomes; the default row and a group without a default run get none."""
    two = ["arc_easy", "rte"]
    base = "0" * 50 + "1" * 50

    def cell(extra_right: int, **options: Any) -> dict[str, Any]:  # extra_right more documents right than base
        scores = {task: ((50 + extra_right) / 100, 0.05) for task in two}
        return make_record("diet", 0.2, scores, outcomes={task: "1" * extra_right + base[extra_right:] for task in two},
                           **options)

    write(tmp_path, cell(0))                                   # merge=vote: the default
    write(tmp_path, cell(10, merge="mean"))
    write(tmp_path, cell(4, merge="mean", seed=1))             # seed 1 has no vote run: nothing to read against
    write(tmp_path, cell(6, merge="union", seed=1))
    merge = tables_by_name(tmp_path)["ablation_merge__m__limit100"].data
    rows = {(row["method.merge"], row["seed"]): row for _, row in merge.iterrows()}
    # 10 of 100 documents flip to right on both tasks: +10 points, paired se sqrt(0.09 / 99) * 100 / sqrt(2)
    assert rows[("mean", 0)]["minus_default"] == pytest.approx(10.0)
    assert rows[("mean", 0)]["minus_default_se"] == pytest.approx(math.sqrt(0.09 / 99) * 100 / math.sqrt(2))
    assert bool(rows[("mean", 0)]["significant"]) is True
    assert all(pd.isna(rows[key]["minus_default"]) for key in [("vote", 0), ("mean", 1), ("union", 1)])


def test_paired_prints_one_run_minus_another_per_document_and_refuses_an_ambiguous_name(tmp_path, capsys):
    """experiments.paired: A minus B over the accuracy tasks and per task, with compare()'s paired se."""
    from experiments import paired

    two = ["arc_easy", "rte"]
    base = "0" * 50 + "1" * 50
    for method, extra_right, seed in (("diet", 10, 0), ("flap", 0, 0), ("flap", 0, 1)):
        write(tmp_path, make_record(method, 0.2, {task: ((50 + extra_right) / 100, 0.05) for task in two},
                                    outcomes={task: "1" * extra_right + base[extra_right:] for task in two},
                                    seed=seed))
    assert paired.main([str(tmp_path), "--model", "m", "--documents", "first100", "method=diet",
                        "method=flap,seed=0"]) == 0
    out = capsys.readouterr().out
    # 10 of 100 documents flip to right on both tasks: +10.0, paired se sqrt(0.09 / 99) * 100 / sqrt(2) = 2.1
    assert "average +10.0 ± 2.1 (paired, significant)" in out and "rte +10.0 ± 3.0" in out
    with pytest.raises(SystemExit, match="matches 2 runs"):
        paired.main([str(tmp_path), "--model", "m", "--documents", "first100", "method=diet", "method=flap"])
    with pytest.raises(SystemExit, match="unknown column"):
        paired.main([str(tmp_path), "--model", "m", "--documents", "first100", "methd=diet", "method=flap"])


def test_a_report_names_its_model_when_several_scored_the_same_documents(tmp_path):
    """diet.analysis.block_lookup.find_block (oracle_gap, paired): one model on the documents needs no --model;
    two do, and an unknown model is refused naming the ones there."""
    from diet.analysis.block_lookup import find_block

    write(tmp_path, make_record("dense", 0.0, same(0.5)))
    assert find_block(tmp_path, "first100").model == "m"
    write(tmp_path, make_record("dense", 0.0, same(0.4), model="m2"))
    with pytest.raises(SystemExit, match=r"several models .*\['m', 'm2'\]"):
        find_block(tmp_path, "first100")
    assert find_block(tmp_path, "first100", "m2").model == "m2"
    with pytest.raises(SystemExit, match="no records of m3"):
        find_block(tmp_path, "first100", "m3")


def test_an_average_covers_accuracies_only_and_the_tables_say_which(tmp_path):
    """A task reported by F1 (another kind) beside accuracies and an exact match: its own column, as it is, never
    averaged; the average is over the accuracy columns and a note names both."""
    scores = {"boolq": (0.6, 0.02), "copy_word": (0.5, 0.1), "squad_f1_task": (0.3, 0.05)}
    record = make_record("dense", 0.0, scores, limit=None)
    record["tasks"]["copy_word"]["metric"] = "exact_match"
    record["tasks"]["squad_f1_task"]["metric"] = "f1"
    write(tmp_path, record)
    table = tables_by_name(tmp_path)["main__m__limitall"]
    [row] = table.data.to_dict("records")
    assert row["average"] == pytest.approx(100 * (0.6 + 0.5) / 2) and row["squad_f1_task"] == pytest.approx(0.3)
    assert row["copy_word"] == pytest.approx(50.0)
    assert any("squad_f1_task: reported by a metric that is neither" in note for note in table.notes)
    assert any(note.startswith("average: the mean of the accuracy columns (boolq, copy_word") and
               "squad_f1_task not averaged" in note for note in table.notes)
