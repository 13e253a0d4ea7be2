"""Chance levels come from the task definitions: each TaskSpec.chance is what `chance_level` computes from
the official task YAML on the offline evaluated split."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from diet.eval.tasks import PAPER_TASKS, build_tasks, chance_level, chance_levels

WITH_CHANCE = sorted(chance_levels())


def test_every_accuracy_task_of_the_paper_has_a_chance_level():
    assert set(WITH_CHANCE) >= {"boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"}
    assert PAPER_TASKS.get("wikitext").chance is None  # a perplexity has no chance level


@pytest.mark.parametrize("task", WITH_CHANCE)
def test_stated_chance_is_computed_from_the_task_yaml_and_split(task, offline_data):
    built = build_tasks([task], offline_data, with_train=False)[task]
    assert chance_level(built) == PAPER_TASKS.get(task).chance


def fake_task(choices, targets):
    return SimpleNamespace(eval_docs=list(range(len(targets))), doc_to_choice=lambda doc: choices[doc],
                           doc_to_target=lambda doc: targets[doc])


def test_chance_is_the_majority_label_for_a_label_task_and_uniform_otherwise():
    labels = [["no", "yes"]] * 5
    assert chance_level(fake_task(labels, [1, 1, 1, 0, 1])) == 0.8  # always "yes"
    options = [["a", "b", "c", "d"], ["e", "f"], ["g", "h", "i", "j"], ["k", "l", "m", "n"]]
    assert chance_level(fake_task(options, [0, 0, 0, 0])) == round((0.25 * 3 + 0.5) / 4, 3)  # index 0 means nothing
