"""Calibration seeds in the tables: mean, spread, combined se and per-seed paired differences, against a
textbook computation on hand-made records."""

from __future__ import annotations

import math

import pytest

from test_tables import PAPER7, make_record, tables_by_name, write

DOCS = "random100s0"


def scores(value: float, se: float) -> dict[str, tuple[float, float]]:
    return {task: (value, se) for task in PAPER7}


def outcomes(ones: int, n: int = 100) -> dict[str, str]:
    return {task: "1" * ones + "0" * (n - ones) for task in PAPER7}


@pytest.fixture
def seeded(tmp_path):
    """dense once; DIET at seeds 0..2; FLAP on task samples and on C4 at seeds 0..2 (same documents)."""
    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.049), documents=DOCS, outcomes=outcomes(60)))
    for seed, (d, f, c) in enumerate([(55, 50, 45), (57, 51, 47), (53, 52, 40)]):
        write(tmp_path, make_record("diet", 0.2, scores(d / 100, 0.05), seed=seed, documents=DOCS, outcomes=outcomes(d)))
        write(tmp_path, make_record("flap", 0.2, scores(f / 100, 0.05), seed=seed, documents=DOCS,
                                    calib_source="tasks", outcomes=outcomes(f)))
        write(tmp_path, make_record("flap", 0.2, scores(c / 100, 0.05), seed=seed, documents=DOCS,
                                    calib_source="c4", outcomes=outcomes(c)))
    return tables_by_name(tmp_path)


def textbook(values: list[float], doc_ses: list[float]) -> tuple[float, float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    se_doc = math.sqrt(sum(e * e for e in doc_ses) / len(doc_ses))
    return mean, sd, math.sqrt(se_doc ** 2 + sd ** 2 / len(values))


def test_seeds_table_mean_spread_and_combined_se(seeded):
    data = seeded["seeds__m__random100"].data.set_index(["method", "variant"])
    doc_se = 100 * math.sqrt(7 * 0.05 ** 2) / 7  # the 7-task average's document se of every seed
    mean, sd, se = textbook([55, 57, 53], [doc_se] * 3)
    row = data.loc[("diet", "")]
    assert (row["seeds"], row["average"], row["sd_seeds"], row["average_se"]) == \
        (3, pytest.approx(mean), pytest.approx(sd), pytest.approx(se))
    assert row["se_documents"] == pytest.approx(doc_se) and (row["lowest"], row["highest"]) == pytest.approx((53, 57))
    assert data.loc[("flap", "calib.source=c4"), "average"] == pytest.approx(44.0)  # its own row
    assert data.loc[("flap", ""), "average"] == pytest.approx(51.0)
    dense = data.loc[("dense", "")]
    assert dense["seeds"] == 1 and math.isnan(dense["sd_seeds"]) and dense["average_se"] == pytest.approx(100 * math.sqrt(7 * 0.049 ** 2) / 7)


def test_seed_differences_are_paired_per_seed_then_combined(seeded):
    data = seeded["seed_differences__m__random100"].data.set_index(["vs", "vs_variant"])
    # per seed: DIET - FLAP(c4) on the same documents; every document of a task moves together here
    per_seed = [55 - 45, 57 - 47, 53 - 40]
    paired_se = []
    for d, c in ((55, 45), (57, 47), (53, 40)):  # per task: differences of 0/1 outcomes, sd with ddof=1
        diffs = [1] * (d - c) + [0] * (100 - (d - c))
        m = sum(diffs) / 100
        task_se = math.sqrt(sum((x - m) ** 2 for x in diffs) / 99 / 100)
        paired_se.append(100 * math.sqrt(7 * task_se ** 2) / 7)
    mean, sd, se = textbook(per_seed, paired_se)
    row = data.loc[("flap", "calib.source=c4")]
    assert row["seeds"] == 3 and row["diff"] == pytest.approx(mean) and row["diff_se"] == pytest.approx(se)
    assert row["sd_seeds"] == pytest.approx(sd) and row["paired"] and row["per_seed"] == "+10.0, +10.0, +13.0"
    assert row["significant"] == (abs(mean) > 2 * se)
    dense = data.loc[("dense", "")]  # one dense run against each DIET seed
    assert dense["seeds"] == 3 and dense["per_seed"] == "-5.0, -3.0, -7.0"
    assert len(data) == 3 and "3 comparisons" in seeded["seed_differences__m__random100"].notes[0]


def test_a_recovered_baseline_is_compared_with_recovered_diet_only(tmp_path):
    """recover=lora is a treatment both arms get: FLAP recovered pairs with DIET recovered (same seed and
    documents), never with DIET as pruned; without a recovered DIET cell there is no row for it."""
    from diet.config.defaults import recover_defaults

    lora = {**recover_defaults(), "seed": 0}
    for method, recovered, ones in (("diet", None, 55), ("diet", lora, 56), ("flap", None, 45), ("flap", lora, 49)):
        write(tmp_path, make_record(method, 0.2, scores(ones / 100, 0.05), documents=DOCS, outcomes=outcomes(ones),
                                    calib_source="c4" if method == "flap" else None, recover=recovered))
    write(tmp_path, make_record("diet", 0.2, scores(0.54, 0.05), seed=1, documents=DOCS, outcomes=outcomes(54)))
    write(tmp_path, make_record("flap", 0.2, scores(0.44, 0.05), seed=1, documents=DOCS, outcomes=outcomes(44),
                                calib_source="c4"))
    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.05), documents=DOCS, outcomes=outcomes(60),
                                recover={**recover_defaults(), "seed": 0}))
    data = tables_by_name(tmp_path)["seed_differences__m__random100"].data
    rows = {(row.diet_variant, row.vs, row.vs_variant): row.diff for row in data.itertuples()}
    assert rows[("recover=lora", "flap", "calib.source=c4, recover=lora")] == pytest.approx(56 - 49)
    assert rows[("", "flap", "calib.source=c4")] == pytest.approx((55 - 45 + 54 - 44) / 2)
    assert rows[("recover=lora", "dense", "recover=lora")] == pytest.approx(56 - 60)  # the control, both tuned
    assert not any(diet == "" and "recover" in (vs_variant or "") for diet, _, vs_variant in rows)


