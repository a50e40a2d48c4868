"""Temperature scaling fitted on (synthetic) calibration sets and evaluated on real shifted data (spec S9)."""
