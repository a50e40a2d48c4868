"""The table writer moved to synthrel.reporting (a stage must not import the analysis layer); these names stay
until synthrel.analysis.correlation imports them from there."""

from synthrel.reporting import MISSING, NA_FOOTNOTE, format_cell, has_missing, latex_escape, save_table

__all__ = ["MISSING", "NA_FOOTNOTE", "format_cell", "has_missing", "latex_escape", "save_table"]
