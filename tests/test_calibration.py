"""Calibration samples on the real offline benchmark data (../shared/data): seeded TRAIN draws whose
text is exactly lm-eval's gold request, encoded exactly as lm-eval's HFLM encodes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diet.calib.samples import CalibrationSample, draw_samples, encode_samples, gold_index
from diet.errors import DietConfigError
from diet.eval.tasks import build_tasks

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
TASK_NAMES = ["arc_easy", "hellaswag", "winogrande", "boolq"]
TRAIN_ROWS = {"arc_easy": 2251, "hellaswag": 3368, "winogrande": 10234, "boolq": 261}
EVAL_FILES = {
    "arc_easy": "arc_easy_test.jsonl",
    "hellaswag": "hellaswag_validation.jsonl",
    "winogrande": "winogrande_validation.jsonl",
    "boolq": "boolq_validation.jsonl",
}
# The official ARC release itself duplicates these two items across train and test (shared/data/train/README.md).
KNOWN_ARC_DUPLICATES = {"CSZ_2009_8_CSZ30768", "CSZ_2009_8_CSZ20770"}


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def tasks():
    return build_tasks(TASK_NAMES, DATA_DIR, with_train=True)


@pytest.fixture(scope="module")
def draw(tasks):
    """Memoised draw_samples (each call lists the whole training split: ~0.5 s on the big tasks)."""
    memo: dict[tuple, list[CalibrationSample]] = {}

    def drawn(name: str, n: int = 12, seed: int = 0, with_answer: bool = True) -> list[CalibrationSample]:
        key = (name, n, seed, with_answer)
        if key not in memo:
            memo[key] = draw_samples(name, tasks[name], n, seed=seed, with_answer=with_answer)
        return memo[key]

    return drawn


@pytest.fixture(scope="module")
def train_docs(tasks):
    return {name: list(task.training_docs()) for name, task in tasks.items()}


@pytest.fixture(scope="module")
def raw_train():
    return {name: read_jsonl(DATA_DIR / "train" / f"{name}_train.jsonl") for name in TASK_NAMES}


def hellaswag_preprocess(text: str) -> str:
    from lm_eval.tasks.hellaswag.utils import preprocess  # lm-eval's own text clean-up

    return preprocess(text)


def expected_pair(task: str, doc: dict) -> tuple[str, str]:
    """The gold (context, continuation), built by hand from the raw JSON row."""
    if task == "arc_easy":
        answer = doc["choices"]["text"][doc["choices"]["label"].index(doc["answerKey"])]
        return f"Question: {doc['question']}\nAnswer:", " " + answer
    if task == "hellaswag":
        query = hellaswag_preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
        return query, " " + hellaswag_preprocess(doc["endings"][int(doc["label"])])
    if task == "winogrande":  # partial scoring: the context is the sentence filled with the gold option
        blank = doc["sentence"].index("_")
        option = doc["option1"] if doc["answer"] == "1" else doc["option2"]
        return doc["sentence"][:blank] + option, " " + doc["sentence"][blank + 1 :].strip()
    if task == "boolq":
        return f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", " " + ["no", "yes"][int(doc["label"])]
    raise AssertionError(task)


def raw_gold(task: str, doc: dict) -> int:
    if task == "arc_easy":
        return doc["choices"]["label"].index(doc["answerKey"])
    if task == "hellaswag":
        return int(doc["label"])
    if task == "winogrande":
        return int(doc["answer"]) - 1
    return int(doc["label"])


# --------------------------------------------------------------------------- the draw

@pytest.mark.parametrize("name", TASK_NAMES)
def test_draw_is_seeded_and_from_train(tasks, draw, train_docs, name):
    task = tasks[name]
    assert len(train_docs[name]) == TRAIN_ROWS[name]
    first = draw(name, 12, seed=0)
    again = draw_samples(name, task, 12, seed=0, with_answer=True)  # a fresh call, not the memo
    other = draw(name, 12, seed=1)
    assert first == again
    indices = [s.doc_index for s in first]
    assert indices != [s.doc_index for s in other]
    assert len(indices) == len(set(indices)) == 12
    assert indices == sorted(indices)
    assert all(0 <= index < TRAIN_ROWS[name] for index in indices)
    assert all(s.task == name for s in first)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_sample_is_the_gold_request(tasks, draw, train_docs, raw_train, name):
    task = tasks[name]
    docs = train_docs[name]
    samples = draw(name, 12, seed=1)
    for sample in samples:
        raw = raw_train[name][sample.doc_index]
        # the doc behind the index is the raw TRAIN row with that line number
        assert {key: docs[sample.doc_index][key] for key in raw} == raw
        # hand-built gold pair
        assert (sample.context, sample.continuation) == expected_pair(name, raw)
        # and the request lm-eval itself builds for the gold choice
        doc = docs[sample.doc_index]
        requests = task.construct_requests(doc=doc, ctx=task.fewshot_context(doc, num_fewshot=0), metadata=(name, 0, 1))
        assert gold_index(task, doc) == raw_gold(name, raw)
        assert tuple(requests[raw_gold(name, raw)].args[:2]) == (sample.context, sample.continuation)


def test_winogrande_partial_scoring(draw, raw_train):
    samples = draw("winogrande", 12, seed=0)
    for sample in samples:
        raw = raw_train["winogrande"][sample.doc_index]
        blank = raw["sentence"].index("_")
        filled = [raw["sentence"][:blank] + raw["option1"], raw["sentence"][:blank] + raw["option2"]]
        assert sample.context in filled
        assert sample.context == filled[int(raw["answer"]) - 1]
        assert sample.continuation == " " + raw["sentence"][blank + 1 :].strip()
        assert "_" not in sample.context + sample.continuation


def test_first_arc_sample_by_hand(draw):
    """One fully spelled-out sample, so a change in prompt or seeding shows up as a readable diff."""
    sample = draw("arc_easy", 3, seed=0)[0]
    assert sample == CalibrationSample(
        task="arc_easy",
        doc_index=165,
        context="Question: In order to survive, all organisms must have\nAnswer:",
        continuation=" energy",
    )


@pytest.mark.parametrize("name", ["arc_easy", "hellaswag", "winogrande"])
def test_without_answer(draw, name):
    with_answer = draw(name, 12, seed=0)
    without = draw(name, 12, seed=0, with_answer=False)
    assert [s.continuation for s in without] == [""] * 12
    assert [(s.doc_index, s.context) for s in without] == [(s.doc_index, s.context) for s in with_answer]
    assert all(s.continuation for s in with_answer)


def test_too_many_samples(tasks):
    assert len(draw_samples("boolq", tasks["boolq"], 261, seed=0, with_answer=True)) == 261
    with pytest.raises(
        DietConfigError,
        match=r"^calib\.n=262 but the training split of 'boolq' has only 261 documents: use calib\.n <= 261$",
    ):
        draw_samples("boolq", tasks["boolq"], 262, seed=0, with_answer=True)


def test_no_training_split():
    task = build_tasks(["arc_easy"], DATA_DIR, with_train=False)["arc_easy"]
    with pytest.raises(
        DietConfigError,
        match=r"^task 'arc_easy' has no training split for calibration "
        r"\(offline: add <data\.dir>/train/arc_easy_train\.jsonl\)$",
    ):
        draw_samples("arc_easy", task, 1, seed=0, with_answer=True)


# --------------------------------------------------------------------------- train, never eval

def doc_identity(task: str, doc: dict) -> str:
    if task == "arc_easy":
        return json.dumps([doc["question"], doc["choices"]["text"]])
    if task == "hellaswag":
        return json.dumps([doc["ctx_a"], doc["ctx_b"], doc["endings"]])
    if task == "winogrande":
        return doc["sentence"]
    return json.dumps([doc["passage"], doc["question"]])


@pytest.mark.parametrize("name", TASK_NAMES)
def test_samples_never_come_from_eval(draw, raw_train, name):
    eval_docs = read_jsonl(DATA_DIR / "eval" / EVAL_FILES[name])
    eval_ids = {doc_identity(name, doc) for doc in eval_docs}
    eval_contexts = {expected_pair(name, doc)[0] for doc in eval_docs}
    samples = draw(name, 12, seed=0) + draw(name, 12, seed=1)
    checked = 0
    for sample in samples:
        raw = raw_train[name][sample.doc_index]
        if raw.get("id") in KNOWN_ARC_DUPLICATES:
            continue
        assert doc_identity(name, raw) not in eval_ids
        if name != "winogrande":  # winogrande contexts are sentence prefixes; twins share them legitimately
            assert sample.context not in eval_contexts
        checked += 1
    assert checked >= 22


# --------------------------------------------------------------------------- encoding

@pytest.fixture(scope="module")
def tiny_lm():
    from diet.eval.evaluate import EvalSettings, make_lm
    from diet.models.tiny import byte_level_tokenizer, tiny_gemma2

    tokenizer = byte_level_tokenizer()
    return make_lm(tiny_gemma2(), tokenizer, EvalSettings(batch_size=1), "cpu"), tokenizer


def test_encode_matches_hflm(draw, tiny_lm):
    lm, tokenizer = tiny_lm
    samples = draw("arc_easy", 3, seed=0) + draw("winogrande", 12, seed=0)[:3] + draw("hellaswag", 12, seed=0)[:3]
    encoded = encode_samples(lm, samples, max_length=4096)
    assert len(encoded) == 9
    for sample, ids in zip(samples, encoded):
        context_ids, continuation_ids = lm._encode_pair(sample.context, sample.continuation)
        assert ids == list(context_ids) + list(continuation_ids)
        assert ids[0] == tokenizer.bos_token_id == 2
        # byte-level: BOS then one token per UTF-8 byte of the full text
        assert ids == tokenizer(sample.context + sample.continuation).input_ids
        assert len(ids) == 1 + len((sample.context + sample.continuation).encode("utf-8"))
        assert len(continuation_ids) == len(sample.continuation.encode("utf-8"))


def test_encode_without_answer(draw, tiny_lm):
    lm, tokenizer = tiny_lm
    samples = draw("arc_easy", 12, seed=0, with_answer=False)[:3]
    encoded = encode_samples(lm, samples, max_length=4096)
    for sample, ids in zip(samples, encoded):
        assert ids == lm.tok_encode(sample.context) == tokenizer(sample.context).input_ids
        assert ids[0] == 2


def test_encode_left_truncates(tiny_lm):
    lm, tokenizer = tiny_lm
    sample = CalibrationSample("arc_easy", 0, "Question: Which is a gas?\nAnswer:", " oxygen")
    full = encode_samples(lm, [sample], max_length=4096)[0]
    assert full == tokenizer("Question: Which is a gas?\nAnswer: oxygen").input_ids
    assert len(full) == 1 + 40
    short = encode_samples(lm, [sample], max_length=10)[0]
    assert short == full[-10:]
    assert tokenizer.decode(short) == "er: oxygen"  # the end (the answer) survives, BOS is cut
    assert short[0] != 2
    assert encode_samples(lm, [sample], max_length=41)[0] == full