def test_recovery_table_reads_each_recovered_cell_against_itself_untreated_and_dense(tmp_path):
    """Gain = recovered minus the same cell untreated at the recovered seeds only; loss = untuned dense minus
    the row; recovered fraction = gain / loss where the loss is clearly above zero; tuned dense is the control."""
    from diet.config.defaults import recover_defaults

    def lora(seed):
        return {**recover_defaults(), "seed": seed}

    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.05), documents=DOCS, outcomes=outcomes(60)))
    write(tmp_path, make_record("dense", 0.0, scores(0.62, 0.05), documents=DOCS, outcomes=outcomes(62),
                                recover=lora(0)))
    for seed, (pruned, recovered) in enumerate([(50, 54), (52, 58), (40, None)]):  # seed 2 not recovered
        write(tmp_path, make_record("flap", 0.2, scores(pruned / 100, 0.05), seed=seed, documents=DOCS,
                                    calib_source="c4", outcomes=outcomes(pruned), params_removed=0.13))
        if recovered is not None:
            write(tmp_path, make_record("flap", 0.2, scores(recovered / 100, 0.05), seed=seed, documents=DOCS,
                                        calib_source="c4", outcomes=outcomes(recovered), recover=lora(seed),
                                        params_removed=0.13))
    write(tmp_path, make_record("diet", 0.2, scores(0.60, 0.05), documents=DOCS, outcomes=outcomes(60)))
    write(tmp_path, make_record("diet", 0.2, scores(0.61, 0.05), documents=DOCS, outcomes=outcomes(61),
                                recover=lora(0)))
    table = tables_by_name(tmp_path)["recovery__m__random100"]
    data = table.data.set_index("method")
    flap = data.loc["flap"]
    assert (flap["variant"], flap["treatment"], flap["seeds"]) == ("calib.source=c4", "recover=lora", 2)
    assert flap["untreated"] == pytest.approx(51) and flap["treated"] == pytest.approx(56)  # seed 2 left out
    assert flap["gain_diff"] == pytest.approx(5) and flap["per_seed"] == "+4.0, +6.0"
    assert flap["loss_untreated"] == pytest.approx(9) and flap["loss_treated"] == pytest.approx(4)
    assert flap["recovered_fraction"] == pytest.approx(5 / 9)
    # sparsity three ways: the merged adapters change no count
    assert (flap["actual"], flap["non_embedding"], flap["total"]) == pytest.approx((0.2, 0.13, 0.065))
    assert any(note.startswith("actual: fraction of the pruned dimension") for note in table.notes)
    assert data.loc["dense", "gain_diff"] == pytest.approx(2) and math.isnan(data.loc["dense", "loss_untreated"])
    diet = data.loc["diet"]  # no loss to dense: nothing to recover a fraction of
    assert diet["loss_untreated"] == pytest.approx(0) and math.isnan(diet["recovered_fraction"])
    assert list(data.index) == ["dense", "diet", "flap"] and "3 comparisons" in " ".join(table.notes)
    assert 0 < flap["gain_p_holm"] <= 1 and flap["gain_significant_holm"] == (flap["gain_p_holm"] < 0.05)


