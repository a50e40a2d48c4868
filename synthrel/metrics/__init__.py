"""Metrics with the paper's exact definitions (see docs and ../shared/spec/paper_spec.md section 3)."""
