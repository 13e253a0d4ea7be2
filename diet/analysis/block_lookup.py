"""The one block (model x documents) of a results folder that a command-line report reads."""

from __future__ import annotations

from pathlib import Path

from diet.analysis.blocks import Block, blocks_from_frame
from diet.analysis.frame import load_frame


def find_block(results_dir: Path, documents: str, model: str | None = None) -> Block:
    """The block of `model` on `documents`; with no model, the only one on those documents. Exits naming the
    choices when there is none or (no model given) several."""
    blocks = [b for b in blocks_from_frame(load_frame(results_dir)) if b.documents == documents]
    chosen = [b for b in blocks if model is None or b.model == model]
    if len(chosen) == 1:
        return chosen[0]
    models = sorted(b.model for b in blocks)
    if not chosen:
        raise SystemExit(f"no records of {model or 'any model'} on the documents {documents!r} in {results_dir}"
                         + (f"; models on them: {models}" if models else ""))
    raise SystemExit(f"several models scored the documents {documents!r}: {models}; name one with --model")