def test_main_table_shows_the_lowest_seed_and_says_so(seeded):
    table = seeded["main__m__random100"]
    assert list(table.data["method"]) == ["dense", "diet", "flap"]
    assert table.data["average"].iloc[1] == pytest.approx(55.0)  # seed 0
    assert any("seeds__* aggregates every seed" in note for note in table.notes)
    assert not any("first 100" in note for note in table.notes)  # a random sample: no first-N warning


def test_first_n_blocks_are_marked_and_kept_apart(tmp_path):
    write(tmp_path, make_record("dense", 0.0, scores(0.6, 0.05)))                   # first 100 (old record)
    write(tmp_path, make_record("dense", 0.0, scores(0.5, 0.05), documents=DOCS))   # random 100
    tables = tables_by_name(tmp_path)
    assert {"main__m__limit100", "main__m__random100"} <= set(tables)
    assert any("the first 100 of each split" in note for note in tables["main__m__limit100"].notes)
    assert "seeds__m__random100" not in tables  # one seed: nothing to aggregate


def test_a_seeded_baseline_is_compared_only_at_the_seeds_it_ran(tmp_path):
    """FLAP at seed 0 only, DIET at seeds 0 and 1: one pair (seed 0), never DIET seed 1 against FLAP seed 0."""
    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.05), documents=DOCS, outcomes=outcomes(60)))
    for seed, d in ((0, 55), (1, 57)):
        write(tmp_path, make_record("diet", 0.2, scores(d / 100, 0.05), seed=seed, documents=DOCS, outcomes=outcomes(d)))
    write(tmp_path, make_record("flap", 0.2, scores(0.5, 0.05), seed=0, documents=DOCS, calib_source="c4",
                                outcomes=outcomes(50)))
    data = tables_by_name(tmp_path)["seed_differences__m__random100"].data.set_index("vs")
    assert data.loc["flap", "seeds"] == 1 and data.loc["flap", "per_seed"] == "+5.0"
    assert data.loc["dense", "seeds"] == 2 and data.loc["dense", "per_seed"] == "-5.0, -3.0"


def test_a_method_whose_sparsity_is_another_knob_is_compared_where_it_removes_as_much(tmp_path):
    """LLM-Pruner's sparsity is a ratio inside its layer range: its 0.24 run removes DIET's 20% and is read against
    DIET at 0.2 (vs_sparsity names its knob); its 0.2 run removes less and is read against nothing."""
    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.05), documents=DOCS, outcomes=outcomes(60)))
    for seed, (d, matched, knob) in enumerate([(55, 50, 52), (57, 52, 53)]):
        write(tmp_path, make_record("diet", 0.2, scores(d / 100, 0.05), seed=seed, documents=DOCS,
                                    outcomes=outcomes(d), actual=0.2002))
        write(tmp_path, make_record("llm_pruner", 0.24, scores(matched / 100, 0.05), seed=seed, documents=DOCS,
                                    calib_source="c4", outcomes=outcomes(matched), actual=0.2008))  # within a thousandth
        write(tmp_path, make_record("llm_pruner", 0.2, scores(knob / 100, 0.05), seed=seed, documents=DOCS,
                                    calib_source="c4", outcomes=outcomes(knob), actual=0.1668))
    tables = tables_by_name(tmp_path)
    data = tables["seed_differences__m__random100"].data
    llm = data[data["vs"] == "llm_pruner"]
    assert len(llm) == 1 and float(llm["vs_sparsity"].iloc[0]) == 0.24 and float(llm["sparsity"].iloc[0]) == 0.2
    assert llm["per_seed"].iloc[0] == "+5.0, +5.0"
    assert any("vs_sparsity" in note for note in tables["seed_differences__m__random100"].notes)
    protocols = tables["protocols__m__random100"].data
    assert list(protocols["sparsity"]) == [0.24] and float(protocols["diet_minus"].iloc[0]) == pytest.approx(5.0)


