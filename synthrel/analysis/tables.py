"""Write a table as CSV (exact values), Markdown and LaTeX (rounded, for the report and the paper)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from synthrel.jobs import write_text_atomic


def save_table(table: pd.DataFrame, out_dir: str | Path, stem: str, digits: int = 2, index: bool = True) -> dict:
    """Write <stem>.csv/.md/.tex under out_dir; return their paths by format."""
    out_dir = Path(out_dir)
    paths = {fmt: out_dir / f"{stem}.{fmt}" for fmt in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], table.to_csv(index=index))
    write_text_atomic(paths["md"], table.to_markdown(index=index, floatfmt=f".{digits}f", missingval="-") + "\n")
    latex = table.to_latex(index=index, float_format=lambda v: f"{v:.{digits}f}", na_rep="-")
    write_text_atomic(paths["tex"], latex)
    return {fmt: str(p) for fmt, p in paths.items()}
