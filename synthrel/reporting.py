"""Write a table as CSV (exact values), Markdown and LaTeX (rounded, for the report and the paper).

On the ground floor, beside synthrel.jobs: the stages that publish a table (ood_detection, forecast) and the
analysis layer all write through `save_table`.

A missing value prints as `MISSING` in every rounded form (Markdown, LaTeX, HTML, figure annotations) with the
footnote `NA_FOOTNOTE`; the CSV keeps it as an empty cell.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from synthrel.jobs import write_text_atomic

MISSING = "n/a"
NA_FOOTNOTE = (f"{MISSING}: no value. For a correlation: no paired results, or fewer than 3 models with distinct "
               "(predictor, real) values, where Pearson r is undefined or trivially ±1 (e.g. a class that only "
               "one model segments).")
#: The footnote of tables that hold measurements, not correlations (FID, OOD detection): n/a is "not measured".
NOT_MEASURED_FOOTNOTE = f"{MISSING}: not measured for this row and column (nothing was evaluated there)."
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def format_cell(value, digits: int = 2) -> str:
    """A table cell as printed: floats rounded, missing values as MISSING."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def has_missing(table: pd.DataFrame) -> bool:
    return bool(table.isna().to_numpy().any() or (table.astype(str) == MISSING).to_numpy().any())


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def save_table(table: pd.DataFrame, out_dir: str | Path, stem: str, digits: int = 2, index: bool = True,
               caption: str | None = None, na_footnote: str = NA_FOOTNOTE, drop_empty_rows: bool = False,
               notes: list[str] | tuple[str, ...] = ()) -> dict:
    """Write <stem>.csv/.md/.tex under out_dir (the .tex with `caption`); return their paths by format and the
    table's `footnote`: `na_footnote` where a cell is missing, `notes`, the rows left out (`drop_empty_rows`: rows
    without any value) and the rows that repeat another row, so that a reader is told why.

    Row labels of several levels (model, score) become plain columns, not tuples."""
    out_dir = Path(out_dir)
    if index and isinstance(table.index, pd.MultiIndex):
        table = table.reset_index()
        index = False
    notes = list(notes)
    values = table if index else table.select_dtypes("number")
    if drop_empty_rows and values.shape[1]:
        empty = values.isna().all(axis=1)
        if empty.any():
            left_out = ", ".join(_row_label(table, row, index) for row in table.index[empty])
            notes.append(f"Rows without any value left out: {left_out}.")
            table = table[~empty]
    notes += _identical_rows(table, index)
    paths = {fmt: out_dir / f"{stem}.{fmt}" for fmt in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], table.to_csv(index=index))
    text = table.map(lambda v: format_cell(v, digits))
    footnote = " ".join(([na_footnote] if has_missing(table) else []) + notes) or None
    align = ("left",) * index + ("right",) * text.shape[1]  # labels left, values right
    if not index:
        align = tuple("right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table.columns)
    markdown = text.to_markdown(index=index, disable_numparse=True, colalign=align)
    write_text_atomic(paths["md"], markdown + (f"\n\n{footnote}" if footnote else "") + "\n")
    full_caption = " ".join(part for part in (caption, footnote) if part)
    latex = text.to_latex(index=index, escape=True, caption=latex_escape(full_caption) if full_caption else None)
    write_text_atomic(paths["tex"], latex)
    return {**{fmt: str(p) for fmt, p in paths.items()}, "footnote": footnote}


def _row_label(table: pd.DataFrame, row, index: bool) -> str:
    if index:
        return str(row)
    labels = table.loc[row, [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]]
    return " ".join(str(v) for v in labels) or str(row)


def _identical_rows(table: pd.DataFrame, index: bool) -> list[str]:
    """'Identical rows: a = b.' for rows whose values all repeat an earlier row's (not all missing)."""
    values = table if index else table.select_dtypes("number")
    if values.shape[1] == 0 or len(values) < 2:
        return []
    groups: dict[tuple, list[str]] = {}
    for row, cells in values.iterrows():
        if cells.isna().all():
            continue
        key = tuple("nan" if pd.isna(v) else repr(v) for v in cells)
        groups.setdefault(key, []).append(_row_label(table, row, index))
    same = [" = ".join(rows) for rows in groups.values() if len(rows) > 1]
    return [f"Identical rows (same values in every column): {'; '.join(same)}."] if same else []
