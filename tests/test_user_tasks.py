"""Any lm-eval task, and the user's own task YAMLs (eval.include_path): a multiple-choice task of the user's goes
through profile -> vote -> prune -> evaluate -> record -> tables offline and scores what stock lm-eval scores with
--include_path on the same saved model; a generation task is scored by exact match; a task without a training
split is refused for calibration before any model loads; names are resolved through lm-eval's catalogue."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from conftest import compose_config
from diet.config.identity import config_hash, effective_config
from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.eval.tasks import resolve_task_names, task_spec
from diet.run.pipeline import run_cell

COLOURS = ["red", "green", "blue", "yellow"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def colour_rows(n: int, seed: int) -> list[dict]:
    """'The sky on day 7 is ...': four colours to choose from, a seeded gold one."""
    rng = random.Random(seed)
    return [{"question": f"Item {i}: the colour of the {rng.choice(['sky', 'sea', 'leaf', 'sun'])} is",
             "label": rng.randrange(4)} for i in range(n)]


def write_mc_task(folder: Path, name: str = "colours", train: bool = True, eval_docs: int = 24) -> Path:
    """A multiple-choice task YAML of the user's over local JSON files (absolute paths), as README shows it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"validation": write_jsonl(folder / f"{name}_validation.jsonl", colour_rows(eval_docs, 1))}
    if train:
        files["train"] = write_jsonl(folder / f"{name}_train.jsonl", colour_rows(40, 2))
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
             *[f"    {split}: {path}" for split, path in files.items()], "output_type: multiple_choice",
             *(["training_split: train"] if train else []), "validation_split: validation",
             'doc_to_text: "{{question}}"', f"doc_to_choice: {json.dumps(COLOURS)}", "doc_to_target: label",
             "metric_list:", "  - metric: acc", "  - metric: acc_norm"]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return folder


