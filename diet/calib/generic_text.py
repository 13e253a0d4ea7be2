"""Generic-text calibration windows, sampled the way the baselines' reference code samples them.

Two layouts of a text source:
- documents (a .jsonl file with a "text" field per line, e.g. C4): Wanda's / SparseGPT's `get_c4`
  (also FLAP's `lib/data.py:get_c4`): per window, draw random documents until one is longer than the
  window, then a random start inside it;
- stream (any other UTF-8 file, e.g. WikiText): FLAP's `lib/data.py:get_wikitext2`: the whole text as
  one token stream, a random start per window.
Both use Python's `random` seeded with the run's seed, one `randint` per draw, as the references do.

Named deviation: the references tokenise with the tokenizer's special tokens, so a window holds a BOS
only when it happens to start at a document's first token. Here a window is `length - 1` text tokens
after the BOS whenever the model is evaluated with one (Gemma is only ever run with BOS: a window
without it puts the attention sink on an arbitrary token), else `length` text tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diet.errors import DietConfigError

C4_FILE = Path("text") / "c4_en_train_head1000.jsonl"  # relative to the offline data folder
# FLAP's own text is WikiText-2 *train*, not in the data folder: its test split is the nearest text there, a
# check of the C4 stand-in (never calibrate on it where WikiText perplexity is reported: validation refuses it)
WIKITEXT2_TEST_FILE = Path("text") / "wikitext2_test.raw"
NAMED_SOURCES = {"c4": C4_FILE, "wikitext2_test": WIKITEXT2_TEST_FILE}


@dataclass(frozen=True)
class Windows:
    sequences: list[list[int]]
    layout: str            # documents | stream
    documents_drawn: int   # documents tokenised to find windows (documents layout), else 0


def layout_of(path: Path) -> str:
    return "documents" if path.suffix == ".jsonl" else "stream"


def read_documents(path: Path) -> list[str]:
    documents = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                row = json.loads(line)
                if "text" not in row:
                    raise DietConfigError(f"calib.source={str(path)!r}: line {number} has no 'text' field")
                documents.append(str(row["text"]))
    if not documents:
        raise DietConfigError(f"calib.source={str(path)!r} holds no documents")
    return documents


def read_source(path: Path) -> list[str] | str:
    """A text file as its layout reads it: the documents of a .jsonl file, or one stream of text."""
    return read_documents(path) if layout_of(path) == "documents" else path.read_text(encoding="utf-8")


def sample_windows(path: Path, tokenizer: Any, n: int, length: int, seed: int, add_bos: bool) -> Windows:
    """`n` seeded windows of `length` tokens (BOS included when prepended) from a text file."""
    return draw_windows(read_source(path), tokenizer, n, length, seed, add_bos, f"calib.source={str(path)!r}")


def draw_windows(source: list[str] | str, tokenizer: Any, n: int, length: int, seed: int, add_bos: bool,
                 label: str, length_option: str = "calib.window_length") -> Windows:
    """`n` seeded windows of `length` tokens from documents (a list) or one stream of text (a str); `label`
    names the source in errors ("calib.source='c4'"), `length_option` the option that sets `length`."""
    bos = tokenizer.bos_token_id if add_bos and tokenizer.bos_token_id is not None else None
    body = length - (bos is not None)
    if body < 1:
        raise DietConfigError(f"{length_option}={length} leaves no text token after the BOS: use >= 2")
    prefix = [] if bos is None else [bos]
    rng = random.Random(seed)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    sequences: list[list[int]] = []
    if isinstance(source, list):
        documents = source
        drawn, cache = 0, {}
        for _ in range(n):
            for attempt in range(100 * len(documents)):
                index = rng.randint(0, len(documents) - 1)
                drawn += 1
                ids = cache.setdefault(index, encode(documents[index]))
                if len(ids) > body:
                    break
            else:
                raise DietConfigError(
                    f"{label}: no document is longer than {body} tokens: use a shorter {length_option}")
            start = rng.randint(0, len(ids) - body - 1)
            sequences.append(prefix + ids[start : start + body])
        return Windows(sequences, "documents", drawn)
    ids = encode(source)
    if len(ids) <= body + 1:
        raise DietConfigError(f"{label} has {len(ids)} tokens: fewer than one window of {body}")
    for _ in range(n):
        start = rng.randint(0, len(ids) - body - 1)
        sequences.append(prefix + ids[start : start + body])
    return Windows(sequences, "stream", 0)