def test_a_method_read_at_its_parameter_count_is_compared_where_it_removes_as_many_parameters(tmp_path):
    """SliceGPT's sparsity is a hidden width with shortcut matrices added: its 0.425 run removes 13.95% of the
    non-embedding parameters, within a hundredth of DIET's 14.12% at 0.2, and is read against it; its 0.2 run adds
    parameters and is read against nothing."""
    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.05), documents=DOCS, outcomes=outcomes(60)))
    sliced = {"documents": DOCS, "dims": "hidden", "sparsity_of": "dim"}  # as run_cell records it: its one dims
    for seed, (d, matched, same_tokens, knob) in enumerate([(55, 49, 52, 51), (57, 50, 54, 52)]):
        write(tmp_path, make_record("diet", 0.2, scores(d / 100, 0.05), seed=seed, documents=DOCS,
                                    outcomes=outcomes(d), params_removed=0.1412))
        write(tmp_path, make_record("slicegpt", 0.425, scores(matched / 100, 0.05), seed=seed, **sliced,
                                    calib_source="wikitext2_test", outcomes=outcomes(matched), actual=0.425,
                                    params_removed=0.1395))
        write(tmp_path, make_record("slicegpt", 0.425, scores(same_tokens / 100, 0.05), seed=seed, **sliced,
                                    calib_source="tasks", outcomes=outcomes(same_tokens), actual=0.425,
                                    params_removed=0.1395))
        write(tmp_path, make_record("slicegpt", 0.2, scores(knob / 100, 0.05), seed=seed, **sliced,
                                    calib_source="wikitext2_test", outcomes=outcomes(knob), actual=0.2,
                                    params_removed=-0.0833))
    tables = tables_by_name(tmp_path)
    data = tables["seed_differences__m__random100"].data
    sliced = data[data["vs"] == "slicegpt"].set_index("vs_variant")
    assert list(sliced["vs_sparsity"].astype(float)) == [0.425, 0.425]
    assert sliced.loc["dims=hidden, calib.source=wikitext2_test", "per_seed"] == "+6.0, +7.0"
    assert sliced.loc["dims=hidden", "per_seed"] == "+3.0, +3.0"
    # hidden is SliceGPT's only dims, so calib.source is its one choice: both protocols are rows, the 0.2 knob none
    protocols = tables["protocols__m__random100"].data.set_index("protocol")
    assert list(protocols["method"]) == ["slicegpt", "slicegpt"]
    assert protocols.loc["published: wikitext2_test", "per_seed"] == "+6.0, +7.0"
    assert protocols.loc["same tokens (DIET's task samples)", "per_seed"] == "+3.0, +3.0"


def test_protocols_table_leaves_out_a_run_with_another_option_off_its_defaults(tmp_path):
    """Only a dims its method admits alone is set aside: any other option off its defaults (here
    calib.exclude_bos) makes a run a variant, not a protocol row."""
    write(tmp_path, make_record("diet", 0.2, scores(0.55, 0.05), documents=DOCS, outcomes=outcomes(55)))
    write(tmp_path, make_record("flap", 0.2, scores(0.50, 0.05), documents=DOCS, calib_source="c4",
                                outcomes=outcomes(50)))
    write(tmp_path, make_record("flap", 0.2, scores(0.48, 0.05), documents=DOCS, calib_source="c4",
                                exclude_bos=True, outcomes=outcomes(48)))
    protocols = tables_by_name(tmp_path)["protocols__m__random100"].data
    assert list(protocols["per_seed"]) == ["+5.0"]


def test_protocols_table_sets_each_baseline_on_both_protocols_beside_diet(seeded):
    table = seeded["protocols__m__random100"]
    data = table.data.set_index("protocol")
    doc_se = 100 * math.sqrt(7 * 0.05 ** 2) / 7
    published, same_tokens = data.loc["published: c4"], data.loc["same tokens (DIET's task samples)"]
    assert (published["method"], published["seeds"]) == ("flap", 3)
    assert published["average"] == pytest.approx(textbook([45, 47, 40], [doc_se] * 3)[0])
    assert published["average_se"] == pytest.approx(textbook([45, 47, 40], [doc_se] * 3)[2])
    # the same paired DIET-minus as seed_differences__* (checked against a textbook computation there)
    differences = seeded["seed_differences__m__random100"].data.set_index(["vs", "vs_variant"])
    for row, variant in ((published, "calib.source=c4"), (same_tokens, "")):
        assert row["diet_minus"] == pytest.approx(differences.loc[("flap", variant), "diff"])
        assert row["diet_minus_se"] == pytest.approx(differences.loc[("flap", variant), "diff_se"])
    assert same_tokens["per_seed"] == "+5.0, +6.0, +1.0" and len(data) == 2  # dense and DIET are not rows
    assert "2 comparisons" in table.notes[0]


