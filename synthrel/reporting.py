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
               caption: str | None = None) -> dict:
    """Write <stem>.csv/.md/.tex under out_dir (the .tex with `caption`); return their paths by format."""
    out_dir = Path(out_dir)
    paths = {fmt: out_dir / f"{stem}.{fmt}" for fmt in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], table.to_csv(index=index))
    text = table.map(lambda v: format_cell(v, digits))
    footnote = NA_FOOTNOTE if has_missing(table) else None
    align = ("left",) * index + ("right",) * text.shape[1]  # labels left, values right
    markdown = text.to_markdown(index=index, disable_numparse=True, colalign=align)
    write_text_atomic(paths["md"], markdown + (f"\n\n{footnote}" if footnote else "") + "\n")
    full_caption = " ".join(part for part in (caption, footnote) if part)
    latex = text.to_latex(index=index, escape=True, caption=latex_escape(full_caption) if full_caption else None)
    write_text_atomic(paths["tex"], latex)
    return {fmt: str(p) for fmt, p in paths.items()}
