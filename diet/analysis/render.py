"""A Table as markdown, csv and LaTeX text; nothing here depends on time or machine (byte-stable output)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from diet.io import atomic_write_text
from diet.analysis.tables import Table

FORMATS = ("md", "csv", "tex")
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(char, char) for char in text)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any, fmt: str, dash: str) -> str:
    if _missing(value):
        return dash
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt.format(value)
    return str(value)


def display_frame(table: Table, pm: str, dash: str, escape=lambda s: s) -> pd.DataFrame:
    """All-string frame: X and X_se merged into 'X pm se', X_n noted in X's header, hidden columns dropped."""
    data = table.data
    columns: dict[str, list[str]] = {}
    for column in data.columns:
        if column in table.hidden or (column.endswith("_se") and column[:-3] in data) or \
                (column.endswith("_n") and column[:-2] in data):
            continue
        fmt = table.formats.get(column, "{:.1f}")
        values = [escape(_cell(v, fmt, dash)) for v in data[column]]
        if f"{column}_se" in data:
            values = [v if _missing(se) or v == escape(dash) else f"{v}{pm}{_cell(se, '{:.1f}', dash)}"
                      for v, se in zip(values, data[f"{column}_se"])]
        header = column
        if f"{column}_n" in data:
            counts = sorted({int(n) for n in data[f"{column}_n"] if not _missing(n)})
            header += f" (n={'/'.join(map(str, counts))})"
        columns[escape(header)] = values
    return pd.DataFrame(columns, dtype=object)


def to_markdown(table: Table) -> str:
    text = display_frame(table, " ± ", "—").to_markdown(index=False, disable_numparse=True)
    return text + "\n\n" + "".join(f"- {note}\n" for note in table.notes)


def to_csv(table: Table) -> str:
    return table.data.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def to_latex(table: Table) -> str:
    display = display_frame(table, r" $\pm$ ", "---", escape=tex_escape)
    notes = "".join(f"% {note}\n" for note in table.notes)
    return notes + display.to_latex(index=False, escape=False, column_format="l" * display.shape[1])


RENDERERS = {"md": to_markdown, "csv": to_csv, "tex": to_latex}


def write_tables(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """results/tables/<name>.{md,csv,tex}; returns the paths written."""
    paths = []
    for table in tables:
        for ext in FORMATS:
            paths.append(atomic_write_text(Path(out_dir) / f"{table.name}.{ext}", RENDERERS[ext](table)))
    return paths