def write_generation_task(folder: Path) -> Path:
    """A generate_until task: copy a word; exact match against it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"Repeat: {word}\nAnswer:", "answer": word}
            for word in ["cat", "dog", "sun", "tree", "moon", "fish"]]
    path = write_jsonl(folder / "copy_test.jsonl", rows)
    train = write_jsonl(folder / "copy_train.jsonl", rows[:4])
    (folder / "copy_word.yaml").write_text("\n".join([
        "task: copy_word", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {path}",
        f"    train: {train}", "output_type: generate_until", "training_split: train", "test_split: test",
        'doc_to_text: "{{prompt}}"', 'doc_to_target: "{{answer}}"', 'target_delimiter: " "',
        "generation_kwargs:", "  until: ['\\n']", "  max_gen_toks: 4", "  do_sample: false",
        "metric_list:", "  - metric: exact_match", "    aggregation: mean", "    higher_is_better: true",
    ]) + "\n")
    # the same task with an answer-extraction filter, as GSM8K's: the record is read under that filter
    text = (folder / "copy_word.yaml").read_text().replace("task: copy_word", "task: copy_word_filtered")
    (folder / "copy_word_filtered.yaml").write_text(text + "filter_list:\n  - name: first_word\n    filter:\n"
                                                    "      - function: regex\n        regex_pattern: '(\\w+)'\n"
                                                    "      - function: take_first\n")
    return folder


TINY = ["model=tiny_gemma2", "eval.limit=16", "calib.n=6", "calib.max_length=64", "wandb.mode=disabled"]


def test_a_users_multiple_choice_task_runs_end_to_end_and_equals_stock_lm_eval(tmp_path, isolated_cache):
    from diet.analysis.frame import load_records, tidy_frame
    from diet.analysis.tables import build_tables
    from experiments.stock_check import stock_results

    tasks = write_mc_task(tmp_path / "my_tasks")
    record, _ = run_cell(compose_config([*TINY, f"eval.include_path={tasks}", "tasks=[colours,arc_easy]",
                                         "method=diet", "sparsity=0.25", f"results_dir={tmp_path / 'records'}",
                                         f"save_model={tmp_path / 'saved'}"]))
    ours = record["tasks"]["colours"]
    assert record["calib_tasks"] == ["colours", "arc_easy"] and record["mask"]["num_tasks"] == 2  # in the vote
    assert ours["metric"] == "acc_norm" and ours["kind"] == "accuracy" and ours["higher_is_better"] is True
    # one label set for every document: chance is the majority label's rate over the evaluated split (24 documents)
    majority = max(Counter(row["label"] for row in colour_rows(24, 1)).values()) / 24
    assert ours["chance"] == round(majority, 3) and ours["n"] == 16 and len(ours["doc_ids"]) == 16
    assert record["average"]["tasks"] == ["colours", "arc_easy"]
    assert set(record["effective_config"]["task_definitions"]) == {"colours"}  # by content; arc_easy: as before
    stock = stock_results(record, tmp_path / "stock")  # `lm_eval --include_path` on the saved pruned model
    for task in ("colours", "arc_easy"):
        for metric in ("acc", "acc_norm"):
            assert record["tasks"][task][metric] == stock[task][f"{metric},none"], (task, metric)
    [main] = [table for table in build_tables(tidy_frame(load_records(tmp_path / "records")))
              if table.name.startswith("main__")]
    assert main.data["colours"].tolist() == [100 * ours["score"]]
    assert main.data["average"].tolist() == [100 * record["average"]["score"]]


def test_a_task_definition_enters_the_identity_by_content(tmp_path):
    tasks = write_mc_task(tmp_path / "my_tasks")
    overrides = [*TINY, f"eval.include_path={tasks}", "tasks=[colours]", "method=dense"]
    before = config_hash(effective_config(compose_config(overrides), ["colours"]))
    moved = tmp_path / "elsewhere"
    (tasks).rename(moved)
    yaml_text = (moved / "colours.yaml").read_text().replace(str(tasks), str(moved))
    (moved / "colours.yaml").write_text(yaml_text)
    overrides_moved = [*TINY, f"eval.include_path={moved}", "tasks=[colours]", "method=dense"]
    cfg = compose_config(overrides_moved)
    assert config_hash(effective_config(cfg, ["colours"])) == before  # a folder path identifies nothing
    (moved / "colours_validation.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in colour_rows(24, 99)))  # other documents
    other_documents = config_hash(effective_config(cfg, ["colours"]))
    assert other_documents != before
    (moved / "colours.yaml").write_text(yaml_text.replace("{{question}}", "Q: {{question}}"))  # another prompt
    assert config_hash(effective_config(cfg, ["colours"])) not in (before, other_documents)
    assert task_spec("colours").config["doc_to_text"] == "Q: {{question}}"


def test_a_generation_task_is_scored_by_exact_match_through_either_backend(tmp_path, isolated_cache):
    tasks = write_generation_task(tmp_path / "gen")
    common = [*TINY, f"eval.include_path={tasks}", "tasks=[copy_word]", "method=dense"]
    records = {backend: run_cell(compose_config([*common, f"eval.backend={backend}",
                                                 f"results_dir={tmp_path / backend}"]))[0]
               for backend in ("stock", "fast")}
    for record in records.values():
        entry = record["tasks"]["copy_word"]
        assert entry["metric"] == "exact_match" and entry["kind"] == "accuracy" and entry["chance"] is None
        assert entry["n"] == 6 and len(entry["outcomes"]) == 6  # per-document 0/1 outcomes
    assert records["stock"]["tasks"]["copy_word"]["outcomes"] == records["fast"]["tasks"]["copy_word"]["outcomes"]
    filtered = run_cell(compose_config([*TINY, f"eval.include_path={tasks}", "tasks=[copy_word_filtered]",
                                        "method=dense", f"results_dir={tmp_path / 'filtered'}"]))[0]
    entry = filtered["tasks"]["copy_word_filtered"]
    assert entry["filter"] == "first_word" and entry["metric"] == "exact_match" and len(entry["outcomes"]) == 6
    # calibrated on prompt + reference answer
    pruned, _ = run_cell(compose_config([*TINY, f"eval.include_path={tasks}", "tasks=[copy_word]", "method=diet",
                                         "sparsity=0.25", "calib.n=4", f"results_dir={tmp_path / 'diet'}"]))
    assert pruned["calib_tasks"] == ["copy_word"] and pruned["tasks"]["copy_word"]["n"] == 6


def test_a_task_without_a_training_split_is_refused_for_calibration_before_the_model_loads(tmp_path):
    tasks = write_mc_task(tmp_path / "my_tasks", name="evalonly", train=False)
    with pytest.raises(DietConfigError, match=r"task 'evalonly' has no training split .*calib.exclude=\[evalonly\]"):
        validate(compose_config([*TINY, f"eval.include_path={tasks}", "tasks=[evalonly,arc_easy]", "method=diet"]))
    # evaluated only, it is fine; profiled on the other task
    checked = validate(compose_config([*TINY, f"eval.include_path={tasks}", "tasks=[evalonly,arc_easy]",
                                       "method=diet", "calib.exclude=[evalonly]"]))
    assert checked.calib_tasks == ["arc_easy"] and checked.tasks == ["evalonly", "arc_easy"]


def test_missing_local_data_and_paper_task_names_are_refused(tmp_path):
    tasks = write_mc_task(tmp_path / "my_tasks")
    (tasks / "colours_validation.jsonl").unlink()
    with pytest.raises(DietConfigError, match=r"task 'colours' reads split 'validation' from .*colours_validation"):
        validate(compose_config([*TINY, f"eval.include_path={tasks}", "tasks=[colours]", "method=dense"]))
    clash = write_mc_task(tmp_path / "clash", name="boolq")
    with pytest.raises(DietConfigError, match=r"eval.include_path defines 'boolq', a paper task"):
        validate(compose_config([*TINY, f"eval.include_path={clash}", "tasks=[boolq]", "method=dense"]))
    with pytest.raises(DietConfigError, match=r"eval.include_path='nowhere' is not a folder"):
        validate(compose_config([*TINY, "eval.include_path=nowhere", "tasks=[arc_easy]", "method=dense"]))


def test_groups_and_tags_expand_to_their_leaves_as_lm_eval_builds_them(tmp_path):
    """A user group over two of the user's tasks and a paper task, with a group-level override: the leaves and
    their configs are what lm-eval's TaskManager builds (it loads the local data, so this runs offline)."""
    from diet.eval.catalogue import task_manager

    tasks = write_mc_task(tmp_path / "my_tasks")
    write_mc_task(tasks, name="shades")
    (tasks / "palette.yaml").write_text("group: palette\ntask:\n  - colours\n  - task: shades\n    num_fewshot: 0\n"
                                        "aggregate_metric_list:\n  - metric: acc\n")
    assert resolve_task_names("palette", {}, [str(tasks)]) == ["colours", "shades"]
    built = task_manager((str(tasks),)).load(["palette"])["tasks"]
    assert sorted(built) == ["colours", "shades"]
    for name, task in built.items():
        assert task_spec(name).config["doc_to_text"] == task.config.doc_to_text
    assert resolve_task_names("ai2_arc", {}) == ["arc_challenge", "arc_easy"]  # an lm-eval tag of paper tasks
    assert task_spec("arc_easy").paper


