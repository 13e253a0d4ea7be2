"""Recovery's text: a fixed split of the source into training and held-out validation text, and seeded windows
of each (diet.calib.generic_text draws them as the calibration windows are drawn).

The split does not depend on the seed, so every cell's validation loss is measured on the same windows: a
document of a .jsonl source is held out when the first byte of its text's SHA-256 is below 26 (10.2% of
documents, by content, whatever their order); a stream (.txt) keeps its last 10% of lines. The validation windows
are drawn with seed 0, the training windows with the run's seed.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diet.calib.generic_text import Windows, draw_windows, read_source
from diet.errors import DietConfigError

HELD_OUT_BELOW = 26   # first SHA-256 byte of a held-out document (26/256 = 10.2%)
HELD_OUT_LINES = 0.1  # a stream's held-out tail
VAL_SEED = 0


@dataclass(frozen=True)
class SplitText:
    train: list[str] | str
    val: list[str] | str


def held_out(text: str) -> bool:
    return hashlib.sha256(text.encode("utf-8")).digest()[0] < HELD_OUT_BELOW


def split_text(source: list[str] | str) -> SplitText:
    if isinstance(source, list):
        return SplitText([doc for doc in source if not held_out(doc)], [doc for doc in source if held_out(doc)])
    lines = source.splitlines(keepends=True)
    cut = len(lines) - max(1, round(HELD_OUT_LINES * len(lines)))
    return SplitText("".join(lines[:cut]), "".join(lines[cut:]))


def word_count(part: list[str] | str) -> int:
    return sum(len(doc.split()) for doc in part) if isinstance(part, list) else len(part.split())


@functools.lru_cache(maxsize=2)
def _split_file(path: Path, mtime_ns: int) -> SplitText:
    return split_text(read_source(path))


def split_file(path: Path) -> SplitText:
    """The split of a text file, read once per content on disk (the preflight check and the training both use
    it; a file changed since is read again)."""
    return _split_file(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _split_words(path: Path, mtime_ns: int) -> tuple[int, int]:
    split = _split_file(path, mtime_ns)
    return word_count(split.train), word_count(split.val)


def check_text_holds(path: Path, windows: int, val_windows: int, window_length: int) -> None:
    """Refuse more windows than the text holds: windows x window_length tokens need at least as many words of
    distinct text (a word is at least one token, so the words are a lower bound of the tokens)."""
    train_words, val_words = _split_words(path, path.stat().st_mtime_ns)
    for option, count, words, part in (("recover.windows", windows, train_words, "training"),
                                       ("recover.val_windows", val_windows, val_words, "held-out")):
        if count * window_length > words:
            raise DietConfigError(
                f"{option}={count} x recover.window_length={window_length} = {count * window_length} tokens is more "
                f"than the {part} part of {str(path)!r} holds ({words} words): use at most "
                f"{max(words // window_length, 0)} windows of this length, or another recover.source")


def recovery_windows(path: Path, tokenizer: Any, windows: int, val_windows: int, window_length: int, seed: int,
                     add_bos: bool) -> tuple[Windows, Windows]:
    """(training windows drawn with `seed`, validation windows drawn with VAL_SEED) of the split source."""
    split = split_file(path)
    label = f"recover.source={str(path)!r}"
    train = draw_windows(split.train, tokenizer, windows, window_length, seed, add_bos, label, "recover.window_length")
    val = draw_windows(split.val, tokenizer, val_windows, window_length, VAL_SEED, add_bos, f"{label} (held out)",
                       "recover.window_length")
    return train, val
