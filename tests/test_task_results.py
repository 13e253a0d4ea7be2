"""eval.by_task: a cell evaluated one task at a time keeps each finished task; an interrupted cell resumes
at its next task, never reuses a task evaluated on other weights, and records what it reused."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose_config
from diet.config.identity import config_hash, effective_config
from diet.errors import DietConfigError
from diet.models.tiny import tiny_gemma2
from diet.models.loaders import weights_sha256
from diet.run.pipeline import run_cell
from diet.run.task_results import PARTIAL_DIR, ROUNDING_TOL, TaskResults, rounding_difference, tensor_digests

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=6", "eval.limit=12", "wandb.mode=disabled",
        "method=diet", "sparsity=0.2"]


def run(tmp_path, *overrides):
    return run_cell(compose_config([*TINY, f"results_dir={tmp_path / 'records'}", *overrides]))[0]


def per_document(record):
    return {task: (entry["outcomes"], entry["score"], entry["n"]) for task, entry in record["tasks"].items()}


def test_by_task_is_not_part_of_the_identity_and_must_be_a_flag():
    cfg = compose_config(TINY)
    tasks = ["arc_easy", "rte"]
    assert config_hash(effective_config(compose_config([*TINY, "eval.by_task=true"]), tasks)) == \
        config_hash(effective_config(cfg, tasks))
    with pytest.raises(DietConfigError, match="eval.by_task='yes'"):
        run_cell(compose_config([*TINY, "eval.by_task=yes"]))


def test_by_task_scores_every_document_as_the_joint_run_does(tmp_path, isolated_cache):
    joint = run(tmp_path / "joint")
    by_task = run(tmp_path / "by_task", "eval.by_task=true")
    assert per_document(by_task) == per_document(joint)
    assert by_task["eval"]["by_task"] is True and "reused_tasks" not in by_task["eval"]
    load = by_task["machine"]["load_average"]  # how busy the cores were: the timings' context
    assert len(load) == 3 and all(value >= 0 for value in load)
    assert not (tmp_path / "by_task" / "records" / PARTIAL_DIR).exists() or \
        not any((tmp_path / "by_task" / "records" / PARTIAL_DIR).iterdir())  # removed once the record exists


def counting_evaluate(monkeypatch, interrupt_on_call: int | None = None) -> list[list[str]]:
    """Record the task list of every evaluate call; raise KeyboardInterrupt (a session's end) on one call."""
    from diet.eval import evaluate as evaluate_module

    original, calls = evaluate_module.evaluate, []

    def evaluate(model, tokenizer, tasks, *args, **kwargs):
        calls.append(list(tasks))
        if len(calls) == interrupt_on_call:
            raise KeyboardInterrupt
        return original(model, tokenizer, tasks, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)
    return calls


def interrupt_after_first_task(tmp_path, monkeypatch):
    counting_evaluate(monkeypatch, interrupt_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "eval.by_task=true")
    records = tmp_path / "records"
    assert not list(records.glob("*.json"))  # no record of a half-evaluated cell
    assert [path.stem for path in (records / PARTIAL_DIR).glob("*/*.json")] == ["arc_easy"]


def test_an_interrupted_cell_resumes_at_its_next_task(tmp_path, isolated_cache, monkeypatch):
    interrupt_after_first_task(tmp_path, monkeypatch)
    calls = counting_evaluate(monkeypatch)
    resumed = run(tmp_path, "eval.by_task=true")
    assert calls == [["rte"]]  # only the missing task ran again
    assert set(resumed["eval"]["reused_tasks"]) == {"arc_easy"}
    assert not any((tmp_path / "records" / PARTIAL_DIR).iterdir())  # gone with the written record
    assert per_document(resumed) == per_document(run(tmp_path / "fresh", "eval.by_task=true"))


def test_a_forced_rerun_evaluates_every_task_again(tmp_path, isolated_cache, monkeypatch):
    interrupt_after_first_task(tmp_path, monkeypatch)
    calls = counting_evaluate(monkeypatch)
    again = run(tmp_path, "eval.by_task=true", "force=true")
    assert calls == [["arc_easy"], ["rte"]] and "reused_tasks" not in again["eval"]


def edit_kept_weights(tmp_path, tensor: str, relative: float, selection: str | None = None) -> None:
    """Make the kept arc_easy look evaluated on other weights: another sha256, `tensor` with other bytes and
    its norms moved by `relative`; optionally another selection fingerprint."""
    kept = next((tmp_path / "records" / PARTIAL_DIR).glob("*/arc_easy.json"))
    stale = json.loads(kept.read_text())
    stale["weights_sha256"] = "0" * 64
    digest = stale["tensors"][tensor]
    digest[2:] = ["0" * 16, digest[3] * (1 + relative), digest[4] * (1 + relative)]
    if selection is not None:
        stale["selection"] = selection
    kept.write_text(json.dumps(stale))


KEPT_TENSOR = "model.layers.0.mlp.down_proj.weight"


@pytest.mark.parametrize("relative, selection", [(1e-3, None), (ROUNDING_TOL / 4, "another mask")],
                         ids=["weights-differ-beyond-rounding", "other-selection"])
def test_a_task_kept_for_other_weights_is_evaluated_again(relative, selection, tmp_path, isolated_cache, monkeypatch):
    interrupt_after_first_task(tmp_path, monkeypatch)
    edit_kept_weights(tmp_path, KEPT_TENSOR, relative, selection)  # as if a code change had pruned other channels
    calls = counting_evaluate(monkeypatch)
    record = run(tmp_path, "eval.by_task=true")
    assert calls == [["arc_easy"], ["rte"]] and "reused_tasks" not in record["eval"]


def test_a_task_kept_for_weights_equal_up_to_rounding_is_reused_and_the_record_says_so(tmp_path, isolated_cache,
                                                                                         monkeypatch):
    """Same selection, one tensor's bytes differ and its norms agree within ROUNDING_TOL (a cell resumed on
    another processor): the kept task is reused, and eval.reused_within_rounding names it with the difference."""
    interrupt_after_first_task(tmp_path, monkeypatch)
    edit_kept_weights(tmp_path, KEPT_TENSOR, ROUNDING_TOL / 4)
    calls = counting_evaluate(monkeypatch)
    record = run(tmp_path, "eval.by_task=true")
    assert calls == [["rte"]] and set(record["eval"]["reused_tasks"]) == {"arc_easy"}
    assert record["eval"]["reused_within_rounding"]["arc_easy"] == pytest.approx(ROUNDING_TOL / 4, rel=1e-3)


def test_rounding_difference_sees_one_ulp_and_refuses_more_or_a_missing_tensor():
    model = tiny_gemma2(seed=0)
    before = tensor_digests(model)
    assert rounding_difference(before, tensor_digests(model)) is None  # nothing differs: not "other" weights
    with torch.no_grad():
        weight = model.model.layers[1].mlp.down_proj.weight
        weight[3, 5] = torch.nextafter(weight[3, 5], torch.tensor(float("inf")))  # one ulp of one value
    one_ulp = rounding_difference(before, tensor_digests(model))
    assert one_ulp is not None and 0 < one_ulp <= torch.finfo(torch.float32).eps
    with torch.no_grad():
        weight[3, 5] *= 1.5  # a real change of one value
    assert rounding_difference(before, tensor_digests(model)) is None
    assert rounding_difference({k: v for k, v in before.items() if "layers.1." not in k}, tensor_digests(model)) is None


def test_weights_sha256_sees_one_changed_weight():
    model = tiny_gemma2(seed=0)
    before = weights_sha256(model)
    assert weights_sha256(tiny_gemma2(seed=0)) == before
    with torch.no_grad():
        weight = model.model.layers[1].mlp.down_proj.weight
        weight[3, 5] = torch.nextafter(weight[3, 5], torch.tensor(float("inf")))  # one ulp
    assert weights_sha256(model) != before


def test_kept_task_file_names_its_weights_and_code(tmp_path):
    kept = TaskResults(tmp_path, "abc", "f" * 64, "1234567890ab")
    kept.save("rte", {"score": 0.5})
    saved = json.loads((tmp_path / "rte.json").read_text())
    assert saved["weights_sha256"] == "f" * 64 and saved["code"] == "1234567890ab" and saved["config_hash"] == "abc"
    assert TaskResults(tmp_path, "abc", "f" * 64, "new").load("rte") == {"score": 0.5}
    assert TaskResults(tmp_path, "other", "f" * 64, "new").load("rte") is None