def test_no_protocols_table_without_a_baseline_on_generic_text(tmp_path):
    for seed, d in ((0, 55), (1, 57)):
        write(tmp_path, make_record("diet", 0.2, scores(d / 100, 0.05), seed=seed, documents=DOCS, outcomes=outcomes(d)))
        write(tmp_path, make_record("flap", 0.2, scores(0.5, 0.05), seed=seed, documents=DOCS, calib_source="tasks",
                                    outcomes=outcomes(50)))
    assert "protocols__m__random100" not in tables_by_name(tmp_path)


def test_perplexity_only_seeds_beside_a_seven_task_seed(tmp_path):
    """Full splits: DIET and FLAP evaluated on the seven tasks at seed 0 and on WikiText alone at seeds 0-2 (the
    perplexity cells). Accuracies and averages count seed 0 only, the perplexity every seed; the differences
    pair seed 0 only (a perplexity-only seed has no average to pair)."""
    write(tmp_path, make_record("dense", 0.0, scores(0.60, 0.05), limit=None, outcomes=outcomes(60)))
    for method, accuracy, perplexities in (("diet", 55, (68.0, 70.0, 69.0)), ("flap", 50, (100.0, 110.0, 105.0))):
        write(tmp_path, make_record(method, 0.2, scores(accuracy / 100, 0.05), seed=0, limit=None,
                                    outcomes=outcomes(accuracy)))
        for seed, perplexity in enumerate(perplexities):
            write(tmp_path, make_record(method, 0.2, {"wikitext": (perplexity, math.nan)}, seed=seed, limit=None,
                                        profiled=list(PAPER7), config_hash=f"{method}-ppl-{seed}"))
    tables = tables_by_name(tmp_path)
    seeds = tables["seeds__m__limitall"]
    data = seeds.data.set_index("method")
    assert list(seeds.data["method"]) == ["dense", "diet", "flap"]  # one row each: the perplexity runs join
    assert data.loc["diet", "seeds"] == 3 and data.loc["diet", "average"] == pytest.approx(55.0)
    assert data.loc["diet", "wikitext"] == pytest.approx(69.0) and data.loc["diet", "wikitext_sd_seeds"] == pytest.approx(1.0)
    assert data.loc["flap", "boolq"] == pytest.approx(50.0) and data.loc["flap", "lowest"] == pytest.approx(50.0)
    assert any(note.startswith("diet at 0.2: the accuracy columns and the average over seed(s) 0 only")
               for note in seeds.notes)
    differences = tables["seed_differences__m__limitall"].data.set_index("vs")
    assert differences.loc["flap", "seeds"] == 1 and differences.loc["flap", "per_seed"] == "+5.0"
    assert differences.loc["dense", "seeds"] == 1 and differences.loc["dense", "per_seed"] == "-5.0"


def test_holm_against_a_textbook_computation():
    """Holm (1979) by hand: p = .01, .04, .03, .005 (m = 4) -> sorted .005, .01, .03, .04 times 4, 3, 2, 1 =
    .02, .03, .06, .04 -> running maximum .02, .03, .06, .06; a NaN is no comparison and stays NaN."""
    from diet.analysis.stats import holm, two_sided_p

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.5, math.nan, 0.2])  # m = 2: .2 * 2 = .4, then max(.4, .5 * 1) = .5
    assert adjusted[0] == pytest.approx(0.5) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.4)
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6]) and holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    assert two_sided_p(2.0, 1.0) == pytest.approx(0.0455, abs=1e-4) and two_sided_p(0.0, 1.0) == 1.0


def test_seed_differences_carry_the_holm_reading_of_their_family(seeded):
    from diet.analysis.stats import holm, two_sided_p

    table = seeded["seed_differences__m__random100"]
    data = table.data
    expected = holm([two_sided_p(d, se) for d, se in zip(data["diff"], data["diff_se"])])
    assert list(data["p_holm"]) == pytest.approx(expected)
    assert list(data["significant_holm"]) == [p < 0.05 for p in expected]
    assert any("Holm-adjusted over the 3 comparisons" in note for note in table.notes)