def sciq_rows(n: int, seed: int) -> list[dict]:
    """Documents in SciQ's schema (allenai/sciq), written by the test."""
    rng = random.Random(seed)
    return [{"question": f"Which gas do plants take in, case {i}?", "support": "Plants photosynthesise.",
             "correct_answer": "carbon dioxide", "distractor1": rng.choice(["oxygen", "helium"]),
             "distractor2": "neon", "distractor3": "argon"} for i in range(n)]


def test_a_catalogue_task_reads_the_data_folder_offline_and_equals_stock_lm_eval(tmp_path, isolated_cache):
    """SciQ, an lm-eval task that is not the paper's, through the data folder's layout: profiled, pruned, scored, and
    scored alike by stock lm-eval; a missing file is named before the model loads."""
    from experiments.stock_check import stock_results

    data = tmp_path / "data"
    (data / "eval").mkdir(parents=True)
    (data / "train").mkdir()
    write_jsonl(data / "eval" / "sciq_test.jsonl", sciq_rows(12, 1))
    common = [*TINY, "tasks=[sciq]", f"data.dir={data}"]
    with pytest.raises(DietConfigError, match=r"missing train data for task 'sciq': expected file .*sciq_train.jsonl"):
        validate(compose_config([*common, "method=diet"]))
    write_jsonl(data / "train" / "sciq_train.jsonl", sciq_rows(20, 2))
    record, _ = run_cell(compose_config([*common, "method=diet", "sparsity=0.25", f"results_dir={tmp_path / 'r'}",
                                         f"save_model={tmp_path / 'saved'}"]))
    ours = record["tasks"]["sciq"]
    assert ours["n"] == 12 and ours["chance"] == 0.25 and "sciq" in record["effective_config"]["task_definitions"]
    stock = stock_results(record, tmp_path / "stock")
    assert (ours["acc"], ours["acc_norm"]) == (stock["sciq"]["acc,none"], stock["sciq"]["acc_norm,none"])
