"""Which calibration text a run config names (`calib.source`): the tasks' own samples, a named source of the
offline data folder (`c4`), or a file; and the generic-text windows drawn from it (`calib.windows`,
`calib.window_length`, each null = the method's reference). Read by validation, the identity and the methods'
inputs alike, so the three agree on the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from diet.calib.generic_text import NAMED_SOURCES
from diet.errors import DietConfigError
from diet.paths import data_dir as resolve_data_dir

TASKS_SOURCE = "tasks"


def calib_source(cfg: Mapping[str, Any]) -> str:
    """`calib.source`: "tasks" (pooled task train samples), "c4", or the path of a UTF-8 text file."""
    return str(cfg["calib"].get("source", TASKS_SOURCE) or TASKS_SOURCE)


def source_file(cfg: Mapping[str, Any]) -> Path | None:
    """None for `calib.source: tasks`; else the text file (named sources live in the data folder)."""
    source = calib_source(cfg)
    if source == TASKS_SOURCE:
        return None
    return text_file(source, cfg, "calib.source", also=f"use {TASKS_SOURCE!r} (the task samples, pooled), ")


def text_file(source: str, cfg: Mapping[str, Any], option: str, also: str = "use ") -> Path:
    """The text file a source option names: a named source of the offline data folder (`c4`) or a path;
    `option` names it in errors, `also` opens the list of what is allowed."""
    if source in NAMED_SOURCES:
        data_dir = resolve_data_dir((cfg.get("data") or {}).get("dir"))
        if data_dir is None:
            raise DietConfigError(
                f"{option}={source!r} is read from the offline data folder (<data.dir>/{NAMED_SOURCES[source]}): "
                f"set data.dir / DIET_DATA_DIR, or give the path of a local copy as {option}")
        path = data_dir / NAMED_SOURCES[source]
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise DietConfigError(
            f"{option}={source!r}: no such file {str(path)!r}; {also}"
            f"{', '.join(repr(name) for name in NAMED_SOURCES)} or the path of a UTF-8 text (.txt) or JSON lines "
            f"(.jsonl, a 'text' field per document) file")
    return path


def window_plan(cfg: Mapping[str, Any], reference: tuple[int, int]) -> tuple[int, int]:
    """(windows, tokens per window) of a generic-text calibration: calib.windows / calib.window_length,
    each null = the method's reference value."""
    calib = cfg["calib"]
    windows, length = calib.get("windows"), calib.get("window_length")
    return (reference[0] if windows is None else int(windows), reference[1] if length is None else int(length))
