"""Chance levels come from the task definitions: each TaskSpec.chance is what `chance_level` computes from
the official task YAML on the offline evaluated split."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from diet.eval.tasks import PAPER_TASKS, build_tasks, chance_level, chance_levels, task_spec

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


# The facts the paper tasks were registered with by hand before they were read from lm-eval 0.4.13's configs: the
# evaluated split, the metrics and whether the task is a perplexity.
HAND_KEPT = {
    "boolq": ("validation", ("acc",), False), "rte": ("validation", ("acc",), False),
    "sglue_rte": ("validation", ("acc",), False), "hellaswag": ("validation", ("acc", "acc_norm"), False),
    "winogrande": ("validation", ("acc",), False), "arc_easy": ("test", ("acc", "acc_norm"), False),
    "arc_challenge": ("test", ("acc", "acc_norm"), False), "openbookqa": ("test", ("acc", "acc_norm"), False),
    "wikitext": ("test", ("word_perplexity", "byte_perplexity", "bits_per_byte"), True),
}


@pytest.mark.parametrize("task", sorted(HAND_KEPT))
def test_the_paper_tasks_facts_read_from_their_configs_are_the_ones_kept_by_hand_before(task):
    spec = task_spec(task)
    assert (spec.eval_split, spec.metrics, spec.perplexity) == HAND_KEPT[task] and spec.paper
    assert spec.default_metric() == ("word_perplexity" if spec.perplexity else
                                     "acc_norm" if "acc_norm" in spec.metrics else "acc")
