"""Write a task of your own for `eval.include_path`: an lm-eval task YAML over local JSON files.

    python examples/own_task.py my_tasks     # my_tasks/sequences.yaml, sequences_{train,validation}.jsonl

The task ("sequences"): continue an arithmetic sequence, four options ("3, 7, 11, 15, ->  19"). All 600
(start, step) pairs are split once, by a seeded shuffle, into 200 training documents (calibration samples) and
400 validation documents (evaluated), so no evaluated sequence is ever calibrated on. Any task YAML lm-eval
accepts works the same way; this one only shows the mechanism on data that needs no download.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

YAML = """task: sequences
dataset_path: json
dataset_kwargs:
  data_files:
    train: {folder}/sequences_train.jsonl
    validation: {folder}/sequences_validation.jsonl
output_type: multiple_choice
training_split: train
validation_split: validation
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def document(start: int, step: int, rng: random.Random) -> dict:
    terms = [start + step * i for i in range(4)]
    answer = start + 4 * step
    wrong = [value for value in (answer + 1, answer - 1, answer + step, answer + 2 * step, answer - 2)
             if value != answer]
    choices = [answer, *rng.sample(sorted(set(wrong)), 3)]
    rng.shuffle(choices)
    return {"prompt": ", ".join(map(str, terms)) + ",", "choices": [str(c) for c in choices],
            "label": choices.index(answer)}


def main(folder: Path) -> None:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    pairs = [(start, step) for start in range(1, 51) for step in range(1, 13)]
    rng.shuffle(pairs)
    for split, chosen in (("train", pairs[:200]), ("validation", pairs[200:])):
        rows = [document(start, step, rng) for start, step in chosen]
        (folder / f"sequences_{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "sequences.yaml").write_text(YAML.format(folder=folder))
    print(f"wrote {folder}/sequences.yaml and its data: tasks=[sequences,...] eval.include_path={folder}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
