"""A stored record recomputed with the current code: its selection (experiments.check_masks,
experiments.mask_overlap) and the outcomes of a seeded subset of its documents (experiments.check_rerun).

A record whose config the current code gives another identity (a method version bumped since) is superseded:
these return None for it rather than comparing two different cells.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from diet.methods import MaskSelection
from diet.run.cell import Cell, resolve
from diet.run.pipeline import SelectedCell, eval_settings, prune_and_evaluate, select_cell
from diet.select.masks import selection_fingerprint


def recompute_cell(record: dict[str, Any]) -> tuple[SelectedCell, Cell] | None:
    """(the loaded model and its selection, the resolved cell) of the record's config with the current code;
    None when superseded."""
    cell = resolve(record["config"])
    if cell.config_hash != record["config_hash"]:
        return None
    return select_cell(cell), cell


def recompute_selection(record: dict[str, Any]) -> MaskSelection | None:
    """The record's MaskSelection recomputed with the current code, None when superseded."""
    recomputed = recompute_cell(record)
    return None if recomputed is None else recomputed[0].selection


def same_mask(selection: MaskSelection, record: dict[str, Any]) -> bool:
    return selection_fingerprint(selection.stats) == selection_fingerprint(record.get("mask"))


def verified_selection(record: dict[str, Any]) -> MaskSelection:
    """The record's MaskSelection recomputed with the current code; exits unless it reproduces the record's
    mask, so whatever is computed from it (overlaps) is about the masks the record was scored with."""
    name = Path(record.get("_path", "record")).name
    selection = recompute_selection(record)
    if selection is None:
        raise SystemExit(f"{name}: the current code gives this record another identity (superseded)")
    if not same_mask(selection, record):
        raise SystemExit(f"{name}: the current code does not reproduce its mask (python -m experiments.check_masks)")
    return selection


def record_documents(entry: dict[str, Any]) -> dict[int, str]:
    """doc index -> stored outcome ('0' / '1') of one task entry of a record."""
    outcomes = entry["outcomes"]
    ids = entry.get("doc_ids") or list(range(len(outcomes)))
    return dict(zip(ids, outcomes))


def document_subset(stored: dict[str, dict[int, str]], per_task: int, seed: int) -> dict[str, tuple[int, ...]]:
    """A seeded random `per_task` of each task's stored documents (all of them when fewer)."""
    return {task: tuple(sorted(random.Random(f"diet-rerun:{seed}:{task}").sample(sorted(docs),
                                                                                min(per_task, len(docs)))))
            for task, docs in stored.items()}


def rerun(record: dict[str, Any], per_task: int, seed: int) -> dict[str, Any]:
    """Recompute the record's selection, prune, score a seeded subset of its documents; what matched:
    {"result": "same" | "DIFFERENT" | "superseded", "mask", "documents", "differing": {task: [doc ids]}}."""
    recomputed = recompute_cell(record)
    if recomputed is None:
        return {"result": "superseded"}
    chosen, cell = recomputed
    mask_matches = same_mask(chosen.selection, record)
    stored = {task: record_documents(entry) for task, entry in record["tasks"].items()}
    docs = document_subset(stored, per_task, seed)
    settings = dataclasses.replace(eval_settings(cell.cfg, cell.options.eval), only_docs=docs)
    done = prune_and_evaluate(cell, chosen, None, settings=settings)  # never saved again
    differing = {}
    for task, ids in docs.items():
        got = record_documents(done.metrics[task])
        wrong = [i for i in ids if got.get(i) != stored[task][i]]
        if wrong:
            differing[task] = wrong
    same = mask_matches and not differing
    return {"result": "same" if same else "DIFFERENT", "mask": "same" if mask_matches else "DIFFERENT",
            "documents": sum(len(ids) for ids in docs.values()), "differing": differing}
